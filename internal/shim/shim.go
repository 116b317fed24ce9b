// Package shim is the HTTP server the manager runs on port 8000: GET /api/v1/health for the load
// balancer and the old health_check.sh, and the legacy task API (DESIGN §5) so the clients of the
// FastAPI service it replaces move over unchanged. Tasks are CsvIngestion resources; reads go
// through the manager's cache, so every replica answers, leader or not.
package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/netutil"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
)

// Labels and annotations the shim puts on the CsvIngestions it creates.
const (
	// LabelPriority records the legacy request's priority. It has no scheduling meaning: Jobs of
	// every task share the cluster alike. It is kept so clients and people can still see and select
	// by it.
	LabelPriority = "ingestion.vectordb.io/priority"
	// LabelCreatedBy marks resources created through the legacy API.
	LabelCreatedBy = "app.kubernetes.io/created-by"
	// AnnotationParameters holds the legacy request's parameters as JSON (the keys of DESIGN §7's
	// parameters), as the client sent them: batch_size above 1000 is kept here although the spec
	// uses 1000.
	AnnotationParameters = "ingestion.vectordb.io/parameters"
	// AnnotationCreatedAt is when the request was accepted, in tasktable.TimeFormat (microseconds,
	// where creationTimestamp has seconds), so tasks sort newest first even within one second.
	AnnotationCreatedAt = "ingestion.vectordb.io/created-at"
	// AnnotationRequestID is the X-Request-ID of the request that created the resource.
	AnnotationRequestID = "ingestion.vectordb.io/request-id"

	createdByValue = "vectordb-operator-shim"
	// NamePrefix + task id is the name of a CsvIngestion created by the shim.
	NamePrefix = "task-"
)

// DefaultModel is the old service's embedding model: its client hard-coded
// openai.Embedding.create(model="text-embedding-ada-002").
const DefaultModel = "text-embedding-ada-002"

// Legacy row contract (DESIGN §6): the columns the old system's queries produce.
const (
	legacyIDColumn   = "id"
	legacyTextColumn = "formatted_text"
)

// Limits of the legacy API.
const (
	// MaxPineconeBatch is Pinecone's cap on vectors per upsert; a legacy batch_size above it is
	// accepted (the old range is 100–10000) and 1000 is used.
	MaxPineconeBatch = 1000
	// MaxListLimit is the largest page GET /api/v1/tasks returns.
	MaxListLimit = 1000
	// DefaultListLimit is the page size when limit is not given.
	DefaultListLimit = 100
)

// Config configures the server. Zero values take the defaults noted on each field.
type Config struct {
	// Addr to listen on; default ":8000".
	Addr string
	// APIEnabled serves the legacy task API. Health and the OpenAPI document are always served.
	APIEnabled bool
	// APIKeys returns the keys accepted in X-API-Key, read on every request so rotation needs no
	// restart (see SecretKeys, StaticKeys). Required when APIEnabled. These keys may read and
	// write (create and cancel tasks), as every key always could, in their namespaces.
	APIKeys apikeys.Source
	// ReadOnlyKeys are keys that may read tasks (GET) but are refused, with 403, on the routes
	// that create or cancel them. Optional.
	ReadOnlyKeys apikeys.Source
	// WatchNamespaces are the namespaces the manager's cache holds; nil: every namespace. A
	// key's namespaces outside them hold nothing the server can see (they are skipped, not
	// errors).
	WatchNamespaces []string
	// KeyNamespaces is the scope of a key that names none (apikeys.Key.Namespaces); default the
	// API's own namespace, Defaults.Namespace. A key sees and acts on tasks only there: any
	// other task is 404 to it, as if it did not exist.
	KeyNamespaces []string
	// RateLimit per API key and per client address.
	RateLimit RateLimit
	// ForwardedForHops is how many proxies in front of the server append to X-Forwarded-For (an
	// AWS ALB is 1). 0 uses the connection's address, which behind a load balancer is the balancer's
	// own, so every client would share one bucket.
	ForwardedForHops int
	// MaxBodyBytes bounds request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxConnections bounds the connections served at once (golang.org/x/net/netutil's
	// LimitListener): further ones wait in the listen backlog, so a flood of connections (held
	// open streams included) cannot exhaust the manager's memory or file descriptors; default 1024.
	MaxConnections int
	// ShutdownTimeout bounds graceful shutdown; default 10s.
	ShutdownTimeout time.Duration
	// HealthTimeout bounds each health check; default 2s.
	HealthTimeout time.Duration
	// HealthCacheTTL is how long a health result is reused, so a flood of health requests (no auth)
	// cannot turn into a flood of API server and DynamoDB calls; default 1s.
	HealthCacheTTL time.Duration
	// Defaults fill the CsvIngestion created by POST /api/v1/process.
	Defaults Defaults
	// Environment names the deployment in health and GET / (the old ENVIRONMENT); default
	// "production".
	Environment string
}

// RateLimit is a token bucket per API key and one per client address. A zero Rate disables that
// bucket.
type RateLimit struct {
	PerKey    Bucket
	PerClient Bucket
}

