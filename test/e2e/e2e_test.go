// Package e2e runs the whole product on one machine (test/stack) and checks each scenario by its
// final phase, the exact vectors in the Pinecone fake, the DynamoDB task item and the events.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/poll"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

var st *stack.Stack

// The fake counts tokens as a cheap under-estimate (8 bytes a token) instead of running the
// tokenizer on every input: the embedder under test still counts exactly, so the fake only needs
// a usage figure that never exceeds the real count (its per-request caps then never misfire).
func approxTokens(s string) int { return len(s)/8 + 1 }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	ctx := context.Background()
	quiet := funcr.New(func(prefix, args string) {}, funcr.Options{})
	// In-process controller-runtime parts (the web UI scale test's cache) log here, not as
	// "log.SetLogger(...) was never called" stack dumps in the output.
	ctrllog.SetLogger(quiet)
	var err error
	st, err = stack.Start(ctx, stack.Options{Dimensions: 256, FakeTokenCounter: approxTokens, Log: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start stack:", err)
		os.Exit(1)
	}
	code := m.Run()
	// Any reconcile panic of the manager binary, across its restarts and kills, fails the suite.
	if err := st.CheckReconcilePanics(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		code = 1
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "--- manager log (tail) ---\n"+tail(st.ManagerLog(), 8000))
	}
	st.Stop()
	os.Exit(code)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
}

// scenario prepares a namespace with a generated file uploaded under key.
func scenario(t *testing.T, ns string, o csvgen.Options) (csvgen.Stats, string) {
	t.Helper()
	ctx := context.Background()
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	stats, err := csvgen.Write(&buf, o)
	if err != nil {
		t.Fatal(err)
	}
	key := "exports/" + ns + ".csv"
	if err := st.Upload(ctx, key, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return stats, key
}

func apply(t *testing.T, obj *v1alpha1.CsvIngestion) *v1alpha1.CsvIngestion {
	t.Helper()
	// The scenarios test behaviour, not the budgets (the benchmarks do): budgets far above what
	// the fake serves keep each run short.
	if obj.Spec.Embedding.RequestsPerMinute == 300 {
		obj.Spec.Embedding.RequestsPerMinute = 100000
		obj.Spec.Embedding.TokensPerMinute = 1000000000
	}
	if err := st.Cluster.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create ingestion: %v", err)
	}
	// Every test deletes what it created: a run left going would load the tests after it (its
	// Jobs and pods go with it; its vectors and task item stay, as a user's would).
	t.Cleanup(func() {
		err := st.Cluster.Client.Delete(context.Background(), obj, client.PropagationPolicy(metav1.DeletePropagationBackground))
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete ingestion %s/%s: %v", obj.Namespace, obj.Name, err)
		}
	})
	return obj
}

func get(t *testing.T, obj *v1alpha1.CsvIngestion) *v1alpha1.CsvIngestion {
	t.Helper()
	out := &v1alpha1.CsvIngestion{}
	if err := st.Cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), out); err != nil {
		t.Fatalf("get: %v", err)
	}
	return out
}

func update(t *testing.T, obj *v1alpha1.CsvIngestion, mutate func(*v1alpha1.CsvIngestion)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := get(t, obj)
		mutate(cur)
		return st.Cluster.Client.Update(context.Background(), cur)
	}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
}

// holdsFor checks that cond holds for the whole of d (poll.Holds).
func holdsFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll.Holds(t, what, d, 250*time.Millisecond, cond)
}

func waitTerminal(t *testing.T, obj *v1alpha1.CsvIngestion, timeout time.Duration) *v1alpha1.CsvIngestion {
	t.Helper()
	var cur *v1alpha1.CsvIngestion
	waitFor(t, obj.Name+" terminal", timeout, func() (bool, string) {
		cur = get(t, obj)
		return cur.Status.Phase.Terminal(), fmt.Sprintf("%s %s: %s", cur.Status.Phase, cur.Status.Progress, cur.Status.Message)
	})
	return cur
}

