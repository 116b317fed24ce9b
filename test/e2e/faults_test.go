package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// The fault table: each row breaks one thing the controller relies on while a small ingestion runs
// (600 rows in chunks of 100) and then checks the whole outcome exactly: the vectors in the index
// (none lost, none re-upserted after its chunk succeeded), the status counts, every chunk in the
// DynamoDB task item, and the conditions.

const (
	faultRows    = 600
	faultPerPart = 100
	faultChunks  = faultRows / faultPerPart
	faultJobTTL  = 3 * time.Second
)

type faultRow struct {
	name string
	// before prepares the namespace; mutate shapes the ingestion before it is applied.
	before func(t *testing.T, ns string)
	mutate func(*v1alpha1.CsvIngestion)
	// during runs while the ingestion runs; it returns the phase and Failed reason to expect
	// ("" when it checked the outcome itself).
	during func(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string)
}

func TestFaultTable(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	// A Job TTL far below the time the manager is away in row 1, and a finalizer timeout long
	// enough for row 5's table to come back.
	st.ManagerArgs = []string{"--job-ttl=" + faultJobTTL.String(), "--finalizer-timeout=2m"}
	restartManager(t, ctx, false)
	defer func() {
		st.ManagerArgs = nil
		st.DynamoDB.SetDown(false)
		restartManager(t, ctx, false)
	}()
	// Chunks take a few seconds (10 requests of 10 rows), so faults land while chunks run.
	st.OpenAI.SetLatency(300 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)

	for i, row := range []faultRow{
		{name: "manager-away-longer-than-job-ttl", during: managerAwayPastTTL},
		{name: "succeeded-pod-deleted-before-recorded", during: succeededPodDeleted},
		{name: "plan-deleted-mid-run", during: planDeleted},
		{name: "plan-replaced-mid-run", during: planReplaced},
		{name: "manager-sigkilled-repeatedly", during: managerKilledRepeatedly},
		{name: "task-table-down-at-the-end-then-deleted", during: taskTableDownThenDeleted},
		{name: "awkward-names", mutate: func(o *v1alpha1.CsvIngestion) {
			o.Name = "q239-" + strings.Repeat("x", 63-len("q239-")-len("-2025-01-10")) + "-2025-01-10"
			o.Spec.TaskID = "q239:2025-01-10"
		}, during: awkwardNames},
		{name: "resource-quota-refuses-chunk-jobs", before: jobQuota, during: quotaRefusesJobs},
	} {
		t.Run(row.name, func(t *testing.T) {
			ns := fmt.Sprintf("fault-%d", i+1)
			stats, key := scenario(t, ns, csvgen.Options{Rows: faultRows, Seed: int64(100 + i), IDOffset: 1000000 * (i + 1)})
			obj := st.LegacyIngestion(ns, "q239", key)
			obj.Spec.Target.Pinecone.Namespace = ns
			obj.Spec.Chunking.RowsPerChunk = faultPerPart
			obj.Spec.Chunking.Parallelism = 2
			obj.Spec.Embedding.MaxInputsPerRequest = 10
			if row.mutate != nil {
				row.mutate(obj)
			}
			if row.before != nil {
				row.before(t, ns)
			}
			dupBefore := st.Pinecone.Index(stack.Index).DuplicateUpserts()
			dupAtStart = dupBefore
			apply(t, obj)
			phase, reason := row.during(t, obj)
			if phase != "" {
				checkFaultOutcome(t, obj, stats, phase, reason, dupBefore)
			}
		})
	}
}

// dupAtStart is the index's re-upsert counter when the current row started.
var dupAtStart int64

