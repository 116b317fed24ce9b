package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/webui"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	scaleIngestions = 200
	scaleBigChunks  = 5000
)

// The web UI with 200 ingestions and one of 5,000 chunks, measured in Chromium: time to first
// render, the time from a status change in the API server to the page showing it, and the time
// each push takes to render. The figures are logged (docs/benchmarks.md, "Web UI"); the test
// asserts only that the pages show the right data. The ingestions are written straight to an
// API server of their own with their status set, with no controller, so they stay as written:
// the UI, served the way the manager serves it (a controller-runtime cache, the same package),
// is what is measured.
func TestWebUIScale(t *testing.T) {
	skipShort(t)
	browser := newBrowser(t)
	c, err := harness.NewCluster(harness.ClusterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ns = "scale"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	objs := make([]*v1alpha1.CsvIngestion, 0, scaleIngestions)
	created := time.Now()
	for i := 0; i < scaleIngestions; i++ {
		o := st.LegacyIngestion(ns, fmt.Sprintf("q%03d", i), "exports/q.csv")
		if err := c.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		chunks := int32(20)
		if i == 0 {
			chunks = scaleBigChunks
		}
		start := metav1.NewTime(time.Now().Add(-time.Duration(i+1) * time.Minute))
		o.Status = v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, TaskID: fmt.Sprintf("task-%03d", i), StartTime: &start,
			Chunks:  v1alpha1.ChunkCounts{Total: chunks, Succeeded: chunks / 2, Failed: 1, Active: 4, Pending: chunks/2 - 5},
			Records: v1alpha1.RecordCounts{Total: int64(chunks) * 1000, Processed: int64(chunks/2) * 1000, Failed: 1000},
			// Every other chunk done: the worst case for the compact ranges.
			CompletedChunks: alternate(int(chunks)), FailedChunkIndexes: fmt.Sprint(chunks - 1),
			FailedChunks: []v1alpha1.FailedChunk{{Index: chunks - 1, Rows: "x", Reason: "Unauthorized", Message: "OpenAI returned 401"}},
		}
		if i == 0 {
			o.Status.CompletedChunks = fmt.Sprintf("0-%d", chunks/2-1)
		}
		if err := c.Client.Status().Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	t.Logf("%d ingestions created with their status in %s", scaleIngestions, time.Since(created).Round(time.Millisecond))

	base := serveUI(t, ctx, c, ns)
	signIn(t, browser, base, "scale-key")

	// Time to first render: a fresh load of the list (signed in), then of the big ingestion.
	run(t, browser, "reload the list", chromedp.Navigate(base+"/ui/"))
	waitJS(t, browser, "200 rows", fmt.Sprintf(`document.querySelectorAll('#list-body tr').length === %d && window.__uiMetrics.firstRender !== null`, scaleIngestions), time.Minute)
	listFirst := eval[float64](t, browser, `window.__uiMetrics.firstRender`)
	if got := eval[string](t, browser, rowJS(ns+"/q007", `tr.cells[10].textContent`)); got != "task-007" {
		t.Errorf("row q007 task id %q", got)
	}

	// Update latency on the list: change one ingestion's processed rows, time until the page
	// shows it (both clocks are this machine's).
	var listLat []float64
	for i := 0; i < 10; i++ {
		o := objs[1+i*17]
		want := o.Status.Records.Processed + int64(i+1)
		o.Status.Records.Processed = want
		t0 := time.Now()
		if err := c.Client.Status().Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		key := jsString(ns + "/" + o.Name)
		waitJS(t, browser, "the list shows "+o.Name, fmt.Sprintf(`(window.__uiMetrics.listUpdates[%s] || {}).processed === %d`, key, want), 30*time.Second)
		at := eval[float64](t, browser, fmt.Sprintf(`window.__uiMetrics.listUpdates[%s].at`, key))
		listLat = append(listLat, at-float64(t0.UnixNano())/1e6)
	}
	listRender := eval[[]float64](t, browser, `window.__uiMetrics.renderMs`)

	run(t, browser, "leave", chromedp.Navigate("about:blank"))
	run(t, browser, "open the big one", chromedp.Navigate(base+"/ui/#/i/"+ns+"/q000"))
	waitJS(t, browser, "the 5,000-cell grid", fmt.Sprintf(`document.getElementById('grid').childElementCount === %d && document.querySelectorAll('#grid i.c').length === %d && window.__uiMetrics.firstRender !== null`,
		scaleBigChunks, scaleBigChunks/2), time.Minute)
	detailFirst := eval[float64](t, browser, `window.__uiMetrics.firstRender`)
	if n := eval[int](t, browser, `document.querySelectorAll('#grid i.f').length`); n != 1 {
		t.Errorf("%d failed cells, want 1", n)
	}
	screenshot(t, browser, "webui-scale-detail")

	var detailLat []float64
	big := objs[0]
	for i := 1; i <= 10; i++ {
		done := scaleBigChunks/2 + i*100
		big.Status.CompletedChunks = fmt.Sprintf("0-%d", done-1)
		big.Status.Chunks.Succeeded = int32(done)
		t0 := time.Now()
		if err := c.Client.Status().Update(ctx, big); err != nil {
			t.Fatal(err)
		}
		waitJS(t, browser, fmt.Sprintf("%d completed cells", done), fmt.Sprintf(`window.__uiMetrics.detailUpdates.some(u => u.completed === %d)`, done), 30*time.Second)
		at := eval[float64](t, browser, fmt.Sprintf(`window.__uiMetrics.detailUpdates.find(u => u.completed === %d).at`, done))
		detailLat = append(detailLat, at-float64(t0.UnixNano())/1e6)
	}
	detailRender := eval[[]float64](t, browser, `window.__uiMetrics.renderMs`)

	host, _ := os.Hostname()
	t.Logf("machine: %s, %d CPUs (GOMAXPROCS %d), %s; Chromium headless; UI update interval 500ms", host, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS+"/"+runtime.GOARCH)
	t.Logf("list of %d: first render %.0f ms after navigation; update latency %s; render per push %s", scaleIngestions, listFirst, stats(listLat), stats(listRender))
	t.Logf("detail of %d chunks: first render %.0f ms after navigation; update latency %s; render per push %s", scaleBigChunks, detailFirst, stats(detailLat), stats(detailRender))
}

// alternate is "0,2,4,…" below n: every other chunk.
func alternate(n int) string {
	var b strings.Builder
	for i := 0; i < n; i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, i)
	}
	return b.String()
}