// vectorsFor returns the ids stored for one ingestion (by its task id metadata) per namespace.
func vectorsFor(taskID string) map[string]map[string]map[string]any {
	idx := st.Pinecone.Index(stack.Index)
	out := map[string]map[string]map[string]any{}
	for _, ns := range idx.Namespaces() {
		for id, v := range idx.Vectors(ns) {
			if v.Metadata["task_id"] != taskID {
				continue
			}
			if out[ns] == nil {
				out[ns] = map[string]map[string]any{}
			}
			out[ns][id] = v.Metadata
		}
	}
	return out
}

func checkExactVectors(t *testing.T, obj *v1alpha1.CsvIngestion, stats csvgen.Stats, byRecordType bool) {
	t.Helper()
	got := vectorsFor(obj.Status.TaskID)
	n := 0
	for ns, vecs := range got {
		for id, md := range vecs {
			n++
			raw := strings.TrimPrefix(id, "239.")
			want, ok := stats.RecordType[raw]
			if !ok || !strings.HasPrefix(id, "239.") {
				t.Fatalf("unexpected vector %s in %s", id, ns)
			}
			if byRecordType && ns != want {
				t.Fatalf("vector %s in namespace %s, want %s", id, ns, want)
			}
			if md["row_id"] != raw || md["question_id"] == nil || md["text"] == "" {
				t.Fatalf("vector %s metadata %v", id, md)
			}
		}
	}
	if int64(n) != stats.Good {
		t.Fatalf("%d vectors, want exactly %d", n, stats.Good)
	}
}

func events(t *testing.T, obj *v1alpha1.CsvIngestion) map[string]int {
	t.Helper()
	var evs eventsv1.EventList
	if err := st.Cluster.Client.List(context.Background(), &evs, client.InNamespace(obj.Namespace)); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range evs.Items {
		if e.Regarding.UID == obj.UID {
			out[e.Reason]++
		}
	}
	return out
}