// Bucket is a token bucket: Rate requests per second on average, Burst at once.
type Bucket struct {
	Rate  float64
	Burst int
}

// DefaultRateLimit is used when Config.RateLimit is zero.
var DefaultRateLimit = RateLimit{
	PerKey:    Bucket{Rate: 10, Burst: 20},
	PerClient: Bucket{Rate: 20, Burst: 40},
}

// Defaults are the operator's settings (flags / Helm values) for ingestions created through the
// legacy API, which names only the file and a few knobs.
type Defaults struct {
	// Namespace the CsvIngestions are created in. Required with the API.
	Namespace string
	// Bucket of s3_csv keys (and of Metabase staging unless StageBucket is set). Required.
	Bucket     string
	S3Region   string // default us-east-1
	S3Endpoint string // S3-compatible store; empty means AWS
	// S3CredentialsSecret names a Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; empty
	// uses the worker pod's identity.
	S3CredentialsSecret string

	// Index is the Pinecone index. Required.
	Index string
	// PineconeNamespace when the request names none; default "v2" as the old API.
	PineconeNamespace string
	PineconeSecret    v1alpha1.SecretKeyRef // required; key defaults to api-key

	// Model is the embedding model; default text-embedding-ada-002, the old service's (its
	// OPENAI_MODEL setting was never read), so API-created ingestions write the index's vector space.
	Model        string
	OpenAISecret v1alpha1.SecretKeyRef // required; key defaults to api-key

	// MetabaseURL enables data_source metabase.
	MetabaseURL    string
	MetabaseSecret v1alpha1.SecretKeyRef // required with MetabaseURL
	StageBucket    string                // default Bucket
	StagePrefix    string                // default staged/

	// DynamoDB task table; empty Table means no tracking.
	DynamoDB v1alpha1.DynamoDBTracking
	// DeadLetter for failed rows; empty Bucket means none.
	DeadLetter v1alpha1.DeadLetterSpec

	RowsPerChunk int32 // default 1000; the request's chunk_size overrides it
	BatchSize    int32 // default 100; the request's batch_size overrides it
	Parallelism  int32 // default 4
	// ChunkTimeout bounds one attempt of a chunk; default 30m. (Set explicitly: a zero
	// metav1.Duration is sent as "0s", not left to the CRD's default.)
	ChunkTimeout      time.Duration
	RequestsPerMinute int32  // default 300
	Sanitize          string // default legacy, so new vectors match those already in the index
}

// TaskTable is what the shim reads of the DynamoDB task table (*tasktable.Client): tasks whose
// resource is gone, and a reachability check for health.
type TaskTable interface {
	Get(ctx context.Context, taskID string) (*tasktable.Task, map[string]tasktable.ChunkEntry, error)
	ListPage(ctx context.Context, q tasktable.PageQuery) (tasktable.Page, error)
	CheckTable(ctx context.Context) error
}

// Deps are the server's collaborators.
type Deps struct {
	// Client reads through the manager's cache and writes to the API server. Required.
	Client client.Client
	// APIReader reads the API server directly (mgr.GetAPIReader()). Optional: it finds a task
	// created a moment ago, possibly by another replica, that the cache has not seen yet.
	APIReader client.Reader
	// CacheSynced reports whether the cache has synced (e.g. mgr.GetCache().WaitForCacheSync with
	// a short deadline). Required.
	CacheSynced func(ctx context.Context) bool
	// APIServerCheck returns nil when the API server answers (see APIServerReadyz). Required.
	APIServerCheck func(ctx context.Context) error
	// Tasks is the DynamoDB task table; nil when tracking is not configured.
	Tasks TaskTable
	Log   logr.Logger
	// Version reported by health.
	Version string
	// UI, when set, is served under /ui/ (the web UI, internal/webui), behind the per-client
	// rate limit; it does its own authentication.
	UI http.Handler
}

// Server is the HTTP shim.
type Server struct {
	cfg     Config
	deps    Deps
	log     logr.Logger
	handler http.Handler
	health  *healthCache
	keyRL   *limiterSet
	ipRL    *limiterSet
	routes  []route
	openapi []byte
}

// New checks cfg and builds a server. It starts nothing; see Run, Serve and Handler.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = withDefaults(cfg)
	if err := validateConfig(cfg, deps); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Log.WithName("shim")}
	s.health = &healthCache{ttl: cfg.HealthCacheTTL}
	s.keyRL = newLimiterSet(cfg.RateLimit.PerKey)
	s.ipRL = newLimiterSet(cfg.RateLimit.PerClient)
	s.routes = s.buildRoutes()
	doc, err := openAPIFor(s.routes)
	if err != nil {
		return nil, fmt.Errorf("shim: reading the embedded OpenAPI document: %w", err)
	}
	s.openapi = doc
	s.handler = s.buildHandler()
	return s, nil
}