func restartManager(t *testing.T, ctx context.Context, kill bool) {
	t.Helper()
	var err error
	if kill {
		err = st.KillManager()
	} else {
		err = st.StopManager()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
}

// checkFaultOutcome checks a row's end state exactly.
func checkFaultOutcome(t *testing.T, obj *v1alpha1.CsvIngestion, stats csvgen.Stats, phase v1alpha1.Phase, reason string, dupBefore int64) {
	t.Helper()
	ctx := context.Background()
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != phase {
		t.Fatalf("phase %s, want %s: %s", final.Status.Phase, phase, final.Status.Message)
	}
	// No chunk ran again after it succeeded: no vector was written twice.
	if dup := st.Pinecone.Index(stack.Index).DuplicateUpserts() - dupBefore; dup != 0 {
		t.Errorf("%d vectors re-upserted", dup)
	}
	completed, err := parseRanges(final.Status.CompletedChunks)
	if err != nil {
		t.Fatal(err)
	}
	// The index holds exactly the rows of the chunks recorded as completed (all of them when
	// Completed), plus, for a stopped run, only rows of the file.
	want := map[string]bool{}
	for i, id := range stats.GoodIDs {
		if completed[i/faultPerPart] {
			want["239."+id] = true
		}
	}
	all := map[string]bool{}
	for _, id := range stats.GoodIDs {
		all["239."+id] = true
	}
	got := vectorsIn(obj.Spec.Target.Pinecone.Namespace, final.Status.TaskID)
	for id := range want {
		if !got[id] {
			t.Errorf("vector %s of a completed chunk is missing", id)
			break
		}
	}
	for id := range got {
		if !all[id] {
			t.Errorf("vector %s is not a row of the file", id)
			break
		}
	}
	if phase == v1alpha1.PhaseCompleted {
		s := final.Status
		if len(got) != faultRows || s.Records.Processed != faultRows || s.Records.Failed != 0 || s.Records.Total != faultRows ||
			s.Chunks.Succeeded != faultChunks || s.CompletedChunks != fmt.Sprintf("0-%d", faultChunks-1) ||
			s.Usage == nil || s.Usage.VectorsUpserted != faultRows {
			t.Errorf("%d vectors; status %+v", len(got), s)
		}
		if c := meta.FindStatusCondition(s.Conditions, v1alpha1.ConditionComplete); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("Complete condition %+v", c)
		}
	} else {
		c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reason {
			t.Errorf("Failed condition %+v, want reason %s", c, reason)
		}
	}
	// The task item has the final state and one entry per recorded chunk, each as recorded.
	wantStatus := map[v1alpha1.Phase]string{v1alpha1.PhaseCompleted: "completed", v1alpha1.PhaseFailed: "failed"}[phase]
	waitFor(t, "complete task item", time.Minute, func() (bool, string) {
		task, chunks, err := st.Tasks.Get(ctx, final.Status.TaskID)
		if err != nil {
			return false, err.Error()
		}
		if task.Status != wantStatus || task.ProcessedRecords != final.Status.Records.Processed || len(chunks) != len(completed) {
			return false, fmt.Sprintf("item %s, %d processed, %d chunk entries (want %s, %d, %d)", task.Status, task.ProcessedRecords,
				len(chunks), wantStatus, final.Status.Records.Processed, len(completed))
		}
		for i := range completed {
			e, ok := chunks[fmt.Sprintf("chunk_%04d", i)]
			if !ok || e.Status != "completed" || e.ProcessedRecords != faultPerPart || e.StartRow != int64(i*faultPerPart) ||
				e.EndRow != int64(i*faultPerPart+faultPerPart-1) || e.VectorsUpserted != faultPerPart {
				return false, fmt.Sprintf("chunk %d entry %+v", i, e)
			}
		}
		return true, ""
	})
	// Conditions are clear: nothing blocked, the task table in step.
	waitFor(t, "clear conditions", time.Minute, func() (bool, string) {
		cur := get(t, obj)
		for _, c := range cur.Status.Conditions {
			if (c.Type == v1alpha1.ConditionBlocked || c.Type == v1alpha1.ConditionTrackingDegraded) && c.Status == metav1.ConditionTrue {
				return false, fmt.Sprintf("%s: %s", c.Type, c.Message)
			}
		}
		return !slices.Contains(cur.Finalizers, controllers.FinalizerTaskCancel), fmt.Sprint(cur.Finalizers)
	})
	// Every pod was let go once its outcome was recorded.
	waitFor(t, "no pod held", time.Minute, func() (bool, string) {
		for _, p := range pods(t, obj) {
			if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				return false, p.Name + " still holds the outcome finalizer"
			}
		}
		return true, ""
	})
}

func parseRanges(s string) (map[int]bool, error) {
	out := map[int]bool{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		var a, b int
		if n, _ := fmt.Sscanf(part, "%d-%d", &a, &b); n == 2 {
			for i := a; i <= b; i++ {
				out[i] = true
			}
			continue
		}
		if _, err := fmt.Sscanf(part, "%d", &a); err != nil {
			return nil, fmt.Errorf("ranges %q: %w", s, err)
		}
		out[a] = true
	}
	return out, nil
}

func vectorsIn(namespace, taskID string) map[string]bool {
	out := map[string]bool{}
	for id, v := range st.Pinecone.Index(stack.Index).Vectors(namespace) {
		if v.Metadata["task_id"] == taskID {
			out[id] = true
		}
	}
	return out
}

