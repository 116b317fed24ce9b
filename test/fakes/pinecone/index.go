package pinecone

import (
	"context"
	"encoding/base64"
	"maps"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// Vector is a stored vector as a test sees it.
type Vector struct {
	ID       string
	Values   []float32 // nil with Options.DiscardValues
	Metadata map[string]any
}

// IndexStats are an index's data-plane counters.
type IndexStats struct {
	UpsertCalls      int64 // accepted Upsert calls
	UpsertedVectors  int64 // vectors written by accepted Upsert calls
	DuplicateUpserts int64 // of those, vectors whose id was already stored (overwritten)
	MaxUpsertBatch   int   // most vectors in one accepted Upsert
	MaxUpsertBytes   int   // largest accepted UpsertRequest, serialized
	DeletedVectors   int64 // stored vectors removed by accepted Delete calls (by id)
	MaxDeleteBatch   int   // most ids in one accepted Delete
	// Calls counts every call by method, and Errors every failed call by gRPC code name.
	Calls  map[string]int64
	Errors map[string]int64
}

type stored struct {
	values []float32
	meta   *structpb.Struct
}

// Index is one fake index: its data plane and its contents.
type Index struct {
	srv     *Server
	sch     *schema
	name    string
	dim     int
	discard atomic.Bool // Options.DiscardValues, changed by SetDiscardValues
	ln      net.Listener
	grpc    *grpc.Server

	mu         sync.Mutex
	namespaces map[string]map[string]stored
	// sorted caches each namespace's ids in order for list (dropped when ids come or go), so
	// listing a namespace of a million ids page by page does not sort it for every page.
	sorted     map[string][]string
	latency    time.Duration
	failN      int
	failCode   codes.Code
	failMethod map[string]failSpec
	stats      IndexStats
	calls      map[string]int64
	byCode     map[string]int64
	refuse     func(id string) bool // limits.go
	refuseMsg  string
}

// Name is the index name.
func (x *Index) Name() string { return x.name }

// Dimension is the index dimension.
func (x *Index) Dimension() int { return x.dim }

// Host is the data-plane host DescribeIndex reports, "http://127.0.0.1:PORT": the http scheme
// makes go-pinecone dial plaintext gRPC.
func (x *Index) Host() string { return "http://" + x.ln.Addr().String() }

func (x *Index) stop() {
	if x.grpc != nil {
		x.grpc.Stop()
	}
}

// Vectors returns a copy of a namespace's vectors by id ("" means the default namespace).
func (x *Index) Vectors(namespace string) map[string]Vector {
	x.mu.Lock()
	defer x.mu.Unlock()
	ns := x.namespaces[normNS(namespace)]
	out := make(map[string]Vector, len(ns))
	for id, v := range ns {
		out[id] = Vector{ID: id, Values: slices.Clone(v.values), Metadata: v.meta.AsMap()}
	}
	return out
}

// IDs returns the ids stored in a namespace, unsorted: a cheap look for pollers (Vectors copies
// every value and metadata map under the index's lock).
func (x *Index) IDs(namespace string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Collect(maps.Keys(x.namespaces[normNS(namespace)]))
}

// Namespaces lists the non-empty namespaces, sorted.
func (x *Index) Namespaces() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Sorted(maps.Keys(x.namespaces))
}

// Count is the number of vectors in all namespaces.
func (x *Index) Count() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, ns := range x.namespaces {
		n += len(ns)
	}
	return n
}

// UpsertCalls is the number of accepted Upsert calls.
func (x *Index) UpsertCalls() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stats.UpsertCalls
}

// DuplicateUpserts counts upserted vectors whose id was already stored: re-upserts overwrite,
// so these are not duplicated vectors, but a test can report how much work was redone.
func (x *Index) DuplicateUpserts() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stats.DuplicateUpserts
}

// MaxUpsertBatch is the most vectors seen in one accepted Upsert.
func (x *Index) MaxUpsertBatch() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.stats.MaxUpsertBatch
}

