package manager

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/shim"
	"github.com/vectordb-io/vectordb-operator/internal/tracking"
	"github.com/vectordb-io/vectordb-operator/internal/version"
	"github.com/vectordb-io/vectordb-operator/internal/webui"
)

// ShimOptions configure the HTTP shim (health and the legacy task API).
type ShimOptions struct {
	Addr       string
	APIEnabled bool
	// APIKeysPath is a file (one key per line) or a directory (every file one key: a mounted
	// Secret). It is re-read as it changes, so keys rotate without a restart, and the manager
	// never needs RBAC on Secrets. These keys may read and write.
	APIKeysPath string
	// ReadKeysPath holds read-only keys, in the same forms: they view the web UI and read tasks
	// through the REST API, and are refused (403) where tasks are created, cancelled, suspended or
	// resumed.
	ReadKeysPath string
	// KeyDefaultNamespaces is the scope of a key without a namespaces entry (apikeys): the
	// namespaces it sees and acts on, in the REST API and the web UI. Empty: the API's namespace
	// (--api-namespace); with neither, such a key sees nothing. "*" is cluster-wide.
	KeyDefaultNamespaces []string
	// UIEnabled serves the web UI at /ui/ (internal/webui).
	UIEnabled bool
	// UIUpdateInterval is the least time between two pushes to one open page.
	UIUpdateInterval time.Duration
	// UISessionTTL is how long a web UI sign-in lasts.
	UISessionTTL time.Duration
	// UIPublicOrigin is the scheme://host[:port] browsers use when a proxy rewrites Host.
	UIPublicOrigin string
	// UIMaxStreams and UIMaxStreamsPerKey cap the web UI's open live pages (event streams), in
	// all and per key.
	UIMaxStreams       int
	UIMaxStreamsPerKey int
	// MaxConnections caps the HTTP server's open connections (streams hold theirs).
	MaxConnections   int
	PerKeyRate       float64
	PerKeyBurst      int
	PerClientRate    float64
	PerClientBurst   int
	ForwardedForHops int
	MaxBodyBytes     int64
	// Environment names the deployment in the health body and GET / (the old ENVIRONMENT).
	Environment string
	Defaults    shim.Defaults
}

func defaultShimOptions() ShimOptions {
	return ShimOptions{
		Addr:               ":8000",
		APIEnabled:         true,
		UIEnabled:          true,
		UIUpdateInterval:   500 * time.Millisecond,
		UISessionTTL:       time.Hour,
		UIMaxStreams:       256,
		UIMaxStreamsPerKey: 8,
		MaxConnections:     1024,
		Environment:        "production",
		PerKeyRate:         10,
		PerKeyBurst:        20,
		PerClientRate:      20,
		PerClientBurst:     40,
		MaxBodyBytes:       1 << 20,
		Defaults: shim.Defaults{
			PineconeNamespace: "v2",
			Model:             "text-embedding-ada-002",
			OpenAISecret:      v1alpha1.SecretKeyRef{Name: "openai", Key: "api-key"},
			PineconeSecret:    v1alpha1.SecretKeyRef{Name: "pinecone", Key: "api-key"},
			MetabaseSecret:    v1alpha1.SecretKeyRef{Name: "metabase", Key: "api-key"},
			StagePrefix:       "staged/",
			RowsPerChunk:      1000,
			BatchSize:         100,
			Parallelism:       4,
			RequestsPerMinute: 300,
			Sanitize:          "legacy",
		},
	}
}

