package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// An admission policy refuses chunk Jobs: the ingestion says so (Blocked, with the server's
// message, and a Warning event), keeps retrying, and clears the condition once the policy goes.
func TestRefusedCreateIsBlockedThenClears(t *testing.T) {
	ns := newNamespace(t)
	lift := denyJobs(t, ns, worker.RoleChunk)

	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "blocked", nil))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 3000, 1000)
	var cond *metav1.Condition
	eventually(t, "Blocked", 30*time.Second, func() (bool, string) {
		cond = meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBlocked)
		return cond != nil && cond.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cond)
	})
	if !strings.Contains(cond.Message, "not allowed here by policy") || !strings.Contains(cond.Message, "create chunk Job blocked-chunk-0") {
		t.Errorf("Blocked message %q must carry the server's message and what was refused", cond.Message)
	}
	wantEvents(t, obj, "Blocked")
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 0 {
		t.Fatalf("%d chunk jobs exist despite the policy", n)
	}

	lift()
	final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }, nil)
	if final.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
	if c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionBlocked); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Blocked condition after the policy went: %+v", c)
	}
	wantEvents(t, obj, "Unblocked")
}

// The plan is pinned: deleting it mid-run fails the ingestion PlanChanged instead of planning
// again, and no planner Job is created a second time.
func TestPlanDeletedMidRunFailsPlanChanged(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "pinned", nil))
	planner := waitJob(t, ns, worker.PlanJobName(obj.Name))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 5000, 1000)
	first := waitJob(t, ns, worker.ChunkJobName(obj.Name, 0))
	finishJob(t, first, okResult(1000), 0, "")
	eventually(t, "one chunk recorded", 15*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Succeeded == 1 && cur.Status.Plan != nil, mustJSON(cur.Status.Plan)
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: worker.PlanConfigMapName(obj.Name), Namespace: ns}}
	if err := cluster.Client.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	final := waitPhase(t, obj, v1alpha1.PhaseFailed)
	c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
	if c == nil || c.Reason != controllers.ReasonPlanChanged || !strings.Contains(c.Message, "deleted after planning") {
		t.Fatalf("Failed condition %+v", c)
	}
	if final.Status.CompletedChunks != "0" || final.Status.Records.Processed != 1000 {
		t.Errorf("the recorded chunk must stay recorded: %s", mustJSON(final.Status))
	}
	// The first planner (still running here, as the test wrote the plan itself) is stopped with
	// the rest; none is created again.
	consistently(t, "no second planner", 2*time.Second, func() (bool, string) {
		for _, j := range listJobs(t, obj, worker.RolePlan) {
			if j.UID != planner.UID && j.DeletionTimestamp.IsZero() {
				return false, "a second planner job " + j.Name + " was created"
			}
		}
		return true, ""
	})
	eventually(t, "running chunks stopped", 15*time.Second, func() (bool, string) {
		n := len(runningChunkJobs(t, obj))
		return n == 0, fmt.Sprintf("%d running", n)
	})
	eventually(t, "task item failed with the recorded chunk", 15*time.Second, func() (bool, string) {
		item, chunks := taskItem(t, obj.Spec.TaskID)
		return item.Status == "failed" && len(chunks) == 1 && chunks["chunk_0000"].Status == "completed", fmt.Sprintf("%+v %v", item, chunks)
	})
}

// Usage of every attempt counts, a worker's counts are bounded by its chunk, and a succeeded Job
// whose pods are gone is recorded as failed (OutcomeUnknown), never as processed.
func TestOutcomesAreCountedHonestly(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "honest", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Chunking.MaxFailedRowsPercent = 50
		o.Spec.Chunking.Parallelism = 3
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 3000, 1000)
	var jobs [3]*batchv1.Job
	for i := range jobs {
		jobs[i] = waitJob(t, ns, worker.ChunkJobName(obj.Name, i))
	}
	// Chunk 0: two failed attempts (paid for) before a success.
	for range 2 {
		failAttempt(t, jobs[0], worker.Result{Role: "chunk", Error: "pinecone: unavailable", Tokens: 500, Requests: 2, Retries: 1})
	}
	finishJob(t, jobs[0], okResult(1000), 0, "")
	// Chunk 1: a worker that claims more than its chunk.
	over := okResult(1000)
	over.Processed, over.VectorsUpserted = 1200, 1200
	finishJob(t, jobs[1], over, 0, "")
	// Chunk 2: the Job says Complete, but no pod (and no message) is left.
	now := metav1.Now()
	j := getJob(t, ns, jobs[2].Name)
	j.Status.StartTime = &now
	j.Status.Succeeded = 1
	j.Status.CompletionTime = &now
	j.Status.Conditions = append(j.Status.Conditions,
		batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now},
		batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now})
	if err := cluster.Client.Status().Update(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	var final *v1alpha1.CsvIngestion
	eventually(t, "terminal (after the 20 s result grace)", 60*time.Second, func() (bool, string) {
		final = get(t, obj)
		return final.Status.Phase.Terminal(), final.Status.Message
	})
	st := final.Status
	if st.Phase != v1alpha1.PhasePartiallyCompleted || st.Records.Processed != 2000 || st.Records.Failed != 1000 ||
		st.CompletedChunks != "0-1" || st.FailedChunkIndexes != "2" {
		t.Fatalf("status %s", mustJSON(st))
	}
	if len(st.FailedChunks) != 1 || st.FailedChunks[0].Reason != controllers.ReasonOutcomeUnknown {
		t.Errorf("failedChunks %+v", st.FailedChunks)
	}
	// Tokens: two failed attempts (500 each) + chunk 0's success + chunk 1's success.
	if st.Usage == nil || st.Usage.Tokens != 1000+2*150000 || st.Usage.Requests != 4+2 || st.Usage.VectorsUpserted != 2000 {
		t.Errorf("usage %+v", st.Usage)
	}
	wantEvents(t, obj, "ChunkCountsAdjusted", "ChunkFailed")
	// Every pod's outcome was read, so none is held any more.
	eventually(t, "pods released", 15*time.Second, func() (bool, string) {
		for _, p := range listPods(t, obj) {
			if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				return false, p.Name
			}
		}
		return true, ""
	})
}