// Stats returns a copy of the counters.
func (x *Index) Stats() IndexStats {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.stats
	st.Calls = maps.Clone(x.calls)
	st.Errors = maps.Clone(x.byCode)
	return st
}

// FailNextUpserts makes the next n Upsert calls fail with code (e.g. codes.Unavailable or
// codes.ResourceExhausted) before anything is written.
func (x *Index) FailNextUpserts(n int, code codes.Code) {
	x.mu.Lock()
	x.failN, x.failCode = n, code
	x.mu.Unlock()
}

// FailNext makes the next n calls of method ("List", "Delete", "Fetch", ...) fail with code
// before they do anything.
func (x *Index) FailNext(method string, n int, code codes.Code) {
	x.mu.Lock()
	if x.failMethod == nil {
		x.failMethod = map[string]failSpec{}
	}
	x.failMethod[method] = failSpec{n: n, code: code}
	x.mu.Unlock()
}

type failSpec struct {
	n    int
	code codes.Code
}

// injected returns the error FailNext set up for this call of method, if any.
func (x *Index) injected(method string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	f, ok := x.failMethod[method]
	if !ok || f.n <= 0 {
		return nil
	}
	f.n--
	x.failMethod[method] = f
	return status.Errorf(f.code, "injected %s failure", method)
}

// SetDiscardValues changes Options.DiscardValues for the vectors written from now on (a test that
// compares vector values turns keeping them on for its own writes).
func (x *Index) SetDiscardValues(on bool) {
	x.discard.Store(on)
}

// SetLatency sets the delay added to every data-plane call.
func (x *Index) SetLatency(d time.Duration) {
	x.mu.Lock()
	x.latency = d
	x.mu.Unlock()
}

func normNS(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// handle runs one data-plane call: auth, latency, then the method.
func (x *Index) handle(ctx context.Context, method string, req protoreflect.Message) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-pinecone-api-version"); len(v) > 0 {
		x.srv.sawAPIVersion(v[0])
	}
	x.mu.Lock()
	x.calls[method]++
	latency := x.latency
	x.mu.Unlock()

	resp, err := x.dispatch(ctx, method, req, md, latency)
	if err != nil {
		x.mu.Lock()
		x.byCode[status.Code(err).String()]++
		x.mu.Unlock()
		return nil, err
	}
	return resp.Interface(), nil
}

func (x *Index) dispatch(ctx context.Context, method string, req protoreflect.Message, md metadata.MD, latency time.Duration) (protoreflect.Message, error) {
	var key string
	if v := md.Get("api-key"); len(v) > 0 {
		key = v[0]
	}
	if !x.srv.keyOK(key) {
		return nil, status.Error(codes.Unauthenticated, "Invalid API Key")
	}
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if err := x.injected(method); err != nil {
		return nil, err
	}
	switch method {
	case "Upsert":
		return x.upsert(req)
	case "Fetch":
		return x.fetch(req)
	case "Query":
		return x.query(req)
	case "Delete":
		return x.delete(req)
	case "List":
		return x.list(req)
	case "DescribeIndexStats":
		return x.describeStats(req)
	}
	return nil, status.Errorf(codes.Unimplemented, "method %s not implemented by the fake", method)
}