func bindShimFlags(fs *pflag.FlagSet, o *ShimOptions) {
	d := &o.Defaults
	fs.StringVar(&o.Addr, "http-bind-address", o.Addr, "address of the HTTP shim: /api/v1/health and the legacy task API")
	fs.BoolVar(&o.APIEnabled, "api-enabled", o.APIEnabled, "serve the legacy task API (health is always served)")
	fs.StringVar(&o.Environment, "environment", o.Environment, "deployment name reported by /api/v1/health and / (the old ENVIRONMENT)")
	fs.StringVar(&o.APIKeysPath, "api-keys-path", o.APIKeysPath, "file (one key a line) or directory (a mounted Secret: each file a key) of accepted X-API-Key values; these keys may read and write")
	fs.StringVar(&o.ReadKeysPath, "api-read-keys-path", o.ReadKeysPath, "file or directory, as --api-keys-path, of read-only keys: they view the web UI and read tasks, and are refused actions")
	fs.StringSliceVar(&o.KeyDefaultNamespaces, "api-key-default-namespaces", o.KeyDefaultNamespaces, "namespaces a key without a <name>.namespaces entry sees and acts on, in the REST API and the web UI (default: --api-namespace; * is cluster-wide)")
	fs.BoolVar(&o.UIEnabled, "ui-enabled", o.UIEnabled, "serve the web UI at /ui/ on the HTTP shim's address (sign-in with the API keys)")
	fs.DurationVar(&o.UIUpdateInterval, "ui-update-interval", o.UIUpdateInterval, "least time between two live updates pushed to one open web UI page")
	fs.DurationVar(&o.UISessionTTL, "ui-session-ttl", o.UISessionTTL, "how long a web UI sign-in lasts (sign-out ends it at once on every replica)")
	fs.StringVar(&o.UIPublicOrigin, "ui-public-origin", o.UIPublicOrigin, "scheme://host[:port] browsers load the web UI from, when a proxy in front rewrites Host (the sign-in and action requests' Origin must be it)")
	fs.IntVar(&o.UIMaxStreams, "ui-max-streams", o.UIMaxStreams, "live web UI pages (event streams) open at once; past it 503 with Retry-After")
	fs.IntVar(&o.UIMaxStreamsPerKey, "ui-max-streams-per-key", o.UIMaxStreamsPerKey, "live web UI pages one key may hold; past it 429 with Retry-After")
	fs.IntVar(&o.MaxConnections, "http-max-connections", o.MaxConnections, "open connections the HTTP server accepts at once (more wait to be accepted)")
	fs.Float64Var(&o.PerKeyRate, "api-rate-per-key", o.PerKeyRate, "requests per second allowed per API key")
	fs.IntVar(&o.PerKeyBurst, "api-burst-per-key", o.PerKeyBurst, "burst per API key")
	fs.Float64Var(&o.PerClientRate, "api-rate-per-client", o.PerClientRate, "requests per second allowed per client address")
	fs.IntVar(&o.PerClientBurst, "api-burst-per-client", o.PerClientBurst, "burst per client address")
	fs.IntVar(&o.ForwardedForHops, "api-forwarded-for-hops", o.ForwardedForHops, "proxies in front of the shim that append X-Forwarded-For (an ALB is 1)")
	fs.Int64Var(&o.MaxBodyBytes, "api-max-body-bytes", o.MaxBodyBytes, "largest request body accepted")
	fs.StringVar(&d.Namespace, "api-namespace", d.Namespace, "namespace where the API creates CsvIngestions")
	fs.StringVar(&d.Bucket, "api-bucket", d.Bucket, "S3 bucket of s3_key")
	fs.StringVar(&d.S3Region, "api-s3-region", d.S3Region, "region of the bucket")
	fs.StringVar(&d.S3Endpoint, "api-s3-endpoint", d.S3Endpoint, "S3-compatible endpoint (MinIO); empty: AWS")
	fs.StringVar(&d.S3CredentialsSecret, "api-s3-credentials-secret", d.S3CredentialsSecret, "Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for workers; empty: the worker's identity")
	fs.StringVar(&d.Index, "api-index", d.Index, "Pinecone index")
	fs.StringVar(&d.PineconeNamespace, "api-pinecone-namespace", d.PineconeNamespace, "Pinecone namespace when a request names none")
	fs.StringVar(&d.PineconeSecret.Name, "api-pinecone-secret", d.PineconeSecret.Name, "Secret with the Pinecone API key")
	fs.StringVar(&d.PineconeSecret.Key, "api-pinecone-secret-key", d.PineconeSecret.Key, "key of the Pinecone API key in its Secret")
	fs.StringVar(&d.Model, "api-model", d.Model, "embedding model of API-created ingestions: the model the index holds (the old service used text-embedding-ada-002)")
	fs.StringVar(&d.OpenAISecret.Name, "api-openai-secret", d.OpenAISecret.Name, "Secret with the OpenAI API key")
	fs.StringVar(&d.OpenAISecret.Key, "api-openai-secret-key", d.OpenAISecret.Key, "key of the OpenAI API key in its Secret")
	fs.StringVar(&d.MetabaseURL, "api-metabase-url", d.MetabaseURL, "Metabase URL; enables data_source metabase")
	fs.StringVar(&d.MetabaseSecret.Name, "api-metabase-secret", d.MetabaseSecret.Name, "Secret with the Metabase API key")
	fs.StringVar(&d.MetabaseSecret.Key, "api-metabase-secret-key", d.MetabaseSecret.Key, "key of the Metabase API key in its Secret")
	fs.StringVar(&d.StageBucket, "api-stage-bucket", d.StageBucket, "bucket where Metabase exports are staged (default: --api-bucket)")
	fs.StringVar(&d.StagePrefix, "api-stage-prefix", d.StagePrefix, "key prefix of staged Metabase exports")
	fs.StringVar(&d.DynamoDB.Table, "api-dynamodb-table", d.DynamoDB.Table, "DynamoDB task table of API-created ingestions (empty: none)")
	fs.StringVar(&d.DynamoDB.Region, "api-dynamodb-region", d.DynamoDB.Region, "region of the task table")
	fs.StringVar(&d.DynamoDB.Endpoint, "api-dynamodb-endpoint", d.DynamoDB.Endpoint, "DynamoDB-compatible endpoint; empty: AWS")
	fs.StringVar(&d.DeadLetter.Bucket, "api-dead-letter-bucket", d.DeadLetter.Bucket, "bucket for failed rows (empty: none)")
	fs.StringVar(&d.DeadLetter.KeyPrefix, "api-dead-letter-prefix", d.DeadLetter.KeyPrefix, "key prefix for failed rows")
	fs.Int32Var(&d.RowsPerChunk, "api-rows-per-chunk", d.RowsPerChunk, "rows per chunk when a request has no chunk_size")
	fs.Int32Var(&d.BatchSize, "api-batch-size", d.BatchSize, "Pinecone batch size when a request has no batch_size")
	fs.Int32Var(&d.Parallelism, "api-parallelism", d.Parallelism, "chunk Jobs at once for API-created ingestions")
	fs.Int32Var(&d.RequestsPerMinute, "api-requests-per-minute", d.RequestsPerMinute, "OpenAI request budget of API-created ingestions")
	fs.StringVar(&d.Sanitize, "api-sanitize", d.Sanitize, "text sanitizer of API-created ingestions (none, basic, legacy)")
}