func withDefaults(cfg Config) Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def32 := func(n *int32, v int32) {
		if *n == 0 {
			*n = v
		}
	}
	def(&cfg.Addr, ":8000")
	def(&cfg.Environment, "production")
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 1024
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 2 * time.Second
	}
	if cfg.HealthCacheTTL <= 0 {
		cfg.HealthCacheTTL = time.Second
	}
	if cfg.KeyNamespaces == nil && cfg.Defaults.Namespace != "" {
		cfg.KeyNamespaces = []string{cfg.Defaults.Namespace}
	}
	if cfg.RateLimit == (RateLimit{}) {
		cfg.RateLimit = DefaultRateLimit
	}
	d := &cfg.Defaults
	def(&d.S3Region, "us-east-1")
	def(&d.PineconeNamespace, "v2")
	def(&d.PineconeSecret.Key, "api-key")
	def(&d.Model, DefaultModel)
	def(&d.OpenAISecret.Key, "api-key")
	def(&d.MetabaseSecret.Key, "api-key")
	def(&d.StageBucket, d.Bucket)
	def(&d.StagePrefix, "staged/")
	if d.DynamoDB.Table != "" {
		def(&d.DynamoDB.Region, tasktable.DefaultRegion)
	}
	if d.DeadLetter.Bucket != "" {
		def(&d.DeadLetter.KeyPrefix, "failed/")
	}
	def32(&d.RowsPerChunk, 1000)
	def32(&d.BatchSize, 100)
	def32(&d.Parallelism, 4)
	if d.ChunkTimeout <= 0 {
		d.ChunkTimeout = 30 * time.Minute
	}
	def32(&d.RequestsPerMinute, 300)
	def(&d.Sanitize, "legacy")
	return cfg
}

func validateConfig(cfg Config, deps Deps) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if deps.Client == nil {
		bad("a Kubernetes client is required")
	}
	if deps.CacheSynced == nil {
		bad("a cache-synced check is required")
	}
	if deps.APIServerCheck == nil {
		bad("an API server check is required")
	}
	for _, b := range []Bucket{cfg.RateLimit.PerKey, cfg.RateLimit.PerClient} {
		if b.Rate < 0 || (b.Rate > 0 && b.Burst < 1) {
			bad("rate limit %g/s with burst %d: the rate must be ≥ 0 and the burst ≥ 1", b.Rate, b.Burst)
		}
	}
	if cfg.ForwardedForHops < 0 {
		bad("forwarded-for hops must be ≥ 0, got %d", cfg.ForwardedForHops)
	}
	if cfg.APIEnabled {
		d := cfg.Defaults
		if cfg.APIKeys == nil {
			bad("the task API needs a source of API keys")
		}
		if errs := validation.IsDNS1123Label(d.Namespace); len(errs) > 0 {
			bad("default namespace %q: %s", d.Namespace, strings.Join(errs, "; "))
		}
		if d.Bucket == "" {
			bad("the task API needs a default bucket")
		}
		if d.Index == "" {
			bad("the task API needs a default Pinecone index")
		}
		if d.OpenAISecret.Name == "" {
			bad("the task API needs the name of the OpenAI key Secret")
		}
		if d.PineconeSecret.Name == "" {
			bad("the task API needs the name of the Pinecone key Secret")
		}
		for what, u := range map[string]string{"S3 endpoint": d.S3Endpoint, "Metabase URL": d.MetabaseURL, "DynamoDB endpoint": d.DynamoDB.Endpoint} {
			if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				bad("%s %q must start with http:// or https://", what, u)
			}
		}
		if d.MetabaseURL != "" && d.MetabaseSecret.Name == "" {
			bad("a Metabase URL needs the name of the Metabase key Secret")
		}
		if d.RowsPerChunk < minChunkSize || d.RowsPerChunk > maxChunkSize {
			bad("default rows per chunk %d is outside %d–%d", d.RowsPerChunk, minChunkSize, maxChunkSize)
		}
		if d.BatchSize < 1 || d.BatchSize > MaxPineconeBatch {
			bad("default batch size %d is outside 1–%d", d.BatchSize, MaxPineconeBatch)
		}
		switch d.Sanitize {
		case "none", "basic", "legacy":
		default:
			bad("sanitize %q is not one of none, basic, legacy", d.Sanitize)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("shim config: %w", errors.Join(errs...))
	}
	return nil
}

// Handler is the server's handler, with every middleware.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on Config.Addr and serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("shim: listen on %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Start is Run, so the server is a controller-runtime manager Runnable (mgr.Add).
func (s *Server) Start(ctx context.Context) error { return s.Run(ctx) }

// NeedLeaderElection is false: every replica serves health and the API from its own cache.
func (s *Server) NeedLeaderElection() bool { return false }

// Serve serves on ln until ctx is done, then stops accepting, lets requests in flight finish
// (within ShutdownTimeout) and returns nil. ln is closed on return.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ln = netutil.LimitListener(ln, s.cfg.MaxConnections)
	s.log.Info("serving", "addr", ln.Addr().String(), "api", s.cfg.APIEnabled, "maxConnections", s.cfg.MaxConnections)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("shim: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("shim: graceful shutdown: %w", err)
	}
	s.log.Info("stopped")
	return nil
}