func (x *Index) upsert(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	x.mu.Lock()
	if x.failN > 0 {
		x.failN--
		code := x.failCode
		x.mu.Unlock()
		return nil, status.Errorf(code, "injected fault: %s", code)
	}
	x.mu.Unlock()

	list := req.Get(s.upVectors).List()
	n := list.Len()
	if n == 0 {
		return nil, status.Error(codes.InvalidArgument, "Invalid request: no vectors to upsert")
	}
	if n > MaxUpsertVectors {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid request: upsert batch of %d vectors exceeds the maximum of %d", n, MaxUpsertVectors)
	}
	size := proto.Size(req.Interface())
	if size > MaxUpsertBytes {
		return nil, requestTooLarge(size)
	}
	if err := checkNamespace(req.Get(s.upNamespace).String()); err != nil {
		return nil, err
	}
	// Check the whole batch before writing any of it, as Pinecone does.
	ids := make([]string, n)
	batch := make([]stored, n)
	for i := 0; i < n; i++ {
		v := list.Get(i).Message()
		ids[i] = v.Get(s.vecID).String()
		if ids[i] == "" {
			return nil, status.Error(codes.InvalidArgument, "Invalid request: vector id must not be empty")
		}
		var md *structpb.Struct
		if v.Has(s.vecMetadata) {
			md = v.Get(s.vecMetadata).Message().Interface().(*structpb.Struct)
		}
		if err := checkVector(ids[i], md); err != nil {
			return nil, err
		}
		vals := v.Get(s.vecValues).List()
		if vals.Len() != x.dim {
			return nil, status.Errorf(codes.InvalidArgument, "Vector dimension %d does not match the dimension of the index %d", vals.Len(), x.dim)
		}
		if !x.discard.Load() {
			f := make([]float32, vals.Len())
			for j := range f {
				f[j] = float32(vals.Get(j).Float())
			}
			batch[i].values = f
		}
		if v.Has(s.vecMetadata) {
			batch[i].meta = proto.Clone(v.Get(s.vecMetadata).Message().Interface()).(*structpb.Struct)
		}
	}
	if err := x.refused(ids); err != nil {
		return nil, err
	}
	ns := normNS(req.Get(s.upNamespace).String())
	x.mu.Lock()
	space := x.namespaces[ns]
	if space == nil {
		space = map[string]stored{}
		x.namespaces[ns] = space
	}
	for i, id := range ids {
		if _, ok := space[id]; ok {
			x.stats.DuplicateUpserts++
		} else {
			delete(x.sorted, ns)
		}
		space[id] = batch[i]
	}
	x.stats.UpsertCalls++
	x.stats.UpsertedVectors += int64(n)
	x.stats.MaxUpsertBatch = max(x.stats.MaxUpsertBatch, n)
	x.stats.MaxUpsertBytes = max(x.stats.MaxUpsertBytes, size)
	x.mu.Unlock()

	resp := s.newMessage("UpsertResponse")
	resp.Set(s.upCount, protoreflect.ValueOfUint32(uint32(n)))
	return resp, nil
}

// setVector fills a Vector or ScoredVector message.
func (x *Index) setVector(m protoreflect.Message, idF, valF, metaF protoreflect.FieldDescriptor, id string, v stored, values, meta bool) {
	m.Set(idF, protoreflect.ValueOfString(id))
	if values && len(v.values) > 0 {
		l := m.Mutable(valF).List()
		for _, f := range v.values {
			l.Append(protoreflect.ValueOfFloat32(f))
		}
	}
	if meta && v.meta != nil {
		m.Set(metaF, protoreflect.ValueOfMessage(proto.Clone(v.meta).ProtoReflect()))
	}
}

func (x *Index) setUsage(resp protoreflect.Message, fd protoreflect.FieldDescriptor, units uint32) {
	u := resp.Mutable(fd).Message()
	u.Set(x.sch.usReadUnits, protoreflect.ValueOfUint32(units))
}

func (x *Index) fetch(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	ns := normNS(req.Get(s.feNamespace).String())
	ids := req.Get(s.feIDs).List()
	if ids.Len() == 0 {
		return nil, status.Error(codes.InvalidArgument, "Invalid request: no ids to fetch")
	}
	resp := s.newMessage("FetchResponse")
	out := resp.Mutable(s.feRespVectors).Map()
	x.mu.Lock()
	space := x.namespaces[ns]
	for i := 0; i < ids.Len(); i++ {
		id := ids.Get(i).String()
		v, ok := space[id]
		if !ok {
			continue
		}
		vm := out.NewValue()
		x.setVector(vm.Message(), s.vecID, s.vecValues, s.vecMetadata, id, v, true, true)
		out.Set(protoreflect.ValueOfString(id).MapKey(), vm)
	}
	x.mu.Unlock()
	resp.Set(s.feRespNamespace, protoreflect.ValueOfString(ns))
	x.setUsage(resp, s.feRespUsage, 1)
	return resp, nil
}

