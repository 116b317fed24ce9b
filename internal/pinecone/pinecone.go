// Package pinecone upserts vectors into a Pinecone index with go-pinecone: it resolves the
// index's host and dimension, splits upserts into batches within Pinecone's limits (count and
// request size), keeps a few batches in flight, retries transient gRPC failures with jittered
// backoff, and fails fast, with a typed error, on failures that retrying cannot fix.
package pinecone

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr"
	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Pinecone's limits for one upsert request.
const (
	MaxBatchVectors = 1000
	// MaxRequestBytes is Pinecone's 2 MB, read as decimal megabytes of the serialized request.
	MaxRequestBytes = 2_000_000
	// RequestBytesLimit is what batches are packed to: a margin under MaxRequestBytes.
	RequestBytesLimit = MaxRequestBytes - 100_000
	// MaxIDBytes is the longest vector id Pinecone accepts.
	MaxIDBytes = 512
)

// Reasons a vector is refused, by the upserter's checks or by Pinecone.
const (
	ReasonInvalidID        = "invalid_id"
	ReasonInvalidMetadata  = "invalid_metadata"
	ReasonMetadataTooLarge = "metadata_too_large"
	ReasonVectorTooLarge   = "vector_too_large"
	// ReasonRefused: Pinecone answered InvalidArgument for this vector alone; the detail is
	// its message.
	ReasonRefused = "upsert_refused"
)

// Rejected is a vector that was not upserted, with why. Index is its position in the slice
// given to Upsert.
type Rejected struct {
	Index  int
	ID     string
	Reason string
	Detail string
}

// defaultNamespace is what go-pinecone sends for the empty namespace; used for the cache key
// too so "" and "__default__" share a connection.
const defaultNamespace = "__default__"

// Config configures an Upserter. Zero values take the defaults noted.
type Config struct {
	APIKey string
	// Index is the index name, resolved with DescribeIndex when Host is empty.
	Index string
	// Host is the index's data-plane host, e.g. "my-index-abc.svc.pinecone.io" (TLS) or
	// "http://127.0.0.1:5081" (plaintext gRPC). Set, DescribeIndex is skipped and the
	// dimension comes from DescribeIndexStats on the data plane.
	Host string
	// ControlHost is the control-plane API base. Empty: https://api.pinecone.io.
	ControlHost string
	// BatchSize is the most vectors in one upsert (1..1000). 0: 100.
	BatchSize int
	// MaxInFlight is how many upserts may be outstanding at once. 0: 4.
	MaxInFlight int
	// MaxRetries is the retries of one call after its first attempt. 0: 8; negative: none.
	MaxRetries int
	// MaxRetryTime bounds the time one call may spend retrying. 0: 5 minutes.
	MaxRetryTime time.Duration
	// BaseBackoff and MaxBackoff shape the exponential backoff. 0: 250ms and 20s.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// RequestTimeout bounds one attempt. 0: 60s.
	RequestTimeout time.Duration
	Logger         logr.Logger
}

// Vector is one vector to upsert.
type Vector struct {
	ID       string
	Values   []float32
	Metadata *structpb.Struct
}

// Stats are the upserter's counters since New.
type Stats struct {
	Vectors  int64 // vectors the server confirmed
	Requests int64 // upsert attempts sent, retries included
	Retries  int64
	Fetches  int64 // fetch attempts (incremental sync's hash lookups), retries included
	Lists    int64 // list-page attempts (sync.deleteMissing), retries included
	Deletes  int64 // delete attempts (sync.deleteMissing), retries included
}

// Upserter writes vectors to one index. It is safe for concurrent use.
type Upserter struct {
	client    *pinecone.Client
	log       logr.Logger
	host      string
	dimension int
	batchSize int
	retry     retryPolicy
	inFlight  chan struct{}

	mu    sync.Mutex
	base  *pinecone.IndexConnection // owns the gRPC connection
	conns map[string]*pinecone.IndexConnection

	nVectors, nRequests, nRetries atomic.Int64
	nFetches, nLists, nDeletes    atomic.Int64
}

