package pinecone_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	pc "github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

const (
	key = "pc-test-key"
	dim = 8
)

func start(t *testing.T, opts fake.Options) *fake.Server {
	t.Helper()
	if opts.Indexes == nil {
		opts.Indexes = map[string]int{"docs": dim, "big": 1536}
	}
	if opts.APIKeys == nil {
		opts.APIKeys = []string{key}
	}
	s, err := fake.Start(opts)
	if err != nil {
		t.Fatalf("start fake: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func sdk(t *testing.T, s *fake.Server, apiKey string) *pc.Client {
	t.Helper()
	c, err := pc.NewClient(pc.NewClientParams{ApiKey: apiKey, Host: s.ControlURL()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// connect goes the way the embedder does: DescribeIndex for the host, then Index.
func connect(t *testing.T, s *fake.Server, index, namespace string) *pc.IndexConnection {
	t.Helper()
	c := sdk(t, s, key)
	desc, err := c.DescribeIndex(ctx(t), index)
	if err != nil {
		t.Fatalf("describe %s: %v", index, err)
	}
	conn, err := c.Index(pc.NewIndexConnParams{Host: desc.Host, Namespace: namespace})
	if err != nil {
		t.Fatalf("index connection: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func values(seed, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Sin(float64(seed*31 + i)))
	}
	return v
}

func vectors(t *testing.T, prefix string, from, n, dims int) []*pc.Vector {
	t.Helper()
	out := make([]*pc.Vector, n)
	for i := range out {
		vals := values(from+i, dims)
		meta, err := structpb.NewStruct(map[string]any{"row": float64(from + i), "text": fmt.Sprintf("row %d", from+i)})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = &pc.Vector{Id: fmt.Sprintf("%s%03d", prefix, from+i), Values: &vals, Metadata: meta}
	}
	return out
}

func code(err error) codes.Code { return status.Code(err) }

func TestDescribeIndex(t *testing.T) {
	s := start(t, fake.Options{})
	c := sdk(t, s, key)
	desc, err := c.DescribeIndex(ctx(t), "docs")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Name != "docs" || desc.Dimension == nil || *desc.Dimension != dim || desc.Metric != pc.Cosine ||
		desc.VectorType != "dense" || desc.DeletionProtection != pc.DeletionProtectionDisabled {
		t.Errorf("describe: %+v", desc)
	}
	if desc.Host != s.Index("docs").Host() || !strings.HasPrefix(desc.Host, "http://127.0.0.1:") {
		t.Errorf("host %q, want the fake data plane %q", desc.Host, s.Index("docs").Host())
	}
	if desc.Status == nil || !desc.Status.Ready || desc.Status.State != pc.Ready || desc.Spec == nil || desc.Spec.Serverless == nil {
		t.Errorf("status %+v spec %+v", desc.Status, desc.Spec)
	}
	if v := s.LastAPIVersion(); v != fake.APIVersion {
		t.Errorf("API version %q, want %q", v, fake.APIVersion)
	}
	list, err := c.ListIndexes(ctx(t))
	if err != nil || len(list) != 2 || list[0].Name != "big" || list[1].Name != "docs" {
		t.Errorf("list: %v %v", list, err)
	}
}

func TestControlPlaneErrors(t *testing.T) {
	s := start(t, fake.Options{})
	_, err := sdk(t, s, key).DescribeIndex(ctx(t), "nope")
	var pe *pc.PineconeError
	if !errors.As(err, &pe) || pe.Code != http.StatusNotFound || !strings.Contains(err.Error(), "nope not found") {
		t.Errorf("unknown index: %v", err)
	}
	_, err = sdk(t, s, "wrong-key").DescribeIndex(ctx(t), "docs")
	if !errors.As(err, &pe) || pe.Code != http.StatusUnauthorized {
		t.Errorf("wrong key: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "wrong-key") {
		t.Errorf("error echoes the key: %v", err)
	}
}

func TestDataPlaneRoundTrip(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns1")
	idx := s.Index("docs")

	n, err := conn.UpsertVectors(ctx(t), vectors(t, "a-", 0, 5, dim))
	if err != nil || n != 5 {
		t.Fatalf("upsert: %d %v", n, err)
	}
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "b-", 0, 3, dim)); err != nil {
		t.Fatal(err)
	}
	got := idx.Vectors("ns1")
	if len(got) != 8 || idx.Count() != 8 {
		t.Fatalf("stored %d vectors, count %d", len(got), idx.Count())
	}
	a2 := got["a-002"]
	if want := values(2, dim); fmt.Sprint(a2.Values) != fmt.Sprint(want) || a2.Metadata["text"] != "row 2" || a2.Metadata["row"] != 2.0 {
		t.Errorf("stored a-002 = %+v", a2)
	}

	// Re-upserting overwrites and is counted.
	again := vectors(t, "a-", 2, 1, dim)
	newVals := values(99, dim)
	again[0].Values = &newVals
	if _, err := conn.UpsertVectors(ctx(t), again); err != nil {
		t.Fatal(err)
	}
	if idx.Count() != 8 || idx.DuplicateUpserts() != 1 || idx.UpsertCalls() != 3 || idx.MaxUpsertBatch() != 5 {
		t.Errorf("count %d, duplicates %d, calls %d, max batch %d", idx.Count(), idx.DuplicateUpserts(), idx.UpsertCalls(), idx.MaxUpsertBatch())
	}

	f, err := conn.FetchVectors(ctx(t), []string{"a-001", "a-002", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) != 2 || fmt.Sprint(*f.Vectors["a-002"].Values) != fmt.Sprint(newVals) ||
		f.Vectors["a-001"].Metadata.AsMap()["text"] != "row 1" {
		t.Errorf("fetch: %+v", f.Vectors)
	}

	q, err := conn.QueryByVectorValues(ctx(t), &pc.QueryByVectorValuesRequest{Vector: values(1, dim), TopK: 3, IncludeMetadata: true})
	if err != nil {
		t.Fatal(err)
	}
	// a-001 and b-001 share values(1), so they tie at cosine 1 and sort by id.
	if len(q.Matches) != 3 || q.Matches[0].Vector.Id != "a-001" || q.Matches[1].Vector.Id != "b-001" ||
		math.Abs(float64(q.Matches[0].Score)-1) > 1e-5 || q.Matches[2].Score >= q.Matches[1].Score ||
		q.Matches[0].Vector.Metadata.AsMap()["text"] != "row 1" || q.Matches[0].Vector.Values != nil {
		for _, m := range q.Matches {
			t.Errorf("query match %s %v %v", m.Vector.Id, m.Score, m.Vector.Metadata.AsMap())
		}
	}

	st, err := conn.DescribeIndexStats(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalVectorCount != 8 || st.Dimension == nil || *st.Dimension != dim || st.Namespaces["ns1"] == nil || st.Namespaces["ns1"].VectorCount != 8 {
		t.Errorf("stats: %+v", st)
	}

	if err := conn.DeleteVectorsById(ctx(t), []string{"a-000", "b-001", "missing"}); err != nil {
		t.Fatal(err)
	}
	if idx.Count() != 6 {
		t.Errorf("after delete: %d vectors", idx.Count())
	}

	// Page through the "a-" ids two at a time.
	var ids []string
	var token *string
	limit := uint32(2)
	prefix := "a-"
	for page := 0; page < 10; page++ {
		res, err := conn.ListVectors(ctx(t), &pc.ListVectorsRequest{Prefix: &prefix, Limit: &limit, PaginationToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range res.VectorIds {
			ids = append(ids, *id)
		}
		if token = res.NextPaginationToken; token == nil {
			break
		}
	}
	if strings.Join(ids, ",") != "a-001,a-002,a-003,a-004" {
		t.Errorf("listed %v", ids)
	}
}

func TestDefaultNamespace(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "")
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "d-", 0, 2, dim)); err != nil {
		t.Fatal(err)
	}
	if len(s.Index("docs").Vectors("")) != 2 || strings.Join(s.Index("docs").Namespaces(), ",") != fake.DefaultNamespace {
		t.Errorf("namespaces %v", s.Index("docs").Namespaces())
	}
}

func TestUpsertValidation(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns")

	_, err := conn.UpsertVectors(ctx(t), vectors(t, "x-", 0, 2, 3))
	if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "Vector dimension 3 does not match the dimension of the index 8") {
		t.Errorf("dimension mismatch: %v", err)
	}
	// A bad vector anywhere rejects the whole batch.
	mixed := append(vectors(t, "y-", 0, 2, dim), vectors(t, "y-", 2, 1, 3)...)
	if _, err := conn.UpsertVectors(ctx(t), mixed); code(err) != codes.InvalidArgument {
		t.Errorf("mixed batch: %v", err)
	}
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "z-", 0, fake.MaxUpsertVectors+1, dim)); code(err) != codes.InvalidArgument {
		t.Errorf("too many vectors: %v", err)
	}
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "z-", 0, fake.MaxUpsertVectors, dim)); err != nil {
		t.Errorf("exactly the maximum: %v", err)
	}

	big := connect(t, s, "big", "ns")
	// 1536 float32s are about 6 KB; 400 of them are over 2 MB, 300 are under.
	if _, err := big.UpsertVectors(ctx(t), vectors(t, "w-", 0, 400, 1536)); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "2MB") {
		t.Errorf("over 2 MB: %v", err)
	}
	if _, err := big.UpsertVectors(ctx(t), vectors(t, "w-", 0, 300, 1536)); err != nil {
		t.Errorf("under 2 MB: %v", err)
	}

	if got := s.Index("docs").Count(); got != fake.MaxUpsertVectors {
		t.Errorf("docs holds %d vectors; rejected batches must write nothing", got)
	}
	if st := s.Index("docs").Stats(); st.Errors["InvalidArgument"] != 3 || st.Calls["Upsert"] != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestInjectedFaults(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns")
	idx := s.Index("docs")

	idx.FailNextUpserts(2, codes.Unavailable)
	for i := 0; i < 2; i++ {
		if _, err := conn.UpsertVectors(ctx(t), vectors(t, "f-", 0, 2, dim)); code(err) != codes.Unavailable {
			t.Errorf("attempt %d: want Unavailable, got %v", i, err)
		}
	}
	if idx.Count() != 0 {
		t.Errorf("failed upserts wrote %d vectors", idx.Count())
	}
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "f-", 0, 2, dim)); err != nil {
		t.Errorf("after the faults: %v", err)
	}
	idx.FailNextUpserts(1, codes.ResourceExhausted)
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "f-", 0, 2, dim)); code(err) != codes.ResourceExhausted {
		t.Errorf("want ResourceExhausted, got %v", err)
	}

	idx.SetLatency(time.Second)
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := conn.UpsertVectors(short, vectors(t, "f-", 0, 1, dim)); code(err) != codes.DeadlineExceeded {
		t.Errorf("latency: want DeadlineExceeded, got %v", err)
	}
	idx.SetLatency(0)

	if st := idx.Stats(); st.Errors["Unavailable"] != 2 || st.Errors["ResourceExhausted"] != 1 || st.UpsertCalls != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestDataPlaneWrongKey(t *testing.T) {
	s := start(t, fake.Options{})
	c := sdk(t, s, "wrong-key")
	conn, err := c.Index(pc.NewIndexConnParams{Host: s.Index("docs").Host()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "k-", 0, 1, dim)); code(err) != codes.Unauthenticated {
		t.Errorf("want Unauthenticated, got %v", err)
	}
}

func TestConcurrentUpserts(t *testing.T) {
	s := start(t, fake.Options{DiscardValues: true})
	conn := connect(t, s, "docs", "ns")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < 5; b++ {
				if _, err := conn.UpsertVectors(context.Background(), vectors(t, fmt.Sprintf("g%d-", g), b*10, 10, dim)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	idx := s.Index("docs")
	if idx.Count() != 400 || idx.UpsertCalls() != 40 || idx.DuplicateUpserts() != 0 || idx.MaxUpsertBatch() != 10 {
		t.Errorf("count %d, calls %d, duplicates %d", idx.Count(), idx.UpsertCalls(), idx.DuplicateUpserts())
	}
	// DiscardValues keeps ids and metadata only.
	v := idx.Vectors("ns")["g3-012"]
	if v.ID != "g3-012" || v.Values != nil || v.Metadata["row"] != 12.0 {
		t.Errorf("discarded vector %+v", v)
	}
	if _, err := conn.QueryByVectorValues(context.Background(), &pc.QueryByVectorValuesRequest{Vector: values(1, dim), TopK: 1}); code(err) != codes.FailedPrecondition {
		t.Errorf("query without values: %v", err)
	}
}
