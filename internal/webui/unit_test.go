package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func TestProgress(t *testing.T) {
	t0 := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name            string
		st              v1alpha1.CsvIngestionStatus
		start, end      time.Time
		frac, rate, eta float64
	}{
		{"not started", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhasePending}, time.Time{}, t0, 0, 0, -1},
		{"chunks before rows are known", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks,
			Chunks: v1alpha1.ChunkCounts{Total: 4, Succeeded: 1}}, t0, t0.Add(time.Minute), 0.25, 0, -1},
		{"half way at 100 rows/s", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks,
			Records: v1alpha1.RecordCounts{Total: 2000, Processed: 900, Failed: 50, Skipped: 50}}, t0, t0.Add(10 * time.Second), 0.5, 100, 10},
		{"finished: no ETA", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseCompleted,
			Records: v1alpha1.RecordCounts{Total: 1000, Processed: 1000}}, t0, t0.Add(20 * time.Second), 1, 50, -1},
		{"failed part way", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseFailed,
			Records: v1alpha1.RecordCounts{Total: 1000, Processed: 100}}, t0, t0.Add(10 * time.Second), 0.1, 10, -1},
		{"clock skew: end before start", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks,
			Records: v1alpha1.RecordCounts{Total: 1000, Processed: 100}}, t0, t0.Add(-time.Second), 0.1, 0, -1},
		{"counts past the total are capped", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks,
			Records: v1alpha1.RecordCounts{Total: 10, Processed: 20}}, t0, t0.Add(time.Second), 1, 20, -1},
	} {
		frac, rate, eta := progress(&tc.st, tc.st.Phase.Terminal(), tc.start, tc.end)
		if math.Abs(frac-tc.frac) > 1e-9 || math.Abs(rate-tc.rate) > 1e-9 || math.Abs(eta-tc.eta) > 1e-9 {
			t.Errorf("%s: progress %v, rate %v, eta %v; want %v, %v, %v", tc.name, frac, rate, eta, tc.frac, tc.rate, tc.eta)
		}
	}
}

func TestPlanAction(t *testing.T) {
	obj := func(phase v1alpha1.Phase, suspend, cancel bool) *v1alpha1.CsvIngestion {
		o := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
		o.Status.Phase, o.Spec.Suspend, o.Spec.Cancel = phase, suspend, cancel
		return o
	}
	run := v1alpha1.PhaseProcessingChunks
	for _, tc := range []struct {
		action string
		obj    *v1alpha1.CsvIngestion
		patch  string
		code   int
	}{
		{"suspend", obj(run, false, false), `{"spec":{"suspend":true}}`, 0},
		{"suspend", obj("", false, false), `{"spec":{"suspend":true}}`, 0}, // not yet reconciled
		{"suspend", obj(run, true, false), "", http.StatusConflict},
		{"resume", obj(run, true, false), `{"spec":{"suspend":false}}`, 0},
		{"resume", obj(run, false, false), "", http.StatusConflict},
		{"cancel", obj(run, false, false), `{"spec":{"cancel":true}}`, 0},
		{"cancel", obj(run, true, false), `{"spec":{"cancel":true}}`, 0}, // a suspended run can be cancelled
		{"cancel", obj(run, false, true), "", http.StatusConflict},
		{"resume", obj(run, true, true), "", http.StatusConflict},
		{"cancel", obj(v1alpha1.PhaseCompleted, false, false), "", http.StatusConflict},
		{"suspend", obj(v1alpha1.PhaseFailed, false, false), "", http.StatusConflict},
		{"delete", obj(run, false, false), "", http.StatusNotFound},
	} {
		p := planAction(tc.action, tc.obj)
		if p.patch != tc.patch || p.code != tc.code || (p.code != 0) != (p.msg != "") {
			t.Errorf("%s on %+v/%+v: %+v; want patch %s code %d", tc.action, tc.obj.Spec, tc.obj.Status.Phase, p, tc.patch, tc.code)
		}
	}
}

func TestSafeURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"http://minio:9000":                  "http://minio:9000",
		"https://user:pw@host.example/v1":    "https://host.example/v1",
		"https://host/v1?api_key=abc#frag":   "https://host/v1",
		"https://only-user@host":             "https://host",
		"http://[::1]:namedport/bad\x7f":     "(unparsable URL)",
		"https://host/path%2Fwith%2Fescapes": "https://host/path%2Fwith%2Fescapes",
	} {
		if got := safeURL(in); got != want {
			t.Errorf("safeURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSessionCookie(t *testing.T) {
	now := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	rw := apikeys.Key{Name: "ops.team", Value: "v-rw", Write: true}
	ro := apikeys.Key{Name: "analyst", Value: "v-ro"}
	keys := []apikeys.Key{rw, ro}
	const sid, otherSID = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	good := makeSession(rw, now.Add(time.Hour), sid)
	for _, tc := range []struct {
		name   string
		cookie string
		keys   []apikeys.Key
		now    time.Time
		want   string
	}{
		{"valid", good, keys, now, "ops.team"},
		{"read-only", makeSession(ro, now.Add(time.Hour), otherSID), keys, now, "analyst"},
		{"session id swapped", strings.Replace(good, sid, otherSID, 1), keys, now, ""},
		{"no session id (the old form)", strings.Replace(good, "."+sid, "", 1), keys, now, ""},
		{"expired", good, keys, now.Add(time.Hour), ""},
		{"key rotated (same name, new value)", good, []apikeys.Key{{Name: "ops.team", Value: "v-new", Write: true}}, now, ""},
		{"key removed", good, []apikeys.Key{ro}, now, ""},
		{"expiry extended by hand", strings.Replace(good, fmt.Sprint(now.Add(time.Hour).Unix()), fmt.Sprint(now.Add(99*time.Hour).Unix()), 1), keys, now, ""},
		{"another key's name", strings.Replace(good, "b3BzLnRlYW0", "YW5hbHlzdA", 1), keys, now, ""},
		{"garbage", "a.b", keys, now, ""},
		{"empty", "", keys, now, ""},
	} {
		k, _, _, ok := checkSession(tc.cookie, tc.keys, tc.now)
		if got := map[bool]string{true: k.Name, false: ""}[ok]; got != tc.want {
			t.Errorf("%s: %q (ok %v), want %q", tc.name, got, ok, tc.want)
		}
	}
	if strings.Contains(good, "v-rw") {
		t.Errorf("the cookie holds the key: %s", good)
	}
}

func TestSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hdr    map[string]string
		ok     bool
		public string
	}{
		{"UI header only", map[string]string{csrfHeader: "1"}, true, ""},
		{"same origin", map[string]string{csrfHeader: "1", "Origin": "http://ui.example:8000", "Sec-Fetch-Site": "same-origin"}, true, ""},
		{"no UI header", map[string]string{"Origin": "http://ui.example:8000"}, false, ""},
		{"other origin", map[string]string{csrfHeader: "1", "Origin": "http://evil.example"}, false, ""},
		{"same site but not same origin", map[string]string{csrfHeader: "1", "Sec-Fetch-Site": "same-site"}, false, ""},
		{"null origin", map[string]string{csrfHeader: "1", "Origin": "null"}, false, ""},
		// Behind a proxy that rewrites Host, the public origin is what the browser sends.
		{"public origin", map[string]string{csrfHeader: "1", "Origin": "https://ingest.example.com"}, true, "https://ingest.example.com"},
		{"public origin, other scheme", map[string]string{csrfHeader: "1", "Origin": "http://ingest.example.com"}, false, "https://ingest.example.com"},
		{"the internal host is no longer enough", map[string]string{csrfHeader: "1", "Origin": "http://ui.example:8000"}, false, "https://ingest.example.com"},
	} {
		r := httptest.NewRequest(http.MethodPost, "http://ui.example:8000/ui/api/login", nil)
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		if why := sameOrigin(r, tc.public); (why == "") != tc.ok {
			t.Errorf("%s: %q, want ok %v", tc.name, why, tc.ok)
		}
	}
}