// addShim runs the HTTP shim on every replica (not only the leader): health must answer
// everywhere, and the API only reads the cache and writes resources.
func addShim(ctx context.Context, mgr manager.Manager, cfg *rest.Config, o Options, tables *tracking.Tables) error {
	so := o.Shim
	readyz, err := shim.APIServerReadyz(cfg)
	if err != nil {
		return err
	}
	conf := shim.Config{
		Addr:             so.Addr,
		APIEnabled:       so.APIEnabled,
		RateLimit:        shim.RateLimit{PerKey: shim.Bucket{Rate: so.PerKeyRate, Burst: so.PerKeyBurst}, PerClient: shim.Bucket{Rate: so.PerClientRate, Burst: so.PerClientBurst}},
		ForwardedForHops: so.ForwardedForHops,
		MaxBodyBytes:     so.MaxBodyBytes,
		MaxConnections:   so.MaxConnections,
		Defaults:         so.Defaults,
		Environment:      so.Environment,
		KeyNamespaces:    keyDefaultNamespaces(so),
		WatchNamespaces:  watched(o.WatchNamespaces),
	}
	if def := keyDefaultNamespaces(so); len(def) > 0 {
		if _, err := apikeys.ParseNamespaces(strings.Join(def, ",")); err != nil {
			return fmt.Errorf("--api-key-default-namespaces: %w", err)
		}
	}
	var writeKeys, readKeys apikeys.Source
	if so.APIKeysPath != "" {
		writeKeys = apikeys.FromPath(so.APIKeysPath, true)
	}
	if so.ReadKeysPath != "" {
		readKeys = apikeys.FromPath(so.ReadKeysPath, false)
	}
	// Keys are checked now (length, namespaces entries), so a bad key Secret stops the start
	// with the reason instead of failing every request later.
	for _, src := range []apikeys.Source{writeKeys, readKeys} {
		if src == nil {
			continue
		}
		if _, err := src(ctx); err != nil {
			return fmt.Errorf("API keys: %w", err)
		}
	}
	if so.APIEnabled {
		if so.APIKeysPath == "" {
			return fmt.Errorf("--api-keys-path is required with the task API (or --api-enabled=false)")
		}
		conf.APIKeys = writeKeys
		conf.ReadOnlyKeys = readKeys
	}
	deps := shim.Deps{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		CacheSynced: func(ctx context.Context) bool {
			c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			return mgr.GetCache().WaitForCacheSync(c)
		},
		APIServerCheck: readyz,
		Log:            ctrl.Log.WithName("shim"),
		Version:        version.Version,
	}
	if tables != nil && so.Defaults.DynamoDB.Table != "" {
		tc, err := tables.Client(ctx, &so.Defaults.DynamoDB)
		if err != nil {
			return fmt.Errorf("task table for the API: %w", err)
		}
		deps.Tasks = tc
	}
	if so.UIEnabled {
		ui, err := newUI(ctx, mgr, so, watched(o.WatchNamespaces), o.LeaderElectionNamespace, writeKeys, readKeys)
		if err != nil {
			return err
		}
		deps.UI = ui.Handler()
	}
	srv, err := shim.New(conf, deps)
	if err != nil {
		return fmt.Errorf("http shim: %w", err)
	}
	return mgr.Add(srv) // the shim runs on every replica (NeedLeaderElection is false)
}