// New connects to the index and learns its dimension. A missing index, a rejected key or an
// index without a dense dimension is a *PermanentError.
func New(ctx context.Context, cfg Config) (*Upserter, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("pinecone: API key is empty")
	}
	if cfg.Index == "" && cfg.Host == "" {
		return nil, errors.New("pinecone: neither index name nor host is set")
	}
	switch {
	case cfg.BatchSize == 0:
		cfg.BatchSize = 100
	case cfg.BatchSize < 0 || cfg.BatchSize > MaxBatchVectors:
		return nil, fmt.Errorf("pinecone: batchSize %d is outside 1..%d", cfg.BatchSize, MaxBatchVectors)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 8
	} else if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	pol := retryPolicy{
		maxRetries: cfg.MaxRetries,
		maxTime:    orDefault(cfg.MaxRetryTime, 5*time.Minute),
		base:       orDefault(cfg.BaseBackoff, 250*time.Millisecond),
		max:        orDefault(cfg.MaxBackoff, 20*time.Second),
		timeout:    orDefault(cfg.RequestTimeout, 60*time.Second),
		log:        cfg.Logger,
		rnd:        rand.Float64,
	}
	client, err := pinecone.NewClient(pinecone.NewClientParams{ApiKey: cfg.APIKey, Host: cfg.ControlHost})
	if err != nil {
		return nil, fmt.Errorf("pinecone: create client: %w", err)
	}
	u := &Upserter{
		client:    client,
		log:       cfg.Logger,
		batchSize: cfg.BatchSize,
		retry:     pol,
		inFlight:  make(chan struct{}, cfg.MaxInFlight),
		conns:     map[string]*pinecone.IndexConnection{},
	}

	host := cfg.Host
	if host == "" {
		var idx *pinecone.Index
		err := pol.do(ctx, "describe index", nil, func(ctx context.Context) error {
			var err error
			idx, err = client.DescribeIndex(ctx, cfg.Index)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("pinecone: describe index %q: %w", cfg.Index, err)
		}
		if idx.Dimension == nil || *idx.Dimension <= 0 {
			return nil, &PermanentError{Reason: worker.ReasonDimension,
				Err: fmt.Errorf("index %q has no dense dimension (vector type %q)", cfg.Index, idx.VectorType)}
		}
		host, u.dimension = idx.Host, int(*idx.Dimension)
	}
	if err := checkHost(host); err != nil {
		return nil, &PermanentError{Reason: worker.ReasonPermanentError, Err: err}
	}
	u.host = host
	base, err := client.Index(pinecone.NewIndexConnParams{Host: host, Namespace: defaultNamespace})
	if err != nil {
		return nil, fmt.Errorf("pinecone: connect to %s: %w", host, err)
	}
	u.base = base
	u.conns[defaultNamespace] = base

	if u.dimension == 0 {
		// Host given: ask the data plane we are about to use, which also proves the key works
		// there; the control plane may not even be reachable from the worker.
		var stats *pinecone.DescribeIndexStatsResponse
		err := pol.do(ctx, "describe index stats", nil, func(ctx context.Context) error {
			var err error
			stats, err = base.DescribeIndexStats(ctx)
			return err
		})
		if err != nil {
			_ = base.Close()
			return nil, fmt.Errorf("pinecone: describe index stats at %s: %w", host, err)
		}
		if stats.Dimension == nil || *stats.Dimension == 0 {
			_ = base.Close()
			return nil, &PermanentError{Reason: worker.ReasonDimension, Err: fmt.Errorf("index at %s reports dimension 0", host)}
		}
		u.dimension = int(*stats.Dimension)
	}
	return u, nil
}

// checkHost rejects a host that is not "[http[s]://]host[:port]". go-pinecone's Index calls
// log.Fatalf, ending the process, when grpc.NewClient refuses the target, and a garbled host
// would otherwise only fail after a round of retries.
func checkHost(host string) error {
	target := host
	if i := strings.Index(host, "://"); i >= 0 {
		if scheme := host[:i]; scheme != "http" && scheme != "https" {
			return fmt.Errorf("index host %q: scheme must be http or https", host)
		}
		target = host[i+3:]
	}
	u, err := url.Parse("https://" + target)
	if err != nil || target == "" || u.Host != target {
		return fmt.Errorf("index host %q is not [http[s]://]host[:port]", host)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("index host %q is not a valid gRPC target: %w", host, err)
	}
	_ = conn.Close() // never dialled: grpc.NewClient connects lazily
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Dimension is the index's vector length.
func (u *Upserter) Dimension() int { return u.dimension }

// Host is the index's data-plane host.
func (u *Upserter) Host() string { return u.host }

// Stats returns a snapshot of the counters.
func (u *Upserter) Stats() Stats {
	return Stats{Vectors: u.nVectors.Load(), Requests: u.nRequests.Load(), Retries: u.nRetries.Load(), Fetches: u.nFetches.Load(),
		Lists: u.nLists.Load(), Deletes: u.nDeletes.Load()}
}

// Close closes the gRPC connection shared by all namespaces.
func (u *Upserter) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.base == nil {
		return nil
	}
	err := u.base.Close()
	u.base, u.conns = nil, nil
	if err != nil {
		return fmt.Errorf("pinecone: close connection: %w", err)
	}
	return nil
}