func waitSucceeded(t *testing.T, obj *v1alpha1.CsvIngestion, n int32) *v1alpha1.CsvIngestion {
	t.Helper()
	var cur *v1alpha1.CsvIngestion
	waitFor(t, fmt.Sprintf("%d chunks recorded", n), 3*time.Minute, func() (bool, string) {
		cur = get(t, obj)
		return cur.Status.Chunks.Succeeded >= n, cur.Status.Progress + " " + cur.Status.Message
	})
	return cur
}

// finishedUnrecorded waits, with the manager away, until some chunk Jobs have finished that
// the status has not recorded, and returns them.
func finishedUnrecorded(t *testing.T, obj *v1alpha1.CsvIngestion) []batchv1.Job {
	t.Helper()
	recorded, _ := parseRanges(get(t, obj).Status.CompletedChunks)
	var out []batchv1.Job
	waitFor(t, "chunk jobs finishing while the manager is away", 2*time.Minute, func() (bool, string) {
		out = out[:0]
		running := 0
		for _, j := range chunkJobs(t, obj) {
			var idx int
			fmt.Sscan(j.Labels[worker.LabelChunk], &idx)
			if recorded[idx] {
				continue
			}
			if jobDone(&j) {
				out = append(out, j)
			} else {
				running++
			}
		}
		return len(out) > 0 && running == 0, fmt.Sprintf("%d finished, %d running", len(out), running)
	})
	return out
}

func jobDone(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// Row 1: the manager is away for longer than --job-ttl while chunks finish. Their Jobs have no
// TTL until recorded, so they are all still there when it comes back, and nothing runs twice.
func managerAwayPastTTL(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	ctx := context.Background()
	waitSucceeded(t, obj, 1)
	if err := st.StopManager(); err != nil {
		t.Fatal(err)
	}
	done := finishedUnrecorded(t, obj)
	holdsFor(t, "unrecorded Jobs kept, without a TTL", 3*faultJobTTL, func() (bool, string) {
		for _, j := range done {
			cur := &batchv1.Job{}
			if err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(&j), cur); err != nil {
				return false, fmt.Sprintf("finished, unrecorded Job %s is gone without the manager: %v", j.Name, err)
			}
			if cur.Spec.TTLSecondsAfterFinished != nil {
				return false, fmt.Sprintf("Job %s has a TTL before its outcome was recorded", j.Name)
			}
		}
		return true, ""
	})
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
	waitTerminal(t, obj, 5*time.Minute)
	// Once recorded, Jobs get the TTL and expire.
	waitFor(t, "recorded Jobs expire", 2*time.Minute, func() (bool, string) {
		n := len(chunkJobs(t, obj))
		return n == 0, fmt.Sprintf("%d chunk Jobs left", n)
	})
	return v1alpha1.PhaseCompleted, ""
}

// Row 2: a succeeded pod is deleted before the manager has read it; the outcome finalizer keeps
// it (and its termination message) until the manager records it.
func succeededPodDeleted(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	ctx := context.Background()
	waitSucceeded(t, obj, 1)
	if err := st.StopManager(); err != nil {
		t.Fatal(err)
	}
	done := finishedUnrecorded(t, obj)
	var victim *corev1.Pod
	for _, p := range pods(t, obj) {
		if p.Labels["batch.kubernetes.io/job-name"] == done[0].Name && p.Status.Phase == corev1.PodSucceeded {
			victim = &p
			break
		}
	}
	if victim == nil {
		t.Fatalf("no succeeded pod of %s", done[0].Name)
	}
	if err := st.Cluster.Client.Delete(ctx, victim); err != nil {
		t.Fatal(err)
	}
	holdsFor(t, "the deleted, unrecorded pod waits for the manager", 2*time.Second, func() (bool, string) {
		cur := &corev1.Pod{}
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(victim), cur)
		return err == nil && cur.DeletionTimestamp != nil, fmt.Sprintf("%v %+v", err, cur.ObjectMeta)
	})
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted pod released after recording", 2*time.Minute, func() (bool, string) {
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(victim), &corev1.Pod{})
		return err != nil, "still there"
	})
	return v1alpha1.PhaseCompleted, ""
}

func planConfigMap(t *testing.T, obj *v1alpha1.CsvIngestion) *corev1.ConfigMap {
	t.Helper()
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: obj.Namespace, Name: worker.PlanConfigMapName(obj.Name)}
	if err := st.Cluster.Client.Get(context.Background(), key, cm); err != nil {
		t.Fatal(err)
	}
	return cm
}

// Row 3a: the plan ConfigMap is deleted mid-run. The ingestion fails PlanChanged instead of
// planning again (with possibly other chunk boundaries).
func planDeleted(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	waitSucceeded(t, obj, 2)
	if err := st.Cluster.Client.Delete(context.Background(), planConfigMap(t, obj)); err != nil {
		t.Fatal(err)
	}
	checkNoReplan(t, obj)
	return v1alpha1.PhaseFailed, controllers.ReasonPlanChanged
}