// newUI builds the web UI on the manager's cache and adds it to the manager (for its informer
// hooks). Without any key the UI still answers, saying that no key is configured.
func newUI(ctx context.Context, mgr manager.Manager, so ShimOptions, watch []string, leNamespace string, writeKeys, readKeys apikeys.Source) (*webui.Server, error) {
	if o := so.UIPublicOrigin; o != "" {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("--ui-public-origin %q: want scheme://host[:port], e.g. https://ingest.example.com", o)
		}
	}
	log := ctrl.Log.WithName("webui")
	var keys apikeys.Source
	if writeKeys != nil || readKeys != nil {
		keys = apikeys.Join(writeKeys, readKeys)
	} else {
		log.Info("the web UI has no API keys to sign in with: set --api-keys-path and/or --api-read-keys-path, or --ui-enabled=false")
	}
	def := keyDefaultNamespaces(so)
	if len(def) == 0 {
		log.Info("keys without a <name>.namespaces entry see no namespace in the web UI: set --api-key-default-namespaces or --api-namespace")
	}
	if err := webui.RegisterIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return nil, err
	}
	ui, err := webui.New(webui.Config{Keys: keys, UpdateInterval: so.UIUpdateInterval, DefaultNamespaces: def,
		MaxStreams: so.UIMaxStreams, MaxStreamsPerKey: so.UIMaxStreamsPerKey, WatchNamespaces: watch,
		SessionTTL: so.UISessionTTL, PublicOrigin: so.UIPublicOrigin}, webui.Deps{
		Revocations: revocations(mgr, leNamespace, log),
		Reader:      mgr.GetClient(),
		Writer:      mgr.GetClient(),
		Informers:   mgr.GetCache(),
		Recorder:    mgr.GetEventRecorder("vectordb-operator"),
		Log:         ctrl.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("web ui: %w", err)
	}
	if err := mgr.Add(ui); err != nil {
		return nil, fmt.Errorf("web ui: %w", err)
	}
	return ui, nil
}

// keyDefaultNamespaces is the scope of a key that names none: --api-key-default-namespaces, else
// the API's namespace.
func keyDefaultNamespaces(so ShimOptions) []string {
	var out []string
	for _, n := range so.KeyDefaultNamespaces {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	if len(out) == 0 && so.Defaults.Namespace != "" {
		out = []string{so.Defaults.Namespace}
	}
	return out
}

// watched is --watch-namespaces without blanks; nil for every namespace.
func watched(ns []string) []string {
	var out []string
	for _, n := range ns {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// revocationLease names the Lease whose annotation lists signed-out web UI sessions.
const revocationLease = "vectordb-operator-ui-sessions"

// revocations shares signed-out sessions between replicas through a Lease in the manager's own
// namespace (--leader-election-namespace, else the pod's); outside a cluster, this process only.
// ownNamespace is ns, or else the namespace of the manager's pod ("" out of a cluster).
func ownNamespace(ns string) string {
	if ns == "" {
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	return ns
}

func revocations(mgr manager.Manager, ns string, log logr.Logger) webui.Revocations {
	if ns = ownNamespace(ns); ns == "" {
		log.Info("web UI sign-outs are kept by this process only (no namespace for the sessions Lease: set --leader-election-namespace)")
		return nil
	}
	return webui.LeaseRevocations(mgr.GetAPIReader(), mgr.GetClient(), ns, revocationLease, 2*time.Second)
}