func stats(ms []float64) string {
	if len(ms) == 0 {
		return "n/a"
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	return fmt.Sprintf("median %.1f ms, max %.1f ms (n=%d)", s[len(s)/2], s[len(s)-1], len(s))
}

// serveUI serves the web UI for ns of c as the manager does, with one read-write key "scale-key".
func serveUI(t *testing.T, ctx context.Context, c *harness.Cluster, ns string) string {
	t.Helper()
	mgr, err := ctrl.NewManager(c.Config, ctrl.Options{
		Scheme: c.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}, ByObject: map[client.Object]cache.ByObject{
			&corev1.Event{}: {Field: fields.OneTermEqualSelector("involvedObject.kind", "CsvIngestion")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := webui.RegisterIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		t.Fatal(err)
	}
	ui, err := webui.New(webui.Config{Keys: apikeys.Static(apikeys.Key{Name: "scale", Value: "scale-key", Write: true, Namespaces: []string{ns}})},
		webui.Deps{Reader: mgr.GetClient(), Writer: mgr.GetClient(), Informers: mgr.GetCache(),
			Recorder: mgr.GetEventRecorder("vectordb-operator"), Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(ui); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	srv := httptest.NewServer(ui.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections() // the browser's open event streams
		srv.Close()
	})
	return srv.URL
}