// Row 3b: the plan is edited mid-run. The API server refuses an edit (the ConfigMap is
// immutable); a replacement with other offsets fails the ingestion PlanChanged.
func planReplaced(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	ctx := context.Background()
	waitSucceeded(t, obj, 2)
	cm := planConfigMap(t, obj)
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil {
		t.Fatal(err)
	}
	plan.Offsets[1] += 7
	data, _ := plan.Encode()
	edited := cm.DeepCopy()
	edited.Data[worker.PlanDataKey] = data
	if err := st.Cluster.Client.Update(ctx, edited); err == nil {
		t.Fatalf("the plan ConfigMap accepted an edit")
	}
	if err := st.Cluster.Client.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	replacement := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: cm.Name, Namespace: cm.Namespace, Labels: cm.Labels,
		Annotations: cm.Annotations, OwnerReferences: cm.OwnerReferences}, Data: edited.Data}
	if err := st.Cluster.Client.Create(ctx, replacement); err != nil {
		t.Fatal(err)
	}
	checkNoReplan(t, obj)
	return v1alpha1.PhaseFailed, controllers.ReasonPlanChanged
}

func checkNoReplan(t *testing.T, obj *v1alpha1.CsvIngestion) {
	t.Helper()
	final := waitTerminal(t, obj, 2*time.Minute)
	if c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed); c == nil || !strings.Contains(c.Message, "plan ConfigMap") {
		t.Errorf("Failed condition %+v should name the plan ConfigMap", c)
	}
	var jobs batchv1.JobList
	if err := st.Cluster.Client.List(context.Background(), &jobs, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelRole: worker.RolePlan}); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs.Items {
		if j.CreationTimestamp.After(final.Status.StartTime.Add(30 * time.Second)) {
			t.Errorf("a planner Job was created again: %s", j.Name)
		}
	}
	waitEvents(t, final, "Failed")
}

// Row 4: the manager is SIGKILLed again and again, three times right after a status write that
// recorded a chunk and before the task table could take it (the table is cut at that moment).
func managerKilledRepeatedly(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	ctx := context.Background()
	for round := int32(1); round <= 3; round++ {
		// A chunk recorded while the table is cut: the manager dies right after that status write.
		st.DynamoDB.SetDown(true)
		cur := waitSucceeded(t, obj, get(t, obj).Status.Chunks.Succeeded+1)
		// The window: the status has recorded more chunks than the task item has entries.
		_, chunks, err := st.Tasks.Get(ctx, cur.Status.TaskID)
		if err != nil && !errors.Is(err, tasktable.ErrNotFound) { // never written yet: no entries
			t.Fatal(err)
		}
		if len(chunks) >= int(cur.Status.Chunks.Succeeded) {
			t.Fatalf("round %d: the task item already has %d entries for %d recorded chunks; not between the writes", round, len(chunks), cur.Status.Chunks.Succeeded)
		}
		restartManager(t, ctx, true)
		t.Logf("round %d: SIGKILLed with %d chunks recorded and %d in the task item", round, cur.Status.Chunks.Succeeded, len(chunks))
		st.DynamoDB.SetDown(false)
		// The restarted manager writes the entries the dead one could not.
		waitFor(t, "task item catches up", time.Minute, func() (bool, string) {
			_, chunks, err := st.Tasks.Get(ctx, cur.Status.TaskID)
			return err == nil && len(chunks) >= int(cur.Status.Chunks.Succeeded), fmt.Sprintf("%d entries, %v", len(chunks), err)
		})
	}
	// And twice at arbitrary moments.
	for i := 0; i < 2; i++ {
		time.Sleep(1500 * time.Millisecond)
		if get(t, obj).Status.Phase.Terminal() {
			break
		}
		restartManager(t, ctx, true)
		t.Logf("SIGKILLed at %s", get(t, obj).Status.Progress)
	}
	return v1alpha1.PhaseCompleted, ""
}