func waitEvents(t *testing.T, obj *v1alpha1.CsvIngestion, reasons ...string) {
	t.Helper()
	waitFor(t, "events "+strings.Join(reasons, ","), 30*time.Second, func() (bool, string) {
		got := events(t, obj)
		for _, r := range reasons {
			if got[r] == 0 {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
}

func waitTask(t *testing.T, taskID, status string, check func(item string) bool) {
	t.Helper()
	waitFor(t, "task item "+status, 30*time.Second, func() (bool, string) {
		task, _, err := st.Tasks.Get(context.Background(), taskID)
		if err != nil {
			return false, err.Error()
		}
		return task.Status == status, fmt.Sprintf("%+v", task)
	})
}

func chunkJobs(t *testing.T, obj *v1alpha1.CsvIngestion) []batchv1.Job {
	t.Helper()
	var jobs batchv1.JobList
	if err := st.Cluster.Client.List(context.Background(), &jobs, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelName: obj.Name, worker.LabelRole: worker.RoleChunk}); err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

func pods(t *testing.T, obj *v1alpha1.CsvIngestion) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := st.Cluster.Client.List(context.Background(), &list, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelName: obj.Name}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestLegacyFileCompletes(t *testing.T) {
	skipShort(t)
	// 20,000 rows in 20 chunks prove what 100,000 did (the demo and make bench run that size);
	// E2E_ROWS to change.
	rows := 20000
	if v := os.Getenv("E2E_ROWS"); v != "" {
		fmt.Sscan(v, &rows)
	}
	stats, key := scenario(t, "legacy", csvgen.Options{Rows: rows, Seed: 239})
	obj := st.LegacyIngestion("legacy", "q239", key)
	obj.Spec.Mapping.NamespaceColumn = "record_type"
	obj.Spec.Embedding.RequestsPerMinute = 100000
	obj.Spec.Embedding.TokensPerMinute = 1000000000
	obj.Spec.Chunking.RowsPerChunk = int32(max(1000, rows/20))
	start := time.Now()
	apply(t, obj)
	final := waitTerminal(t, obj, 20*time.Minute)
	t.Logf("%d rows: %s in %s (%s)", rows, final.Status.Phase, time.Since(start).Round(time.Second), final.Status.Message)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != int64(rows) || final.Status.Records.Failed != 0 {
		t.Fatalf("status: %+v", final.Status)
	}
	checkExactVectors(t, final, stats, true)
	waitTask(t, final.Status.TaskID, "completed", nil)
	task, chunks, _ := st.Tasks.Get(context.Background(), final.Status.TaskID)
	if task.TotalRecords != int64(rows) || task.ProcessedRecords != int64(rows) || task.VectorsUpserted != int64(rows) ||
		task.ChunksCompleted != task.ChunksTotal || len(chunks) != int(task.ChunksTotal) {
		t.Fatalf("task item %+v (%d chunk entries)", task, len(chunks))
	}
	waitEvents(t, final, "Planned", "Completed")
}

func TestMalformedRowsPartiallyComplete(t *testing.T) {
	skipShort(t)
	// 0.5 % malformed: one in 200 rows, plus an unbalanced quote closing the file.
	stats, key := scenario(t, "malformed", csvgen.Options{Rows: 4000, Seed: 5, MalformedEvery: 200, UnbalancedQuoteAtEnd: true})
	obj := apply(t, st.LegacyIngestion("malformed", "q239", key))
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhasePartiallyCompleted || final.Status.Records.Failed != int64(len(stats.Bad)) ||
		final.Status.Records.Processed != stats.Good {
		t.Fatalf("status: %+v (bad rows %d)", final.Status, len(stats.Bad))
	}
	checkExactVectors(t, final, stats, false)
	// The dead letters hold exactly the bad rows, each with its reason.
	want := map[string]string{}
	for _, b := range stats.Bad {
		want[fmt.Sprint(b.Row)] = b.Reason
	}
	got, _ := deadLetters(t, final)
	if fmt.Sprint(sortedMap(got)) != fmt.Sprint(sortedMap(want)) {
		t.Fatalf("dead letters\n got %v\nwant %v", sortedMap(got), sortedMap(want))
	}
	waitTask(t, final.Status.TaskID, "partially_completed", nil)
	waitEvents(t, final, "PartiallyCompleted")
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func sortedMap(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func TestWrongOpenAIKeyFailsFast(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	_, key := scenario(t, "badkey", csvgen.Options{Rows: 3000, Seed: 9})
	bad := &corev1.Secret{}
	if err := st.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: "badkey", Name: "openai"}, bad); err != nil {
		t.Fatal(err)
	}
	bad.Data = map[string][]byte{"api-key": []byte("sk-wrong")}
	if err := st.Cluster.Client.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	obj := apply(t, st.LegacyIngestion("badkey", "q239", key))
	start := time.Now()
	final := waitTerminal(t, obj, 60*time.Second)
	t.Logf("failed after %s", time.Since(start).Round(time.Second))
	c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
	if final.Status.Phase != v1alpha1.PhaseFailed || c == nil || c.Reason != worker.ReasonUnauthorized || !strings.Contains(c.Message, "401") {
		t.Fatalf("status %+v condition %+v", final.Status, c)
	}
	if strings.Contains(c.Message, "sk-wrong") {
		t.Fatalf("the key leaked into the condition: %s", c.Message)
	}
	// The permanent exit code fails each Job at once: no pod of a chunk is retried.
	perJob := map[string]int{}
	for _, p := range pods(t, obj) {
		if p.Labels[worker.LabelRole] == worker.RoleChunk {
			perJob[p.Labels["batch.kubernetes.io/job-name"]]++
		}
	}
	for job, n := range perJob {
		if n > 1 {
			t.Errorf("job %s ran %d pods; a permanent error must not be retried", job, n)
		}
	}
	waitTask(t, final.Status.TaskID, "failed", nil)
}

func TestRateLimitStormCompletes(t *testing.T) {
	skipShort(t)
	stats, key := scenario(t, "storm", csvgen.Options{Rows: 6000, Seed: 11})
	st.OpenAI.RateLimitNext(40, 300*time.Millisecond)
	obj := st.LegacyIngestion("storm", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 100
	apply(t, obj)
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Failed != 0 {
		t.Fatalf("status %+v", final.Status)
	}
	if final.Status.Usage == nil || final.Status.Usage.RateLimited == 0 {
		t.Errorf("the storm was not seen: usage %+v", final.Status.Usage)
	}
	checkExactVectors(t, final, stats, false)
}

func TestKilledChunkIsRetried(t *testing.T) {
	skipShort(t)
	stats, key := scenario(t, "killed", csvgen.Options{Rows: 8000, Seed: 13})
	st.OpenAI.SetLatency(300 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)
	obj := st.LegacyIngestion("killed", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 50
	apply(t, obj)
	var victim string
	waitFor(t, "a running chunk pod", 2*time.Minute, func() (bool, string) {
		for _, name := range st.Runner.Running() {
			if strings.HasPrefix(name, "killed/q239-chunk-") {
				victim = name
				return true, ""
			}
		}
		return false, fmt.Sprint(st.Runner.Running())
	})
	time.Sleep(500 * time.Millisecond)
	parts := strings.SplitN(victim, "/", 2)
	if err := st.Runner.Kill(parts[1], parts[0]); err != nil {
		t.Fatal(err)
	}
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 8000 {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	retried := false
	perJob := map[string]int{}
	for _, p := range pods(t, obj) {
		perJob[p.Labels["batch.kubernetes.io/job-name"]]++
	}
	for _, n := range perJob {
		if n > 1 {
			retried = true
		}
	}
	if !retried {
		t.Errorf("no chunk was retried after the kill: %v", perJob)
	}
}

func TestManagerRestartMidRun(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	stats, key := scenario(t, "restart", csvgen.Options{Rows: 12000, Seed: 17})
	st.OpenAI.SetLatency(200 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)
	obj := st.LegacyIngestion("restart", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 100
	apply(t, obj)
	waitFor(t, "some chunks done", 3*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Succeeded >= 2, cur.Status.Progress
	})
	if err := st.KillManager(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 12000 || final.Status.Usage.VectorsUpserted != 12000 {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	// No finished chunk ran again: one succeeded pod per chunk Job, and one Job per chunk.
	jobs := chunkJobs(t, obj)
	if len(jobs) != 12 {
		t.Errorf("%d chunk jobs, want 12", len(jobs))
	}
	succeeded := map[string]int{}
	for _, p := range pods(t, obj) {
		if p.Status.Phase == corev1.PodSucceeded && p.Labels[worker.LabelRole] == worker.RoleChunk {
			succeeded[p.Labels["batch.kubernetes.io/job-name"]]++
		}
	}
	for job, n := range succeeded {
		if n != 1 {
			t.Errorf("job %s succeeded %d times", job, n)
		}
	}
}

func TestDeleteMidRun(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	_, key := scenario(t, "delete", csvgen.Options{Rows: 8000, Seed: 19})
	st.OpenAI.SetLatency(300 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)
	obj := st.LegacyIngestion("delete", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 50
	apply(t, obj)
	waitFor(t, "chunks running", 2*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Active > 0, cur.Status.Progress
	})
	taskID := get(t, obj).Status.TaskID
	if err := st.Cluster.Client.Delete(ctx, get(t, obj)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "jobs and pods gone", 2*time.Minute, func() (bool, string) {
		j, p := len(chunkJobs(t, obj)), len(pods(t, obj))
		return j == 0 && p == 0, fmt.Sprintf("%d jobs, %d pods", j, p)
	})
	waitTask(t, taskID, "cancelled", nil)
}

func TestSuspendResume(t *testing.T) {
	skipShort(t)
	stats, key := scenario(t, "suspend", csvgen.Options{Rows: 8000, Seed: 23})
	st.OpenAI.SetLatency(200 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)
	obj := st.LegacyIngestion("suspend", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 100
	obj.Spec.Chunking.Parallelism = 2
	apply(t, obj)
	waitFor(t, "chunks running", 2*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Active > 0, cur.Status.Progress
	})
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	waitFor(t, "suspended, no pods running", time.Minute, func() (bool, string) {
		cur := get(t, obj)
		running := 0
		for _, n := range st.Runner.Running() {
			if strings.HasPrefix(n, "suspend/") {
				running++
			}
		}
		return meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionSuspended) && running == 0, fmt.Sprintf("%d running", running)
	})
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	waitEvents(t, final, "Suspended", "Resumed", "Completed")
}
