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

	"github.com/go-logr/logr"
	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Pinecone's limits for one upsert request.
const (
	MaxBatchVectors = 1000
	// MaxRequestBytes keeps a request under Pinecone's 2 MB, read as decimal megabytes.
	MaxRequestBytes = 2_000_000
	// MaxIDBytes is the longest vector id Pinecone accepts.
	MaxIDBytes = 512
)

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
	return Stats{Vectors: u.nVectors.Load(), Requests: u.nRequests.Load(), Retries: u.nRetries.Load()}
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

// Upsert writes vecs to namespace in batches within BatchSize, 1,000 vectors and 2 MB,
// up to MaxInFlight at once (shared by all callers). Upserts are idempotent (same id, same
// vector), so a retried batch cannot duplicate. On error (a *PermanentError, a
// *RetryExhaustedError or the context's error) the remaining batches are abandoned; which of
// the others landed is unknown, and a re-run overwrites them.
func (u *Upserter) Upsert(ctx context.Context, namespace string, vecs []Vector) error {
	if len(vecs) == 0 {
		return nil
	}
	batches, err := u.split(namespace, vecs)
	if err != nil {
		return err
	}
	c, err := u.conn(namespace)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range batches {
		g.Go(func() error { return u.upsertBatch(gctx, c, b) })
	}
	return g.Wait()
}

// split validates vecs and cuts them into batches by count and encoded size.
func (u *Upserter) split(namespace string, vecs []Vector) ([][]*pinecone.Vector, error) {
	if namespace == "" {
		namespace = defaultNamespace
	}
	overhead := requestOverhead(namespace)
	var batches [][]*pinecone.Vector
	var cur []*pinecone.Vector
	size := overhead
	for i := range vecs {
		v := &vecs[i]
		switch {
		case v.ID == "" || len(v.ID) > MaxIDBytes:
			return nil, &PermanentError{Reason: worker.ReasonPermanentError,
				Err: fmt.Errorf("vector %d: id of %d bytes, must be 1..%d", i, len(v.ID), MaxIDBytes)}
		case len(v.Values) != u.dimension:
			return nil, &PermanentError{Reason: worker.ReasonDimension,
				Err: fmt.Errorf("vector %q has %d values, the index has dimension %d", v.ID, len(v.Values), u.dimension)}
		}
		n := vectorSize(v.ID, len(v.Values), v.Metadata)
		if overhead+n > MaxRequestBytes {
			return nil, &PermanentError{Reason: worker.ReasonPermanentError,
				Err: fmt.Errorf("vector %q is %d bytes encoded, more than one request may carry (%d)", v.ID, n, MaxRequestBytes)}
		}
		if len(cur) > 0 && (len(cur) >= u.batchSize || size+n > MaxRequestBytes) {
			batches = append(batches, cur)
			cur, size = nil, overhead
		}
		if cur == nil {
			cur = make([]*pinecone.Vector, 0, min(u.batchSize, len(vecs)-i))
		}
		cur = append(cur, &pinecone.Vector{Id: v.ID, Values: &v.Values, Metadata: v.Metadata})
		size += n
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches, nil
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
