package manager

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/shim"
	"github.com/vectordb-io/vectordb-operator/internal/tracking"
	"github.com/vectordb-io/vectordb-operator/internal/version"
)

// ShimOptions configure the HTTP shim (health and the legacy task API).
type ShimOptions struct {
	Addr       string
	APIEnabled bool
	// APIKeysPath is a file (one key per line) or a directory (every file one key: a mounted
	// Secret). It is re-read as it changes, so keys rotate without a restart, and the manager
	// never needs RBAC on Secrets.
	APIKeysPath      string
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
		Addr:           ":8000",
		APIEnabled:     true,
		Environment:    "production",
		PerKeyRate:     10,
		PerKeyBurst:    20,
		PerClientRate:  20,
		PerClientBurst: 40,
		MaxBodyBytes:   1 << 20,
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
	fs.StringVar(&o.APIKeysPath, "api-keys-path", o.APIKeysPath, "file (one key a line) or directory (a mounted Secret: each file a key) of accepted X-API-Key values")
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

// fileKeys reads accepted API keys from a file or a mounted Secret directory, re-reading at most
// every few seconds.
func fileKeys(path string) shim.KeySource {
	var (
		mu    sync.Mutex
		keys  []string
		read  time.Time
		cause error
	)
	load := func() ([]string, error) {
		info, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		var raw []string
		if info.IsDir() {
			entries, err := os.ReadDir(path)
			if err != nil {
				return nil, fmt.Errorf("api keys: %w", err)
			}
			for _, e := range entries {
				// Mounted Secrets hold ..data symlinks and dot-dirs; keys are the plain files.
				if strings.HasPrefix(e.Name(), ".") {
					continue
				}
				b, err := os.ReadFile(filepath.Join(path, e.Name()))
				if err != nil {
					continue // a directory entry such as ..data
				}
				raw = append(raw, string(b))
			}
		} else {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("api keys: %w", err)
			}
			raw = strings.Split(string(b), "\n")
		}
		var out []string
		for _, k := range raw {
			if k = strings.TrimSpace(k); k != "" {
				out = append(out, k)
			}
		}
		sort.Strings(out)
		return out, nil
	}
	return func(ctx context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(read) > 5*time.Second {
			keys, cause = load()
			read = time.Now()
		}
		return keys, cause
	}
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
		Defaults:         so.Defaults,
		Environment:      so.Environment,
	}
	if so.APIEnabled {
		if so.APIKeysPath == "" {
			return fmt.Errorf("--api-keys-path is required with the task API (or --api-enabled=false)")
		}
		conf.APIKeys = fileKeys(so.APIKeysPath)
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
	srv, err := shim.New(conf, deps)
	if err != nil {
		return fmt.Errorf("http shim: %w", err)
	}
	return mgr.Add(srv) // the shim runs on every replica (NeedLeaderElection is false)
}