type match struct {
	id    string
	score float32
	v     stored
}

func (x *Index) query(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	if req.Has(s.quFilter) {
		return nil, status.Error(codes.Unimplemented, "the fake does not support metadata filters")
	}
	if req.Get(s.quQueries).List().Len() > 0 || req.Has(s.quSparse) {
		return nil, status.Error(codes.Unimplemented, "the fake supports only a dense query by vector or id")
	}
	if x.discard.Load() {
		return nil, status.Error(codes.FailedPrecondition, "the fake keeps no vector values (DiscardValues)")
	}
	topK := int(req.Get(s.quTopK).Uint())
	if topK < 1 || topK > 10000 {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid request: top_k must be between 1 and 10000, got %d", topK)
	}
	ns := normNS(req.Get(s.quNamespace).String())
	includeValues, includeMeta := req.Get(s.quIncludeValues).Bool(), req.Get(s.quIncludeMetadata).Bool()

	x.mu.Lock()
	space := x.namespaces[ns]
	var q []float32
	if id := req.Get(s.quID).String(); id != "" {
		v, ok := space[id]
		if !ok {
			x.mu.Unlock()
			return nil, status.Errorf(codes.NotFound, "Vector with id %s not found in namespace %s", id, ns)
		}
		q = v.values
	} else {
		l := req.Get(s.quVector).List()
		if l.Len() != x.dim {
			x.mu.Unlock()
			return nil, status.Errorf(codes.InvalidArgument, "Query vector dimension %d does not match the dimension of the index %d", l.Len(), x.dim)
		}
		q = make([]float32, l.Len())
		for i := range q {
			q[i] = float32(l.Get(i).Float())
		}
	}
	matches := make([]match, 0, len(space))
	for id, v := range space {
		matches = append(matches, match{id: id, score: cosine(q, v.values), v: v})
	}
	x.mu.Unlock()

	slices.SortFunc(matches, func(a, b match) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	if len(matches) > topK {
		matches = matches[:topK]
	}
	resp := s.newMessage("QueryResponse")
	out := resp.Mutable(s.quRespMatches).List()
	for _, m := range matches {
		sv := out.NewElement()
		x.setVector(sv.Message(), s.svID, s.svValues, s.svMetadata, m.id, m.v, includeValues, includeMeta)
		sv.Message().Set(s.svScore, protoreflect.ValueOfFloat32(m.score))
		out.Append(sv)
	}
	resp.Set(s.quRespNamespace, protoreflect.ValueOfString(ns))
	x.setUsage(resp, s.quRespUsage, 5)
	return resp, nil
}

func cosine(a, b []float32) float32 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	if na == 0 || nb == 0 {
		return 0
	}
	return float32(dot / math.Sqrt(na*nb))
}

func (x *Index) delete(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	if req.Has(s.deFilter) {
		return nil, status.Error(codes.Unimplemented, "the fake does not support delete by metadata filter")
	}
	ns := normNS(req.Get(s.deNamespace).String())
	ids := req.Get(s.deIDs).List()
	all := req.Get(s.deAll).Bool()
	if all == (ids.Len() > 0) {
		return nil, status.Error(codes.InvalidArgument, "Invalid request: give either ids or delete_all")
	}
	if ids.Len() > MaxDeleteIDs {
		return nil, status.Errorf(codes.InvalidArgument, "Invalid request: can delete at most %d ids per request, got %d", MaxDeleteIDs, ids.Len())
	}
	for i := 0; i < ids.Len(); i++ {
		if ids.Get(i).String() == "" {
			return nil, status.Error(codes.InvalidArgument, "Invalid request: ids must be non-empty strings")
		}
	}
	x.mu.Lock()
	x.stats.MaxDeleteBatch = max(x.stats.MaxDeleteBatch, ids.Len())
	delete(x.sorted, ns)
	if all {
		delete(x.namespaces, ns)
	} else if space := x.namespaces[ns]; space != nil {
		for i := 0; i < ids.Len(); i++ {
			id := ids.Get(i).String()
			if _, ok := space[id]; ok {
				x.stats.DeletedVectors++
				delete(space, id)
			}
		}
		if len(space) == 0 {
			delete(x.namespaces, ns)
		}
	}
	x.mu.Unlock()
	return s.newMessage("DeleteResponse"), nil
}