// Row 5: the task table is unreachable as the last chunk finishes, and the ingestion is then
// deleted. The finalizer holds it until the final state, with every chunk, is in the table.
func taskTableDownThenDeleted(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	ctx := context.Background()
	waitSucceeded(t, obj, faultChunks-2)
	st.DynamoDB.SetDown(true)
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || !slices.Contains(final.Finalizers, controllers.FinalizerTaskCancel) {
		t.Fatalf("a Completed ingestion whose task table is down must keep its finalizer: %v %v", final.Status.Phase, final.Finalizers)
	}
	waitFor(t, "TrackingDegraded", time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionTrackingDegraded), cur.Status.Message
	})
	if err := st.Cluster.Client.Delete(ctx, final); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deletion started", 30*time.Second, func() (bool, string) {
		return get(t, obj).DeletionTimestamp != nil, "no deletion timestamp"
	})
	holdsFor(t, "the finalizer holds the ingestion while the table is down", 3*time.Second, func() (bool, string) {
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
		return err == nil, fmt.Sprint(err)
	})
	st.DynamoDB.SetDown(false)
	waitFor(t, "ingestion gone once the table has its final state", 2*time.Minute, func() (bool, string) {
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
		return err != nil, "still there"
	})
	// The object is gone: check the outcome against what it last said.
	task, chunks, err := st.Tasks.Get(ctx, final.Status.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if task.Status != "completed" || task.ProcessedRecords != faultRows || len(chunks) != faultChunks || task.VectorsUpserted != faultRows {
		t.Fatalf("task item after deletion: %+v, %d chunk entries", task, len(chunks))
	}
	for i := 0; i < faultChunks; i++ {
		if e := chunks[fmt.Sprintf("chunk_%04d", i)]; e.Status != "completed" || e.ProcessedRecords != faultPerPart {
			t.Errorf("chunk %d entry %+v", i, e)
		}
	}
	if n := len(vectorsIn(obj.Spec.Target.Pinecone.Namespace, final.Status.TaskID)); n != faultRows {
		t.Errorf("%d vectors, want %d", n, faultRows)
	}
	if dup := st.Pinecone.Index(stack.Index).DuplicateUpserts() - dupAtStart; dup != 0 {
		t.Errorf("%d vectors re-upserted", dup)
	}
	return "", "" // the object is gone: checked here
}

// Row 6: a taskID with ':' and a 63-character name: every derived name and label is valid.
func awkwardNames(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	waitFor(t, "chunk jobs", 2*time.Minute, func() (bool, string) { return len(chunkJobs(t, obj)) > 0, "" })
	for _, j := range chunkJobs(t, obj) {
		if len(j.Name) > 63 || j.Annotations[worker.AnnotationTaskID] != "q239:2025-01-10" || j.Annotations[worker.AnnotationName] != obj.Name {
			t.Errorf("job %s (%d chars) annotations %v", j.Name, len(j.Name), j.Annotations)
		}
	}
	return v1alpha1.PhaseCompleted, ""
}

// Row 7: a ResourceQuota refuses chunk Jobs: Blocked with the server's message and an event,
// retried with backoff, and cleared once the quota is raised.
const quotaName = "jobs"

// jobQuota admits one Job (the planner) in ns. No resourcequota controller runs in the stack, so
// the test writes the quota's status as that controller would; admission keeps "used" current.
func jobQuota(t *testing.T, ns string) {
	setJobQuota(t, ns, 1, true)
}

func setJobQuota(t *testing.T, ns string, hard int64, create bool) {
	t.Helper()
	ctx := context.Background()
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: quotaName, Namespace: ns}}
	if create {
		q.Spec.Hard = corev1.ResourceList{"count/jobs.batch": *resource.NewQuantity(hard, resource.DecimalSI)}
		if err := st.Cluster.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{"count/jobs.batch": resource.MustParse("0")}}
		if err := st.Cluster.Client.Status().Update(ctx, q); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(q), q); err != nil {
		t.Fatal(err)
	}
	q.Spec.Hard = corev1.ResourceList{"count/jobs.batch": *resource.NewQuantity(hard, resource.DecimalSI)}
	if err := st.Cluster.Client.Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	q.Status.Hard = q.Spec.Hard
	if err := st.Cluster.Client.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
}

func quotaRefusesJobs(t *testing.T, obj *v1alpha1.CsvIngestion) (v1alpha1.Phase, string) {
	waitFor(t, "Blocked by the quota", 2*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBlocked)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "exceeded quota"), fmt.Sprintf("%+v %s", c, cur.Status.Message)
	})
	waitEvents(t, obj, "Blocked")
	if n := len(chunkJobs(t, obj)); n != 0 {
		t.Fatalf("%d chunk Jobs exist past a quota of one Job", n)
	}
	if get(t, obj).Status.Phase.Terminal() {
		t.Fatalf("a refused create must not end the ingestion")
	}
	setJobQuota(t, obj.Namespace, 100, false)
	waitTerminal(t, obj, 5*time.Minute)
	waitEvents(t, obj, "Unblocked")
	return v1alpha1.PhaseCompleted, ""
}
