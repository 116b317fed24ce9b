package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// The tests that need Kubernetes share one real API server (envtest); each uses its own namespace.
var cluster *harness.Cluster

func TestMain(m *testing.M) {
	var err error
	if cluster, err = harness.NewCluster(harness.ClusterOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, "start cluster:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := cluster.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop cluster:", err)
	}
	os.Exit(code)
}

const (
	readKey  = "read-key-value-7f3a"
	writeKey = "write-key-value-91c2"
)

// testKeys is a read-only key named "analyst" and a read-write key named "operator"; swap replaces
// them (rotation) while the server runs.
type testKeys struct{ keys atomic.Pointer[[]apikeys.Key] }

func newTestKeys() *testKeys {
	k := &testKeys{}
	k.set([]apikeys.Key{{Name: "analyst", Value: readKey}, {Name: "operator", Value: writeKey, Write: true}})
	return k
}
func (k *testKeys) set(ks []apikeys.Key) { k.keys.Store(&ks) }
func (k *testKeys) source() apikeys.Source {
	return func(context.Context) ([]apikeys.Key, error) { return *k.keys.Load(), nil }
}

type env struct {
	URL  string
	UI   *Server
	Keys *testKeys
	NS   string
	// Other is a second namespace in the cache, outside the default scope of the test keys.
	Other string
	// Direct reads and writes the API server without the cache.
	Direct client.Client
}

var nsN atomic.Int64

// startUI runs the UI as the manager does: a controller-runtime manager's cache (events about
// CsvIngestions only), client and event recorder, the UI added as a runnable, served over HTTP.
func startUI(t *testing.T, cfg Config) *env {
	t.Helper()
	return startUIServer(t, cfg, 0)
}

// startUIServer is startUI behind an HTTP server with read and write timeouts (0: none), as the
// shim's server has for ordinary requests.
func startUIServer(t *testing.T, cfg Config, serverTimeout time.Duration, mods ...func(*Deps)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := nsN.Add(1)
	ns, other := fmt.Sprintf("webui-%d", n), fmt.Sprintf("webui-%d-other", n)
	for _, name := range []string{ns, other} {
		if err := cluster.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.DefaultNamespaces == nil {
		cfg.DefaultNamespaces = []string{ns}
	}
	mgr, err := ctrl.NewManager(cluster.Config, ctrl.Options{
		Scheme: cluster.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{ns: {}, other: {}},
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Event{}: {Field: fields.OneTermEqualSelector("involvedObject.kind", "CsvIngestion")},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := RegisterIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	keys := newTestKeys()
	if cfg.Keys == nil {
		cfg.Keys = keys.source()
	}
	deps := Deps{Reader: mgr.GetClient(), Writer: mgr.GetClient(), Informers: mgr.GetCache(),
		Recorder: mgr.GetEventRecorder("vectordb-operator"), Log: testr.New(t)}
	for _, m := range mods {
		m(&deps)
	}
	ui, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(ui); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	srv := httptest.NewUnstartedServer(ui.Handler())
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = serverTimeout, serverTimeout
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return &env{URL: srv.URL, UI: ui, Keys: keys, NS: ns, Other: other, Direct: cluster.Client}
}

// browser is an HTTP client with a cookie jar, as a browser tab.
type browser struct {
	t   *testing.T
	e   *env
	hc  *http.Client
	csr bool // send the CSRF header
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, e: e, hc: &http.Client{Jar: jar, Timeout: 20 * time.Second}, csr: true}
}

type reply struct {
	Code   int
	Body   string
	Header http.Header
}

func (b *browser) do(method, path string, body any, hdr map[string]string) reply {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = strings.NewReader(string(j))
	}
	req, err := http.NewRequest(method, b.e.URL+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if b.csr {
		req.Header.Set(csrfHeader, "1")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(out), resp.Header}
}

func (b *browser) login(key string) reply {
	b.t.Helper()
	return b.do(http.MethodPost, "/ui/api/login", map[string]string{"key": key}, nil)
}

// sse reads a Server-Sent Events stream.
type sse struct {
	resp *http.Response
	sc   *bufio.Scanner
}

type sseEvent struct {
	Name string
	Data string
}

func (b *browser) stream(path string) *sse {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.URL+path, nil)
	hc := &http.Client{Jar: b.hc.Jar} // no timeout: the stream is long-lived
	resp, err := hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b.t.Fatalf("stream %s: %d %s", path, resp.StatusCode, body)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &sse{resp: resp, sc: sc}
}

// next returns the next event (comments skipped), or an error when the stream ends.
func (s *sse) next() (sseEvent, error) {
	var ev sseEvent
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "" && ev.Name != "":
			return ev, nil
		case strings.HasPrefix(line, "event: "):
			ev.Name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.Data = strings.TrimPrefix(line, "data: ")
		}
	}
	if err := s.sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.EOF
}

func (s *sse) close() { s.resp.Body.Close() }

// ingestion is a valid CsvIngestion in ns.
func ingestion(ns, name string) *v1alpha1.CsvIngestion {
	return &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: "csv-storage", Key: "exports/q239.csv",
				S3Connection: v1alpha1.S3Connection{Region: "us-east-1", Endpoint: "http://minio:9000",
					CredentialsSecretRef: &v1alpha1.S3CredentialsSecretRef{Name: "s3-creds"}}}},
			Mapping:   v1alpha1.MappingSpec{IDColumn: "id", TextColumn: "formatted_text"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai", Key: "api-key"}},
			Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "clickbid-prod", Namespace: "v2",
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "pinecone", Key: "api-key"}}},
			DeadLetter: &v1alpha1.DeadLetterSpec{Bucket: "csv-storage", KeyPrefix: "failed/"},
			Chunking:   v1alpha1.ChunkingSpec{RowsPerChunk: 1000, Parallelism: 2, ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute}},
		},
	}
}

// running sets obj's status to a run in progress with the given rows processed.
func setRunning(t *testing.T, c client.Client, obj *v1alpha1.CsvIngestion, processed int64) {
	t.Helper()
	start := metav1.NewTime(time.Now().Add(-time.Minute))
	obj.Status = v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, TaskID: "task-" + obj.Name,
		StartTime: &start, Records: v1alpha1.RecordCounts{Total: 10000, Processed: processed, Failed: 3},
		Chunks:          v1alpha1.ChunkCounts{Total: 10, Succeeded: int32(processed / 1000), Failed: 1, Active: 2},
		CompletedChunks: "0-1", FailedChunkIndexes: "7",
		FailedChunks: []v1alpha1.FailedChunk{{Index: 7, Rows: "7000-7999", Reason: "Unauthorized", Message: "OpenAI returned 401"}},
		Estimate:     &v1alpha1.Estimate{Tokens: 500000, Requests: 250, CostUSD: "0.01"},
		Usage:        &v1alpha1.Usage{Tokens: 100000, Requests: 50, VectorsUpserted: processed},
		Conditions: []metav1.Condition{{Type: v1alpha1.ConditionPlanned, Status: metav1.ConditionTrue, Reason: "Planned",
			Message: "10 chunks", LastTransitionTime: start}},
	}
	if err := c.Status().Update(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %v", what, err)
}
