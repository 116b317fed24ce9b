package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// The lifecycle of spec.sync.deleteMissing's step, with the test playing the Job controller and
// kubelet as elsewhere in this suite.

func deleteMissing(o *v1alpha1.CsvIngestion) {
	o.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](10)}
}

// finishChunks finishes chunks 0..n-1 with result(i), waiting for each Job to exist.
func finishChunks(t *testing.T, obj *v1alpha1.CsvIngestion, from, to int, result func(i int) (worker.Result, int32, string)) {
	t.Helper()
	for i := from; i < to; i++ {
		job := waitJob(t, obj.Namespace, worker.ChunkJobName(obj.Name, i))
		res, code, reason := result(i)
		finishJob(t, job, res, code, reason)
	}
}

func missingDeleted(obj *v1alpha1.CsvIngestion) *metav1.Condition {
	return meta.FindStatusCondition(obj.Status.Conditions, v1alpha1.ConditionMissingDeleted)
}

func syncResult(listed, missing, deleted int64) worker.Result {
	return worker.Result{Role: worker.RoleSync, RowsRead: 3000, Listed: listed, Missing: missing, Deleted: deleted, Requests: 31}
}

// The sync Job starts only after the last chunk succeeded, carries the contract (whole file,
// Pinecone key only, outcome finalizer), keeps the phase at ProcessingChunks with MissingDeleted
// Deleting while it runs, and ends the run Completed with the deletions of every attempt counted
// in status, task item and events; then its Job and pods are released.
func TestSyncStepAfterEveryChunkSucceeded(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "prune", deleteMissing))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	plan := writePlan(t, obj, 3000, 1000)
	finishChunks(t, obj, 0, 2, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	eventually(t, "two chunks recorded", 15*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Succeeded == 2, mustJSON(cur.Status.Chunks)
	})
	if jobs := listJobs(t, obj, worker.RoleSync); len(jobs) != 0 || missingDeleted(get(t, obj)) != nil {
		t.Fatalf("sync step started before every chunk succeeded: %d jobs, %+v", len(jobs), missingDeleted(get(t, obj)))
	}
	finishChunks(t, obj, 2, 3, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })

	job := waitJob(t, ns, worker.SyncJobName(obj.Name))
	var cur *v1alpha1.CsvIngestion
	eventually(t, "MissingDeleted Deleting", 15*time.Second, func() (bool, string) {
		cur = get(t, obj)
		c := missingDeleted(cur)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == controllers.ReasonDeleting, mustJSON(cur.Status)
	})
	if cur.Status.Phase != v1alpha1.PhaseProcessingChunks || cur.Status.Progress != "3/3" || cur.Status.CompletionTime != nil {
		t.Errorf("while the sync Job runs: phase %s progress %s completion %v", cur.Status.Phase, cur.Status.Progress, cur.Status.CompletionTime)
	}
	whole := plan.Whole()
	c := job.Spec.Template.Spec.Containers[0]
	if want := whole.SyncFlags(); !slices.Equal(c.Args, want) || c.Args[0] != "sync" {
		t.Errorf("sync args %v, want %v", c.Args, want)
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--rows=3000") || job.Labels[worker.LabelRole] != worker.RoleSync ||
		!slices.Contains(job.Spec.Template.Finalizers, worker.FinalizerOutcome) || *job.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Errorf("sync Job %s: args %v, labels %v, finalizers %v", job.Name, c.Args, job.Labels, job.Spec.Template.Finalizers)
	}
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name)
		if e.Value != "" && (e.Name == worker.EnvPineconeAPIKey || e.Name == worker.EnvOpenAIAPIKey) {
			t.Errorf("%s set inline", e.Name)
		}
	}
	if !slices.Contains(env, worker.EnvPineconeAPIKey) || slices.Contains(env, worker.EnvOpenAIAPIKey) {
		t.Errorf("sync env %v: want the Pinecone key by reference and no OpenAI key", env)
	}
	wantEvents(t, obj, controllers.ReasonDeleting)

	// One attempt deleted 12 before it failed; the retry deletes the other 18.
	failAttempt(t, job, worker.Result{Role: worker.RoleSync, Listed: 3030, Missing: 30, Deleted: 12, Reason: worker.ReasonRetryableError, Error: "pinecone delete: unavailable"})
	finishJob(t, job, syncResult(3018, 18, 18), 0, "")
	final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
	cond := missingDeleted(final)
	if final.Status.Records.Deleted != 30 || cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != controllers.ReasonDeleted ||
		!strings.Contains(cond.Message, "deleted 30 vectors under id prefix \"239.\"") || !strings.Contains(final.Status.Message, "deleted 30") {
		t.Fatalf("final: deleted %d, condition %+v, message %q", final.Status.Records.Deleted, cond, final.Status.Message)
	}
	wantEvents(t, obj, controllers.ReasonDeleted, "Completed")
	eventually(t, "task item with the deletions", 15*time.Second, func() (bool, string) {
		task, _ := taskItem(t, obj.Spec.TaskID)
		return task.Status == "completed" && task.DeletedRecords == 30, mustJSON(task)
	})
	eventually(t, "sync Job and pod released", 15*time.Second, func() (bool, string) {
		j := getJob(t, ns, job.Name)
		var pods corev1.PodList
		if err := cluster.Client.List(context.Background(), &pods); err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.Namespace == ns && p.Labels["batch.kubernetes.io/job-name"] == job.Name && slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				return false, "pod " + p.Name + " still held"
			}
		}
		return j.Spec.TTLSecondsAfterFinished != nil, "no TTL on the sync Job"
	})
}