// conn returns the connection for namespace, sharing the one gRPC connection.
func (u *Upserter) conn(namespace string) (*pinecone.IndexConnection, error) {
	if namespace == "" {
		namespace = defaultNamespace
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.base == nil {
		return nil, errors.New("pinecone: upserter is closed")
	}
	c, ok := u.conns[namespace]
	if !ok {
		c = u.base.WithNamespace(namespace)
		u.conns[namespace] = c
	}
	return c, nil
}

// Upsert writes vecs to namespace in batches within BatchSize, 1,000 vectors and
// RequestBytesLimit, up to MaxInFlight at once (shared by all callers). Upserts are idempotent
// (same id, same vector), so a retried batch cannot duplicate. A vector Pinecone would refuse (an
// id or metadata out of its limits) is not sent, and a batch Pinecone refuses with
// InvalidArgument is bisected until the vectors it refuses are alone: both come back as
// Rejected, and the rest is written. A vector of the wrong dimension is an error: it concerns
// every vector. On error (a *PermanentError, a *RetryExhaustedError or the context's error) the
// remaining batches are abandoned; which of the others landed is unknown, and a re-run
// overwrites them.
func (u *Upserter) Upsert(ctx context.Context, namespace string, vecs []Vector) ([]Rejected, error) {
	if len(vecs) == 0 {
		return nil, nil
	}
	batches, rejected, err := u.split(namespace, vecs)
	if err != nil {
		return nil, err
	}
	c, err := u.conn(namespace)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range batches {
		g.Go(func() error {
			refused, err := u.isolate(gctx, c, b)
			if err != nil {
				return err
			}
			if len(refused) > 0 {
				mu.Lock()
				rejected = append(rejected, refused...)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return rejected, nil
}

// batch is one upsert request's vectors and their positions in the caller's slice.
type batch struct {
	vecs []*pinecone.Vector
	idx  []int
}

// split checks vecs and cuts them into batches by count and encoded size; vectors Pinecone would
// refuse are returned as Rejected.
func (u *Upserter) split(namespace string, vecs []Vector) ([]batch, []Rejected, error) {
	if namespace == "" {
		namespace = defaultNamespace
	}
	overhead := requestOverhead(namespace)
	var batches []batch
	var rejected []Rejected
	var cur batch
	size := overhead
	reject := func(i int, reason, format string, args ...any) {
		rejected = append(rejected, Rejected{Index: i, ID: vecs[i].ID, Reason: reason, Detail: fmt.Sprintf(format, args...)})
	}
	for i := range vecs {
		v := &vecs[i]
		if len(v.Values) != u.dimension {
			return nil, nil, &PermanentError{Reason: worker.ReasonDimension,
				Err: fmt.Errorf("vector %q has %d values, the index has dimension %d", v.ID, len(v.Values), u.dimension)}
		}
		if v.ID == "" || len(v.ID) > MaxIDBytes || !utf8.ValidString(v.ID) {
			reject(i, ReasonInvalidID, "id of %d bytes, must be 1..%d bytes of UTF-8", len(v.ID), MaxIDBytes)
			continue
		}
		if err := CheckMetadata(v.Metadata); err != nil {
			reject(i, ReasonInvalidMetadata, "%v", err)
			continue
		}
		if m := MetadataSize(v.Metadata); m > MetadataLimit {
			reject(i, ReasonMetadataTooLarge, "metadata is %d bytes as Pinecone measures it, limit %d (%d less a margin)", m, MetadataLimit, MaxMetadataBytes)
			continue
		}
		n := vectorSize(v.ID, len(v.Values), v.Metadata)
		if overhead+n > RequestBytesLimit {
			reject(i, ReasonVectorTooLarge, "vector is %d bytes encoded, more than one request may carry (%d)", n, RequestBytesLimit)
			continue
		}
		if len(cur.vecs) > 0 && (len(cur.vecs) >= u.batchSize || size+n > RequestBytesLimit) {
			batches = append(batches, cur)
			cur, size = batch{}, overhead
		}
		if cur.vecs == nil {
			c := min(u.batchSize, len(vecs)-i)
			cur = batch{vecs: make([]*pinecone.Vector, 0, c), idx: make([]int, 0, c)}
		}
		cur.vecs = append(cur.vecs, &pinecone.Vector{Id: v.ID, Values: &v.Values, Metadata: v.Metadata})
		cur.idx = append(cur.idx, i)
		size += n
	}
	if len(cur.vecs) > 0 {
		batches = append(batches, cur)
	}
	return batches, rejected, nil
}

// minAllRefused: when every vector of a batch at least this large is refused on its own, the
// InvalidArgument was about the request (namespace, index), and it stays an error.
const minAllRefused = 4

// isolate upserts b and, when Pinecone refuses it with InvalidArgument about its vectors,
// bisects it to find the vectors refused.
func (u *Upserter) isolate(ctx context.Context, c *pinecone.IndexConnection, b batch) ([]Rejected, error) {
	refused, err := u.bisect(ctx, c, b)
	if err == nil && len(b.vecs) >= minAllRefused && len(refused) == len(b.vecs) {
		return nil, &PermanentError{Reason: worker.ReasonPermanentError, Err: fmt.Errorf(
			"pinecone refused each of the %d vectors of an upsert to namespace %q on its own, so the error is about the request: %s", len(b.vecs), c.Namespace(), refused[0].Detail)}
	}
	return refused, err
}

func (u *Upserter) bisect(ctx context.Context, c *pinecone.IndexConnection, b batch) ([]Rejected, error) {
	err := u.upsertBatch(ctx, c, b.vecs)
	msg, isRefusal := refusal(err)
	if err == nil || !isRefusal {
		return nil, err
	}
	if len(b.vecs) == 1 {
		return []Rejected{{Index: b.idx[0], ID: b.vecs[0].Id, Reason: ReasonRefused, Detail: msg}}, nil
	}
	u.log.V(1).Info("upsert refused, isolating", "vectors", len(b.vecs), "error", msg)
	m := len(b.vecs) / 2
	left, err := u.bisect(ctx, c, batch{vecs: b.vecs[:m:m], idx: b.idx[:m:m]})
	if err != nil {
		return nil, err
	}
	right, err := u.bisect(ctx, c, batch{vecs: b.vecs[m:], idx: b.idx[m:]})
	if err != nil {
		return nil, err
	}
	return append(left, right...), nil
}

// refusal reports whether err is Pinecone's InvalidArgument about the vectors sent, with its
// message. A dimension mismatch concerns the index, not a vector, and is not one.
func refusal(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	// The status itself, not status.FromError of the wrapper, whose message would be ours.
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return "", false
	}
	s := gs.GRPCStatus()
	if s.Code() != codes.InvalidArgument {
		return "", false
	}
	if strings.Contains(strings.ToLower(s.Message()), "dimension") {
		return "", false
	}
	return s.Message(), true
}

func (u *Upserter) upsertBatch(ctx context.Context, c *pinecone.IndexConnection, batch []*pinecone.Vector) error {
	select {
	case u.inFlight <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("pinecone upsert: %w", ctx.Err())
	}
	defer func() { <-u.inFlight }()
	err := u.retry.do(ctx, "upsert", &u.nRetries, func(ctx context.Context) error {
		u.nRequests.Add(1)
		n, err := c.UpsertVectors(ctx, batch)
		if err != nil {
			return err
		}
		if int(n) != len(batch) {
			// Retrying is safe (upserts overwrite) and the count must be exact.
			return fmt.Errorf("server confirmed %d of %d vectors", n, len(batch))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pinecone upsert of %d vectors to namespace %q: %w", len(batch), c.Namespace(), err)
	}
	u.nVectors.Add(int64(len(batch)))
	return nil
}