func (x *Index) list(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	ns := normNS(req.Get(s.liNamespace).String())
	prefix := req.Get(s.liPrefix).String()
	limit := MaxListLimit
	if req.Has(s.liLimit) {
		limit = int(req.Get(s.liLimit).Uint())
		if limit < 1 || limit > MaxListLimit {
			return nil, status.Errorf(codes.InvalidArgument, "Invalid request: limit must be between 1 and %d, got %d", MaxListLimit, limit)
		}
	}
	after := ""
	if tok := req.Get(s.liToken).String(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			return nil, status.Error(codes.InvalidArgument, "Invalid request: bad pagination token")
		}
		after = string(b)
	}
	x.mu.Lock()
	all, ok := x.sorted[ns]
	if !ok {
		all = slices.Sorted(maps.Keys(x.namespaces[ns]))
		if x.sorted == nil {
			x.sorted = map[string][]string{}
		}
		x.sorted[ns] = all
	}
	x.mu.Unlock()
	// The first id under the prefix after the token, then up to limit+1 of them in order.
	i, _ := slices.BinarySearch(all, max(prefix, after))
	for i < len(all) && all[i] <= after {
		i++
	}
	var ids []string
	for ; i < len(all) && strings.HasPrefix(all[i], prefix) && len(ids) <= limit; i++ {
		ids = append(ids, all[i])
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	resp := s.newMessage("ListResponse")
	out := resp.Mutable(s.liRespVectors).List()
	for _, id := range ids {
		it := out.NewElement()
		it.Message().Set(s.itemID, protoreflect.ValueOfString(id))
		out.Append(it)
	}
	if more {
		// The token is the last id returned: the next page starts after it.
		p := resp.Mutable(s.liRespPagination).Message()
		p.Set(s.pagNext, protoreflect.ValueOfString(base64.RawURLEncoding.EncodeToString([]byte(ids[len(ids)-1]))))
	}
	resp.Set(s.liRespNamespace, protoreflect.ValueOfString(ns))
	x.setUsage(resp, s.liRespUsage, 1)
	return resp, nil
}

func (x *Index) describeStats(req protoreflect.Message) (protoreflect.Message, error) {
	s := x.sch
	if req.Has(s.stFilter) {
		return nil, status.Error(codes.Unimplemented, "the fake does not support metadata filters")
	}
	resp := s.newMessage("DescribeIndexStatsResponse")
	nsMap := resp.Mutable(s.stNamespaces).Map()
	total := 0
	x.mu.Lock()
	for name, space := range x.namespaces {
		v := nsMap.NewValue()
		v.Message().Set(s.nsVectorCount, protoreflect.ValueOfUint32(uint32(len(space))))
		nsMap.Set(protoreflect.ValueOfString(name).MapKey(), v)
		total += len(space)
	}
	x.mu.Unlock()
	resp.Set(s.stDimension, protoreflect.ValueOfUint32(uint32(x.dim)))
	resp.Set(s.stFullness, protoreflect.ValueOfFloat32(0))
	resp.Set(s.stTotal, protoreflect.ValueOfUint32(uint32(total)))
	resp.Set(s.stMetric, protoreflect.ValueOfString("cosine"))
	resp.Set(s.stVectorType, protoreflect.ValueOfString("dense"))
	return resp, nil
}