// A PartiallyCompleted run runs the sync step too (the sync Job takes the ids from the file, so
// failed rows keep their vectors) and stays PartiallyCompleted with what it deleted and left
// alone; when a row has no id the step deletes nothing and says so (NoKey). A dry run starts no
// sync Job.
func TestSyncStepAfterPartialRun(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	partial := func(name string) *v1alpha1.CsvIngestion {
		obj := create(t, newIngestion(ns, name, func(o *v1alpha1.CsvIngestion) {
			deleteMissing(o)
			// A prefix of its own: two runs of one prefix created within a second are ordered by
			// name, and the later one could be taken for the newer one's elder and superseded
			// (TestSyncStepOverlappingRuns covers peers).
			o.Spec.Mapping.IDPrefix = name + "."
			o.Spec.Chunking.MaxFailedRowsPercent = 10
		}))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 2000, 1000)
		finishChunks(t, obj, 0, 2, func(i int) (worker.Result, int32, string) {
			res := okResult(1000)
			if i == 1 {
				res.Processed, res.VectorsUpserted, res.Failed = 990, 990, 10
			}
			return res, 0, ""
		})
		return obj
	}
	obj := partial("partial")
	job := waitJob(t, ns, worker.SyncJobName(obj.Name))
	finishJob(t, job, worker.Result{Role: worker.RoleSync, RowsRead: 2000, Listed: 2050, Missing: 57, Deletable: 50, Deleted: 50, LeftAlone: 7}, 0, "")
	final := waitPhase(t, obj, v1alpha1.PhasePartiallyCompleted)
	c := missingDeleted(final)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonDeleted || final.Status.Records.Deleted != 50 || final.Status.Records.LeftAlone != 7 ||
		!strings.Contains(c.Message, "7 vectors under the prefix belong to another source; left alone") || final.Status.Records.Failed != 10 {
		t.Fatalf("partial run: records %+v, MissingDeleted %+v", final.Status.Records, c)
	}
	wantEvents(t, obj, controllers.ReasonDeleted, string(v1alpha1.PhasePartiallyCompleted))

	nokey := partial("nokey")
	job = waitJob(t, ns, worker.SyncJobName(nokey.Name))
	finishJob(t, job, worker.Result{Role: worker.RoleSync, RowsRead: 2000, Reason: worker.ReasonNoKey, Error: "3 of 2000 rows of the file have no vector id"},
		worker.ExitPermanent, batchv1.JobReasonPodFailurePolicy)
	final = waitPhase(t, nokey, v1alpha1.PhasePartiallyCompleted)
	if c := missingDeleted(final); c == nil || c.Status != metav1.ConditionFalse || c.Reason != worker.ReasonNoKey || final.Status.Records.Deleted != 0 {
		t.Fatalf("a row without id: %+v, deleted %d", c, final.Status.Records.Deleted)
	}
	wantEvents(t, nokey, worker.ReasonNoKey)

	dry := create(t, newIngestion(ns, "dry", func(o *v1alpha1.CsvIngestion) { deleteMissing(o); o.Spec.DryRun = true }))
	waitPhase(t, dry, v1alpha1.PhasePlanning)
	writePlan(t, dry, 2000, 1000)
	waitPhase(t, dry, v1alpha1.PhaseCompleted)
	if jobs := listJobs(t, dry, worker.RoleSync); len(jobs) != 0 || missingDeleted(get(t, dry)) != nil {
		t.Fatalf("a dry run created %d sync Jobs", len(jobs))
	}
}