// The hub never blocks a publisher, merges repeated changes of one key, filters by subscription,
// and past maxDirty keys asks for a full snapshot instead of growing.
func TestHubCoalescesAndBounds(t *testing.T) {
	h := newHub()
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	h.publish(a, changeIngestion) // nobody listens: forgotten
	if p, _ := h.takePending(); p != nil {
		t.Errorf("a change with no stream open was kept: %v", p)
	}
	list := h.subscribe(nil, func(ns string) bool { return ns == "ns" })
	one := h.subscribe(&a, nil)
	for i := 0; i < 1000; i++ {
		h.publish(a, changeIngestion) // nobody reads: must not block
	}
	h.publish(types.NamespacedName{Namespace: "ns", Name: "b"}, changeIngestion)
	h.publish(a, changeJobs)
	p, subs := h.takePending()
	if len(p) != 2 || p[a] != changeIngestion|changeJobs || len(subs) != 2 {
		t.Errorf("pending %v for %d streams; want a (ingestion and jobs) and b, for 2", p, len(subs))
	}
	if p, _ := h.takePending(); p != nil {
		t.Errorf("taken twice: %v", p)
	}

	// A list stream keeps its pushes in order, up to maxQueued; past it, a resync instead.
	list.push(frame{event: "changes", data: []byte("1")})
	list.push(frame{event: "changes", data: []byte("2")})
	if len(list.wake) != 1 {
		t.Errorf("wake-ups pending: %d, want 1", len(list.wake))
	}
	if fs, resync := list.take(); resync || len(fs) != 2 || string(fs[1].data) != "2" {
		t.Errorf("took %v (resync %v)", fs, resync)
	}
	for i := 0; i <= maxQueued; i++ {
		list.push(frame{event: "changes", data: []byte("x")})
	}
	if fs, resync := list.take(); !resync || len(fs) != 0 {
		t.Errorf("past %d pushes: %d frames, resync %v; want a resync", maxQueued, len(fs), resync)
	}
	// A detail stream keeps only the newest state.
	one.set(frame{event: "detail", data: []byte("old")})
	one.set(frame{event: "detail", data: []byte("new")})
	if fs, _ := one.take(); len(fs) != 1 || string(fs[0].data) != "new" {
		t.Errorf("detail took %v, want only the newest", fs)
	}
	h.unsubscribe(list)
	h.unsubscribe(one)
	if h.subscribers() != 0 {
		t.Errorf("%d subscribers left", h.subscribers())
	}
}

// One flush builds each changed ingestion's detail once however many pages watch it, and gives
// each list stream only the rows of its namespaces.
func TestFlushComputesOncePerChange(t *testing.T) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	mine, theirs := ingestion("ns-a", "mine"), ingestion("ns-b", "theirs")
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(mine, theirs).
		WithIndex(&corev1.Event{}, IndexEventUID, func(o client.Object) []string { return []string{string(o.(*corev1.Event).InvolvedObject.UID)} }).
		Build()
	s, err := New(Config{}, Deps{Reader: cl, Writer: cl, Recorder: events.NewFakeRecorder(1)})
	if err != nil {
		t.Fatal(err)
	}
	ka, kb := types.NamespacedName{Namespace: "ns-a", Name: "mine"}, types.NamespacedName{Namespace: "ns-b", Name: "theirs"}
	var pages []*sub
	for range 5 {
		pages = append(pages, s.hub.subscribe(&ka, nil))
	}
	listA := s.hub.subscribe(nil, func(ns string) bool { return ns == "ns-a" })
	listAll := s.hub.subscribe(nil, func(string) bool { return true })
	s.hub.publish(ka, changeIngestion)
	s.hub.publish(kb, changeIngestion)
	s.hub.publish(types.NamespacedName{Namespace: "ns-a", Name: "deleted"}, changeIngestion)
	s.flush(context.Background())
	if n := s.detailComputes.Load(); n != 1 {
		t.Errorf("%d details built for 5 pages of one changed ingestion, want 1", n)
	}
	for i, p := range pages {
		if fs, _ := p.take(); len(fs) != 1 || fs[0].event != "detail" || !strings.Contains(string(fs[0].data), `"name":"mine"`) {
			t.Errorf("page %d got %v", i, fs)
		}
	}
	fs, _ := listA.take()
	if len(fs) != 1 || !strings.Contains(string(fs[0].data), `"name":"mine"`) || strings.Contains(string(fs[0].data), "theirs") ||
		!strings.Contains(string(fs[0].data), `"delete":["ns-a/deleted"]`) {
		t.Errorf("the list of ns-a got %v", fs)
	}
	if fs, _ := listAll.take(); len(fs) != 1 || !strings.Contains(string(fs[0].data), "theirs") {
		t.Errorf("the cluster-wide list got %v", fs)
	}
}

func TestRunningChunksAndEvents(t *testing.T) {
	job := func(idx string, role string, done bool, suspended bool) batchv1.Job {
		j := batchv1.Job{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{worker.LabelRole: role, worker.LabelChunk: idx}}}
		if done {
			j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		}
		j.Spec.Suspend = ptr.To(suspended)
		return j
	}
	got := running([]batchv1.Job{job("3", worker.RoleChunk, false, false), job("1", worker.RoleChunk, false, false),
		job("2", worker.RoleChunk, true, false), job("4", worker.RoleChunk, false, true), job("x", worker.RoleChunk, false, false),
		job("", worker.RolePlan, false, false)}, &v1alpha1.CsvIngestionStatus{})
	if fmt.Sprint(got) != "[1 3]" {
		t.Errorf("running %v, want [1 3]", got)
	}
	t0 := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	evs := []corev1.Event{
		{Reason: "Old", LastTimestamp: metav1.NewTime(t0)},
		{Reason: "Series", EventTime: metav1.NewMicroTime(t0.Add(time.Second)), Series: &corev1.EventSeries{Count: 5, LastObservedTime: metav1.NewMicroTime(t0.Add(3 * time.Second))}},
		{Reason: "New", EventTime: metav1.NewMicroTime(t0.Add(2 * time.Second))},
	}
	v := eventViews(evs, 2)
	if len(v) != 2 || v[0].Reason != "Series" || v[0].Count != 5 || v[1].Reason != "New" || v[1].Count != 1 {
		t.Errorf("events %+v", v)
	}
}

