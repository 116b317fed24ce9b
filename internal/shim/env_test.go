package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// The envtest API server shared by the tests of this package (each uses its own namespace),
// started by the first test that needs it; the test that stops its API server starts its own.
var (
	sharedOnce    sync.Once
	sharedCluster *harness.Cluster
	sharedErr     error
	sharedOwned   bool // started here, so stopped here
)

// sharedKubeconfigEnv passes the shared cluster to fuzz workers: a worker is a child process
// that would otherwise start a cluster of its own, whose processes outlive it when the fuzzing
// engine stops it (and keep the engine waiting on their inherited output).
const sharedKubeconfigEnv = "SHIM_TEST_SHARED_KUBECONFIG"

func testCluster(t testing.TB) *harness.Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		if kc := os.Getenv(sharedKubeconfigEnv); kc != "" {
			sharedCluster, sharedErr = connectCluster(kc)
			return
		}
		sharedCluster, sharedErr = harness.NewCluster(harness.ClusterOptions{})
		sharedOwned = sharedErr == nil
	})
	if sharedErr != nil {
		t.Fatalf("starting the test cluster: %v", sharedErr)
	}
	return sharedCluster
}

// connectCluster uses a running cluster (the fuzzing coordinator's) without owning it.
func connectCluster(kubeconfig string) (*harness.Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", kubeconfig, err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &harness.Cluster{Config: cfg, Client: c, Scheme: scheme, Kubeconfig: kubeconfig}, nil
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedOwned {
		if err := sharedCluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping the test cluster: %v\n", err)
		}
	}
	os.Exit(code)
}

const testKey = "test-key-0123456789"

var nsCounter atomic.Int64

// newNamespace creates a namespace for one test.
func newNamespace(t testing.TB, c client.Client) string {
	t.Helper()
	ns := fmt.Sprintf("shim-%d-%d", os.Getpid()%10000, nsCounter.Add(1))
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatalf("creating namespace %s: %v", ns, err)
	}
	return ns
}

// testDefaults are operator defaults for a namespace.
func testDefaults(ns string) Defaults {
	return Defaults{
		Namespace:           ns,
		Bucket:              "csv-storage",
		S3Region:            "eu-west-1",
		S3Endpoint:          "http://127.0.0.1:9000",
		S3CredentialsSecret: "s3-creds",
		Index:               "clickbid-prod",
		PineconeSecret:      v1alpha1.SecretKeyRef{Name: "pinecone"},
		OpenAISecret:        v1alpha1.SecretKeyRef{Name: "openai", Key: "token"},
		MetabaseURL:         "https://metabase.example.com",
		MetabaseSecret:      v1alpha1.SecretKeyRef{Name: "metabase"},
		DynamoDB:            v1alpha1.DynamoDBTracking{Table: "vectordb-tasks-prod", Endpoint: "http://127.0.0.1:8001"},
		DeadLetter:          v1alpha1.DeadLetterSpec{Bucket: "csv-storage"},
	}
}

// shimEnv is a shim served over real HTTP on loopback, reading through a real informer cache of
// the shared cluster, as in the manager.
type shimEnv struct {
	URL    string
	Server *Server
	NS     string
	// Direct reads and writes the API server without the cache (the test's own view).
	Direct client.Client
	// Cached is the shim's client.
	Cached   client.Client
	stopOnce sync.Once
	stopErr  error
	stopFn   context.CancelFunc
	done     chan error
}

// stop shuts the server down and returns what Serve returned; safe to call more than once.
func (e *shimEnv) stop() error {
	e.stopOnce.Do(func() {
		e.stopFn()
		e.stopErr = <-e.done
	})
	return e.stopErr
}

type envOption func(*Config, *Deps)

// startShim starts a cache and the shim for a new namespace; both stop when the test ends.
func startShim(t testing.TB, c *harness.Cluster, opts ...envOption) *shimEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ns := newNamespace(t, c.Client)
	cached := cachedClient(ctx, t, c, cache.Options{})
	check, err := APIServerReadyz(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Addr:       "127.0.0.1:0",
		APIEnabled: true,
		APIKeys:    StaticKeys(testKey),
		Defaults:   testDefaults(ns),
		// High enough that only the rate-limit tests meet the limits.
		RateLimit:      RateLimit{PerKey: Bucket{Rate: 1000, Burst: 1000}, PerClient: Bucket{Rate: 1000, Burst: 1000}},
		HealthCacheTTL: time.Nanosecond,
	}
	deps := Deps{
		Client:         cached.client,
		APIReader:      c.Client,
		CacheSynced:    cached.synced,
		APIServerCheck: check,
		Log:            testr.NewWithInterface(t, testr.Options{}),
		Version:        "v0.0.0-test",
	}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	e := &shimEnv{URL: "http://" + ln.Addr().String(), Server: srv, NS: ns, Direct: c.Client, Cached: cached.client, stopFn: stop, done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

type cachedReader struct {
	client client.Client
	synced func(ctx context.Context) bool
}

// cachedClient is a client reading through a started informer cache, like the manager's.
func cachedClient(ctx context.Context, t testing.TB, c *harness.Cluster, opts cache.Options) cachedReader {
	t.Helper()
	opts.Scheme = c.Scheme
	ca, err := cache.New(c.Config, opts)
	if err != nil {
		t.Fatalf("cache: %v", err)
	}
	if err := RegisterIndexes(ctx, ca); err != nil {
		t.Fatal(err)
	}
	go func() { _ = ca.Start(ctx) }()
	cl, err := client.New(c.Config, client.Options{Scheme: c.Scheme, Cache: &client.CacheOptions{Reader: ca}})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return cachedReader{client: cl, synced: func(ctx context.Context) bool { return ca.WaitForCacheSync(ctx) }}
}

// response is a decoded HTTP answer.
type response struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.Body, err)
	}
}

func (r response) detail(t testing.TB) string {
	t.Helper()
	var b struct {
		Detail string `json:"detail"`
	}
	r.json(t, &b)
	return b.Detail
}

// fieldLocs is the "body.x"/"query.x" names of a 422's errors.
func (r response) fieldLocs(t testing.TB) []string {
	t.Helper()
	var b validationBody
	r.json(t, &b)
	var out []string
	for _, e := range b.Detail {
		out = append(out, strings.Join(e.Loc, "."))
	}
	return out
}

// do sends a request; key "" sends no X-API-Key.
func do(t testing.TB, method, url, key string, body any) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return response{Code: resp.StatusCode, Header: resp.Header, Body: b}
}

// eventually polls f until it returns nil, failing with its last error after a generous deadline
// (a bound on waiting, not a timing assertion).
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