// spec.suspend holds the sync step (MissingDeleted False, Suspended, an event, no Job) until it
// is unset; maxDeletePercent 0 runs the step as a report: Completed, MissingDeleted ReportOnly.
func TestSyncStepSuspendedAndReportOnly(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "held", func(o *v1alpha1.CsvIngestion) {
		deleteMissing(o)
		o.Spec.Sync.MaxDeletePercent = ptr.To[int32](0)
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	finishChunks(t, obj, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	last := waitJob(t, ns, worker.ChunkJobName(obj.Name, 1))
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	// The controller suspends the running chunk first (finishing it meanwhile would race that
	// write).
	eventually(t, "last chunk suspended", 15*time.Second, func() (bool, string) {
		j := getJob(t, ns, last.Name)
		return j.Spec.Suspend != nil && *j.Spec.Suspend, "not suspended"
	})
	finishJob(t, last, okResult(1000), 0, "")
	var cur *v1alpha1.CsvIngestion
	eventually(t, "sync step held", 20*time.Second, func() (bool, string) {
		cur = get(t, obj)
		c := missingDeleted(cur)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == controllers.ReasonSyncSuspended, mustJSON(cur.Status)
	})
	if jobs := listJobs(t, obj, worker.RoleSync); len(jobs) != 0 || cur.Status.Phase != v1alpha1.PhaseProcessingChunks || cur.Status.CompletionTime != nil {
		t.Fatalf("while suspended: %d sync Jobs, phase %s", len(jobs), cur.Status.Phase)
	}
	wantEvents(t, obj, controllers.ReasonSyncSuspended)
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	job := waitJob(t, ns, worker.SyncJobName(obj.Name))
	finishJob(t, job, worker.Result{Role: worker.RoleSync, RowsRead: 2000, Listed: 2100, Missing: 100, Deletable: 100}, 0, "")
	final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
	if c := missingDeleted(final); c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonReportOnly ||
		!strings.Contains(c.Message, "100 vectors under id prefix \"239.\" are not in the file and would be deleted") || final.Status.Records.Deleted != 0 {
		t.Fatalf("report only: %+v, deleted %d", c, final.Status.Records.Deleted)
	}
	wantEvents(t, obj, controllers.ReasonReportOnly)
}

// Two overlapping runs with one prefix: the older one's sync step waits while the newer one
// writes, and is superseded once the newer one finished writing (it never gets a sync Job); the
// newer one deletes. A third run created while that sync Job deletes starts no chunk until it
// is done. A run that fails says it deleted nothing.
func TestSyncStepOverlappingRuns(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	// Created within a second, runs are ordered by name: run-1 < run-2 < run-3.
	older := create(t, newIngestion(ns, "run-1", deleteMissing))
	waitPhase(t, older, v1alpha1.PhasePlanning)
	writePlan(t, older, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(older.Name, 0))
	newer := create(t, newIngestion(ns, "run-2", deleteMissing))
	waitPhase(t, newer, v1alpha1.PhasePlanning)
	writePlan(t, newer, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(newer.Name, 0))

	finishChunks(t, older, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	eventually(t, "older waits", 20*time.Second, func() (bool, string) {
		c := missingDeleted(get(t, older))
		return c != nil && c.Reason == controllers.ReasonSyncWaiting && strings.Contains(c.Message, ns+"/run-2"), mustJSON(c)
	})
	wantEvents(t, older, controllers.ReasonSyncWaiting)
	finishChunks(t, newer, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	eventually(t, "newer deletes", 20*time.Second, func() (bool, string) {
		c := missingDeleted(get(t, newer))
		return c != nil && c.Reason == controllers.ReasonDeleting, mustJSON(get(t, newer).Status.Conditions) + mustJSON(get(t, older).Status.Conditions)
	})
	job := waitJob(t, ns, worker.SyncJobName(newer.Name))
	final := waitPhase(t, older, v1alpha1.PhaseCompleted)
	if c := missingDeleted(final); c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonSuperseded || !strings.Contains(c.Message, ns+"/run-2") {
		t.Fatalf("older: %+v", c)
	}
	if jobs := listJobs(t, older, worker.RoleSync); len(jobs) != 0 {
		t.Fatalf("the older run got a sync Job")
	}
	wantEvents(t, older, controllers.ReasonSuperseded)

	third := create(t, newIngestion(ns, "run-3", deleteMissing))
	waitPhase(t, third, v1alpha1.PhasePlanning)
	writePlan(t, third, 1000, 1000)
	eventually(t, "third holds its chunks", 20*time.Second, func() (bool, string) {
		cur := get(t, third)
		return strings.Contains(cur.Status.Message, "no new chunk starts while the older ingestion "+ns+"/run-2 deletes"), cur.Status.Message
	})
	if jobs := listJobs(t, third, worker.RoleChunk); len(jobs) != 0 {
		t.Fatalf("the third run started %d chunks while an older run deletes", len(jobs))
	}
	finishJob(t, job, syncResult(1000, 0, 0), 0, "")
	waitPhase(t, newer, v1alpha1.PhaseCompleted)
	waitJob(t, ns, worker.ChunkJobName(third.Name, 0))
	update(t, third, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	if c := missingDeleted(waitPhase(t, third, v1alpha1.PhaseCancelled)); c == nil || c.Reason != controllers.ReasonSyncCancelled || !strings.Contains(c.Message, "nothing was deleted") {
		t.Fatalf("cancelled run: %+v", c)
	}
}

// A newer run deleted before the older one reaches its sync step leaves no peer in the cluster,
// but it may have written vectors the older file lacks: the writers record keeps it, and the
// older run ends Superseded without a sync Job. A run whose sync step claimed the prefix in the
// record holds a newer run's chunks while it is not terminal, even when the cache does not show
// it deleting; the claim is dropped once it ended.
func TestSyncStepNewerRunDeleted(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	startManager(t, nil, ns)
	older := create(t, newIngestion(ns, "run-1", deleteMissing))
	waitPhase(t, older, v1alpha1.PhasePlanning)
	writePlan(t, older, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(older.Name, 0))
	// The newer run writes without spec.sync: any writer under the prefix counts.
	newer := create(t, newIngestion(ns, "run-2", nil))
	waitPhase(t, newer, v1alpha1.PhasePlanning)
	writePlan(t, newer, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(newer.Name, 0))
	if err := cluster.Client.Delete(ctx, get(t, newer)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "newer run gone", 20*time.Second, func() (bool, string) {
		err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(newer), &v1alpha1.CsvIngestion{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	finishChunks(t, older, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	final := waitPhase(t, older, v1alpha1.PhaseCompleted)
	if c := missingDeleted(final); c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonSuperseded ||
		!strings.Contains(c.Message, ns+"/run-2 (deleted since)") {
		t.Fatalf("older run after the newer one was deleted: %s", mustJSON(c))
	}
	if jobs := listJobs(t, older, worker.RoleSync); len(jobs) != 0 {
		t.Fatalf("the older run got a sync Job")
	}
	wantEvents(t, older, controllers.ReasonSuperseded)

	// The record, as the manager keeps it: the claim of a run that is not terminal holds a newer
	// run's chunks (the cache shows that run still writing, not deleting). run-2 recorded itself
	// (run-1 deleted under the prefix); run-3 does not (no run that deletes is running).
	holder := create(t, newIngestion(ns, "run-3", deleteMissing))
	waitPhase(t, holder, v1alpha1.PhasePlanning)
	writePlan(t, holder, 2000, 1000)
	waitJob(t, ns, worker.ChunkJobName(holder.Name, 0))
	lease := &coordinationv1.Lease{}
	var leaseName string
	eventually(t, "the writers record", 10*time.Second, func() (bool, string) {
		var leases coordinationv1.LeaseList
		if err := cluster.Client.List(ctx, &leases, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/component": "writers-record"}); err != nil || len(leases.Items) != 1 {
			return false, fmt.Sprint(len(leases.Items), err)
		}
		*lease, leaseName = leases.Items[0], leases.Items[0].Name
		return strings.Contains(lease.Annotations["ingestion.vectordb.io/writers"], `"name":"run-2"`), lease.Annotations["ingestion.vectordb.io/writers"]
	})
	if rec := lease.Annotations["ingestion.vectordb.io/writers"]; strings.Contains(rec, `"name":"run-3"`) {
		t.Fatalf("run-3 recorded itself with no run deleting under the prefix: %s", rec)
	}
	h := get(t, holder)
	claim := fmt.Sprintf(`{"uid":%q,"ns":%q,"name":"run-3","created":%q,"targetNamespace":%q}`, h.UID, ns, h.CreationTimestamp.UTC().Format(time.RFC3339), h.Spec.Target.Pinecone.Namespace)
	rec := strings.TrimSuffix(lease.Annotations["ingestion.vectordb.io/writers"], "}") + `,"deleters":[` + claim + `]}`
	lease.Annotations["ingestion.vectordb.io/writers"] = rec
	if err := cluster.Client.Update(ctx, lease); err != nil {
		t.Fatal(err)
	}
	later := create(t, newIngestion(ns, "run-4", nil))
	waitPhase(t, later, v1alpha1.PhasePlanning)
	writePlan(t, later, 1000, 1000)
	eventually(t, "the newer run holds its chunks", 20*time.Second, func() (bool, string) {
		cur := get(t, later)
		return strings.Contains(cur.Status.Message, "no new chunk starts while the older ingestion "+ns+"/run-3 deletes"), cur.Status.Message
	})
	if jobs := listJobs(t, later, worker.RoleChunk); len(jobs) != 0 {
		t.Fatalf("the newer run started %d chunks while an older run's claim stands", len(jobs))
	}
	update(t, holder, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	waitPhase(t, holder, v1alpha1.PhaseCancelled)
	waitJob(t, ns, worker.ChunkJobName(later.Name, 0))
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: leaseName}, lease); err != nil {
		t.Fatal(err)
	}
	if rec := lease.Annotations["ingestion.vectordb.io/writers"]; !strings.Contains(rec, `"name":"run-4"`) {
		t.Fatalf("run-4 was held by run-3's claim but is not recorded: %s", rec)
	}
	update(t, later, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	waitPhase(t, later, v1alpha1.PhaseCancelled)
}

// The delete guard stops the run: Failed with reason DeleteGuard, the worker's message (counts,
// percent, override) in the condition and a Warning event, nothing counted as deleted. Another
// failure (a permanent provider error) ends Failed with its own reason and message.
func TestSyncStepFailures(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	guardMsg := `DeleteGuard: delete guard: 1200 of the 3000 vectors under id prefix "239." (40.0%) are not in the file, more than spec.sync.maxDeletePercent (10%); nothing was deleted. If the file is complete and they should go, create a new CsvIngestion with spec.sync.maxDeletePercent of at least 40 (spec.sync is immutable)`
	for _, tc := range []struct {
		name, reason, errMsg string
		deleted              int64
		wantIn               string
	}{
		{"guard", worker.ReasonDeleteGuard, guardMsg, 0, "at least 40"},
		{"refused", worker.ReasonUnauthorized, "Unauthorized: pinecone delete of 1000 ids from namespace \"v2\": rpc error: code = PermissionDenied desc = key lacks delete", 1000, "key lacks delete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := create(t, newIngestion(ns, tc.name, deleteMissing))
			waitPhase(t, obj, v1alpha1.PhasePlanning)
			writePlan(t, obj, 3000, 1000)
			finishChunks(t, obj, 0, 3, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
			job := waitJob(t, ns, worker.SyncJobName(obj.Name))
			res := worker.Result{Role: worker.RoleSync, Listed: 3000, Missing: 1200, Deleted: tc.deleted, Reason: tc.reason, Error: tc.errMsg}
			finishJob(t, job, res, worker.ExitPermanent, batchv1.JobReasonPodFailurePolicy)
			final := waitPhase(t, obj, v1alpha1.PhaseFailed)
			cond := missingDeleted(final)
			failed := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
			if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.wantIn) ||
				failed == nil || failed.Reason != tc.reason || !strings.Contains(failed.Message, tc.wantIn) || final.Status.Records.Deleted != tc.deleted {
				t.Fatalf("MissingDeleted %+v, Failed %+v, deleted %d", cond, failed, final.Status.Records.Deleted)
			}
			if final.Status.Records.Processed != 3000 {
				t.Errorf("processed %d: the chunks' work stays counted", final.Status.Records.Processed)
			}
			wantEvents(t, obj, tc.reason, "Failed")
		})
	}
}

// Cancelling while the sync Job runs deletes the Job and says that some vectors may be gone.
func TestSyncStepCancelled(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "cancel", deleteMissing))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 1000, 1000)
	finishChunks(t, obj, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	job := waitJob(t, ns, worker.SyncJobName(obj.Name))
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	final := waitPhase(t, obj, v1alpha1.PhaseCancelled)
	if c := missingDeleted(final); c == nil || c.Reason != "Cancelled" || !strings.Contains(c.Message, "some of them may be deleted") {
		t.Errorf("MissingDeleted after cancel: %+v", c)
	}
	eventually(t, "sync Job deleted", 15*time.Second, func() (bool, string) {
		j := &batchv1.Job{}
		err := cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: job.Name}, j)
		return ignoreNotFound(err) == nil && (err != nil || !j.DeletionTimestamp.IsZero()), "sync Job still there"
	})
}