// Chunks that finished while the manager was away are recorded when it comes back to a cancel.
func TestCancelRecordsFinishedChunks(t *testing.T) {
	ns := newNamespace(t)
	stop := startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "cancelrec", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 5000, 1000)
	eventually(t, "2 running", 15*time.Second, func() (bool, string) { return len(runningChunkJobs(t, obj)) == 2, "" })
	stop()
	for _, j := range runningChunkJobs(t, obj) {
		finishJob(t, &j, okResult(1000), 0, "")
	}
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	startManager(t, nil, ns)
	final := waitPhase(t, obj, v1alpha1.PhaseCancelled)
	if final.Status.CompletedChunks != "0-1" || final.Status.Records.Processed != 2000 {
		t.Fatalf("cancel must record the chunks that finished: %s", mustJSON(final.Status))
	}
	eventually(t, "task item cancelled with both chunks", 15*time.Second, func() (bool, string) {
		item, chunks := taskItem(t, obj.Spec.TaskID)
		return item.Status == "cancelled" && len(chunks) == 2, fmt.Sprintf("%+v %v", item, chunks)
	})
}

// A 63-character name and a taskID with ':' give valid Job names and labels, full values in
// annotations, and a run to Completed.
func TestAwkwardNamesRunToCompleted(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	name := "q239-" + strings.Repeat("x", 63-len("q239-")-len("-2025-01-10")) + "-2025-01-10"
	obj := create(t, newIngestion(ns, name, func(o *v1alpha1.CsvIngestion) {
		o.Spec.TaskID = "q239:2025-01-10-" + ns
		o.Spec.Chunking.Parallelism = 2
	}))
	planner := waitJob(t, ns, worker.PlanJobName(name))
	if len(planner.Name) > 63 || planner.Annotations[worker.AnnotationTaskID] != obj.Spec.TaskID ||
		planner.Labels[worker.LabelTaskID] != worker.LabelValue(obj.Spec.TaskID) {
		t.Errorf("planner %s labels %v annotations %v", planner.Name, planner.Labels, planner.Annotations)
	}
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 3000, 1000)
	var jobs batchv1.JobList
	eventually(t, "chunk jobs", 15*time.Second, func() (bool, string) {
		if err := cluster.Client.List(context.Background(), &jobs, client.InNamespace(ns),
			client.MatchingLabels{worker.LabelRole: worker.RoleChunk}); err != nil {
			return false, err.Error()
		}
		return len(jobs.Items) > 0, ""
	})
	for _, j := range jobs.Items {
		if len(j.Name) > 63 || j.Annotations[worker.AnnotationName] != name {
			t.Errorf("job %s (%d chars), annotations %v", j.Name, len(j.Name), j.Annotations)
		}
	}
	for n := 0; n < 3; n++ {
		var next *batchv1.Job
		eventually(t, "a running chunk", 15*time.Second, func() (bool, string) {
			if err := cluster.Client.List(context.Background(), &jobs, client.InNamespace(ns),
				client.MatchingLabels{worker.LabelRole: worker.RoleChunk}); err != nil {
				return false, err.Error()
			}
			for i := range jobs.Items {
				if !finished(&jobs.Items[i]) {
					next = &jobs.Items[i]
					return true, ""
				}
			}
			return false, ""
		})
		finishJob(t, next, okResult(1000), 0, "")
	}
	final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
	if final.Status.Records.Processed != 3000 {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
	eventually(t, "task item under the full taskID", 15*time.Second, func() (bool, string) {
		item, chunks := taskItem(t, obj.Spec.TaskID)
		return item.Status == "completed" && len(chunks) == 3, fmt.Sprintf("%+v", item)
	})
}