// The deletions of spec.sync.deleteMissing are shown for the runs that ask for them.
func TestSummaryShowsDeletions(t *testing.T) {
	for _, tc := range []struct {
		name        string
		sync        *v1alpha1.SyncSpec
		deleted     int64
		wantDeletes bool
	}{
		{"no sync", nil, 0, false},
		{"incremental without deletions", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental}, 0, false},
		{"deleteMissing, nothing deleted yet", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true}, 0, true},
		{"deleteMissing, 500 deleted", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true}, 500, true},
	} {
		o := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
		o.Spec.Sync = tc.sync
		o.Status.Records.Deleted = tc.deleted
		s := summarize(o, time.Now())
		if s.DeletesMissing != tc.wantDeletes || s.VectorsDeleted != tc.deleted {
			t.Errorf("%s: deletesMissing %v, vectorsDeleted %d; want %v, %d", tc.name, s.DeletesMissing, s.VectorsDeleted, tc.wantDeletes, tc.deleted)
		}
	}
}

// A batch-mode run's usage is priced at the Batch API's rate, and its estimate carries the batch
// figures to the page.
func TestDetailPricesBatchMode(t *testing.T) {
	for _, tc := range []struct {
		mode, wantCost string
	}{
		{v1alpha1.EmbeddingOnline, "0.02"},
		{v1alpha1.EmbeddingBatch, "0.01"},
	} {
		o := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
		o.Spec.Embedding.Model, o.Spec.Embedding.Mode = "text-embedding-3-small", tc.mode
		o.Status.Usage = &v1alpha1.Usage{Tokens: 1_000_000}
		o.Status.Estimate = &v1alpha1.Estimate{Tokens: 1_000_000, CostUSD: tc.wantCost, Mode: tc.mode, Batches: 3, OnlineCostUSD: "0.02", SavedUSD: "0.01"}
		d := detail(o, nil, nil, time.Now(), 10)
		if d.Usage == nil || d.Usage.CostUSD != tc.wantCost {
			t.Errorf("%s: usage %+v, want cost %s", tc.mode, d.Usage, tc.wantCost)
		}
		if e := d.Estimate; e == nil || e.Mode != tc.mode || e.Batches != 3 || e.SavedUSD != "0.01" || e.OnlineCostUSD != "0.02" {
			t.Errorf("%s: estimate %+v", tc.mode, e)
		}
		if d.Batch != nil {
			t.Errorf("%s: batch counts without status.batch: %+v", tc.mode, d.Batch)
		}
	}
}

// status.batch reaches the page whole, and its JSON names are the ones app.js reads.
func TestDetailShowsBatchCounts(t *testing.T) {
	o := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
	o.Spec.Embedding.Mode = v1alpha1.EmbeddingBatch
	o.Status.Batch = &v1alpha1.BatchStatus{Batches: 9, Validating: 1, InProgress: 2, Finalizing: 1, Completed: 2, Failed: 1, Expired: 1,
		Cancelled: 1, Lines: 4000, LinesDone: 2500, LinesFailed: 30}
	d := detail(o, nil, nil, time.Now(), 10)
	want := BatchView{Batches: 9, Validating: 1, InProgress: 2, Finalizing: 1, Completed: 2, Failed: 1, Expired: 1, Cancelled: 1,
		Lines: 4000, LinesDone: 2500, LinesFailed: 30}
	if d.Batch == nil || *d.Batch != want {
		t.Fatalf("batch view %+v, want %+v", d.Batch, want)
	}
	raw, err := json.Marshal(d.Batch)
	if err != nil {
		t.Fatal(err)
	}
	js, err := assetFS.ReadFile("assets/app.js")
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for name := range fields {
		if !strings.Contains(string(js), "b."+name) {
			t.Errorf("app.js does not show the batch field %q", name)
		}
	}
}