// A finished ingestion keeps its finalizer while its final state cannot reach the task table,
// for at most the finalizer timeout; then a Warning event and the TrackingDegraded condition say
// the item is stale, the finalizer goes and the Jobs are released.
func TestUnwritableFinalStateMarksTaskItemStale(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "stale", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Tracking.DynamoDB.Table = "no-such-table"
		o.Spec.Chunking.Parallelism = 2
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }, nil)
	if final.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
	// Jobs are not released while their entries cannot be written.
	for _, j := range listJobs(t, obj, worker.RoleChunk) {
		if j.Spec.TTLSecondsAfterFinished != nil && slices.Contains(get(t, obj).Finalizers, controllers.FinalizerTaskCancel) {
			t.Errorf("job %s released before its entry reached the task table", j.Name)
		}
	}
	eventually(t, "stale after the finalizer timeout (5 s)", 30*time.Second, func() (bool, string) {
		cur := get(t, obj)
		c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionTrackingDegraded)
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == "TaskItemStale" &&
			!slices.Contains(cur.Finalizers, controllers.FinalizerTaskCancel), fmt.Sprintf("%+v %v", c, cur.Finalizers)
	})
	wantEvents(t, obj, "TaskItemStale")
	eventually(t, "jobs released after giving up", 30*time.Second, func() (bool, string) {
		for _, j := range listJobs(t, obj, worker.RoleChunk) {
			if j.Spec.TTLSecondsAfterFinished == nil {
				return false, j.Name
			}
		}
		return true, ""
	})
}

// A recorded chunk's Job and pods are labelled released (which takes them out of the manager's
// cache). If the manager is cut off between labelling the Job and releasing its pods, the next
// pass finds pods held with no Job in the cache for a recorded chunk: it lets them go and derives
// nothing from them again (counts and the task-table entry stay as recorded).
func TestReleasedChunksAreLabelledAndHalfReleasesFinish(t *testing.T) {
	ns := newNamespace(t)
	var failed, jobFirst atomic.Bool
	startManagerWith(t, nil, func(o *manager.Options) {
		o.WrapClient = func(cl client.WithWatch) client.Client {
			return interceptor.NewClient(cl, interceptor.Funcs{
				Patch: func(ctx context.Context, w client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
					// The first release of chunk 1's pod fails as a connection would: after its
					// Job has been labelled and given its TTL.
					if _, isPod := obj.(*corev1.Pod); isPod && strings.Contains(obj.GetName(), "-chunk-1-") && failed.CompareAndSwap(false, true) {
						j := &batchv1.Job{}
						err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: worker.ChunkJobName("labels", 1)}, j)
						jobFirst.Store(err == nil && j.Labels[worker.LabelReleased] == "true" && j.Spec.TTLSecondsAfterFinished != nil)
						return fmt.Errorf("connection reset by peer")
					}
					return w.Patch(ctx, obj, p, opts...)
				},
			})
		}
	}, ns)
	obj := create(t, newIngestion(ns, "labels", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	for i := range 2 {
		finishJob(t, waitJob(t, ns, worker.ChunkJobName(obj.Name, i)), okResult(1000), 0, "")
	}
	final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
	if st := final.Status; st.Records.Processed != 2000 || st.Records.Failed != 0 || st.CompletedChunks != "0-1" || st.Usage == nil || st.Usage.VectorsUpserted != 2000 {
		t.Fatalf("status %s", mustJSON(st))
	}
	eventually(t, "chunk Jobs and pods released and labelled", 20*time.Second, func() (bool, string) {
		for _, j := range listJobs(t, obj, worker.RoleChunk) {
			if j.Labels[worker.LabelReleased] != "true" || j.Spec.TTLSecondsAfterFinished == nil {
				return false, fmt.Sprintf("job %s labels %v ttl %v", j.Name, j.Labels, j.Spec.TTLSecondsAfterFinished)
			}
		}
		for _, p := range listPods(t, obj) {
			if p.Labels[worker.LabelRole] != worker.RoleChunk {
				continue
			}
			if p.Labels[worker.LabelReleased] != "true" || slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				return false, fmt.Sprintf("pod %s labels %v finalizers %v", p.Name, p.Labels, p.Finalizers)
			}
		}
		return true, ""
	})
	if !failed.Load() {
		t.Fatal("the pod release of chunk 1 was never attempted")
	}
	if !jobFirst.Load() {
		t.Error("chunk 1's pod was released before its Job was labelled and given its TTL")
	}
	// The planner is not a chunk: it stays in the cache, unlabelled.
	for _, j := range listJobs(t, obj, worker.RolePlan) {
		if _, ok := j.Labels[worker.LabelReleased]; ok {
			t.Errorf("planner Job %s labelled released", j.Name)
		}
	}
	_, chunks := taskItem(t, obj.Spec.TaskID)
	for i := range 2 {
		if e := chunks[tasktable.ChunkKey(i)]; e.Status != "completed" || e.ProcessedRecords != 1000 || e.VectorsUpserted != 1000 {
			t.Errorf("task-table chunk %d: %+v", i, e)
		}
	}
}
