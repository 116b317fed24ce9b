package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func batchIngestion(ns, name string) *v1alpha1.CsvIngestion {
	return newIngestion(ns, name, func(o *v1alpha1.CsvIngestion) {
		o.Spec.Embedding.Mode = v1alpha1.EmbeddingBatch
		o.Spec.DeadLetter = &v1alpha1.DeadLetterSpec{Bucket: "failed-rows", KeyPrefix: "dl/"}
	})
}

// runningBatch creates a batch-mode ingestion, plans it and waits until its chunks run and it
// holds the batch-cleanup finalizer.
func runningBatch(t *testing.T, ns, name string) *v1alpha1.CsvIngestion {
	t.Helper()
	obj := create(t, batchIngestion(ns, name))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 4000, 1000)
	eventually(t, "running with the batch-cleanup finalizer", 20*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return len(runningChunkJobs(t, obj)) == 4 && slices.Contains(cur.Finalizers, controllers.FinalizerBatchCleanup),
			fmt.Sprintf("finalizers %v, phase %s", cur.Finalizers, cur.Status.Phase)
	})
	return get(t, obj)
}

func deleteIngestion(t *testing.T, obj *v1alpha1.CsvIngestion) {
	t.Helper()
	if err := cluster.Client.Delete(context.Background(), obj); ignoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

func waitGone(t *testing.T, obj *v1alpha1.CsvIngestion) {
	t.Helper()
	eventually(t, obj.Name+" gone", 30*time.Second, func() (bool, string) {
		cur := &v1alpha1.CsvIngestion{}
		err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), cur)
		return err != nil && ignoreNotFound(err) == nil, fmt.Sprintf("finalizers %v, phase %s: %s", cur.Finalizers, cur.Status.Phase, cur.Status.Message)
	})
}

// waitCleanupJob waits for the ingestion's cleanup Job other than the one whose UID is not.
func waitCleanupJob(t *testing.T, obj *v1alpha1.CsvIngestion, not types.UID) *batchv1.Job {
	t.Helper()
	j := &batchv1.Job{}
	eventually(t, "a cleanup Job", 30*time.Second, func() (bool, string) {
		err := cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: obj.Namespace, Name: worker.CleanupJobName(obj.Name)}, j)
		return err == nil && j.UID != not && j.DeletionTimestamp.IsZero(), fmt.Sprint(err)
	})
	return j
}

func deleteCleanupJob(t *testing.T, j *batchv1.Job) {
	t.Helper()
	if err := cluster.Client.Delete(context.Background(), j, client.PropagationPolicy(metav1.DeletePropagationBackground)); ignoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

// Deleting a running batch-mode ingestion stops it like spec.cancel and holds it until its
// cleanup Job (which cancels the batches at OpenAI and deletes their files) has ended; a
// cleanup that fails lets it go with a Warning event; an online ingestion never gets the
// finalizer; a cancelled run that is not deleted records the cleanup in its status.
func TestBatchCleanupFinalizer(t *testing.T) {
	ns, doomed := newNamespace(t), newNamespace(t)
	startManager(t, nil, ns, doomed)
	ctx := context.Background()

	t.Run("deletion waits for the cleanup", func(t *testing.T) {
		obj := runningBatch(t, ns, "del-ok")
		deleteIngestion(t, obj)
		cur := waitPhase(t, obj, v1alpha1.PhaseCancelled)
		if c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionComplete); c == nil || c.Reason != "Deleted" {
			t.Errorf("Complete condition %+v, want reason Deleted", c)
		}
		eventually(t, "chunk Jobs stopped", 20*time.Second, func() (bool, string) {
			n := len(runningChunkJobs(t, obj))
			return n == 0, fmt.Sprintf("%d running", n)
		})
		j := waitCleanupJob(t, obj, "")
		// Not owned (a foreground deletion would delete it first), and expiring on its own.
		if len(j.OwnerReferences) != 0 || j.Spec.TTLSecondsAfterFinished == nil || j.Labels[worker.LabelUID] != string(obj.UID) {
			t.Errorf("cleanup Job owners %v, ttl %v, labels %v", j.OwnerReferences, j.Spec.TTLSecondsAfterFinished, j.Labels)
		}
		if env := envByName(j.Spec.Template.Spec.Containers[0]); env[worker.EnvOpenAIAPIKey].ValueFrom == nil {
			t.Errorf("cleanup Job has no OpenAI key reference: %v", env)
		}
		// A user deletes the cleanup Job: another is created; the ingestion still waits.
		deleteCleanupJob(t, j)
		j2 := waitCleanupJob(t, obj, j.UID)
		consistently(t, "the ingestion stays while its cleanup runs", 2*time.Second, func() (bool, string) {
			err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
			return err == nil, fmt.Sprint(err)
		})
		// Only the Job's status changes (no pod event wakes the manager): the watch on the
		// unowned Job must.
		completeJob(t, j2)
		waitGone(t, obj)
		item, _ := taskItem(t, obj.Spec.TaskID)
		if item.Status != "cancelled" {
			t.Errorf("task item %q, want cancelled", item.Status)
		}
		deleteCleanupJob(t, j2)
	})

	t.Run("a failed cleanup lets go with a warning", func(t *testing.T) {
		obj := runningBatch(t, ns, "del-fail")
		deleteIngestion(t, obj)
		j := waitCleanupJob(t, obj, "")
		finishJob(t, j, worker.Result{Role: worker.RoleCleanup, Reason: "Unauthorized"}, 2, "BackoffLimitExceeded")
		waitGone(t, obj)
		wantEvents(t, obj, controllers.ReasonBatchCleanupFailed)
		deleteCleanupJob(t, j)
	})

	t.Run("deleted before planning: nothing to clean up", func(t *testing.T) {
		obj := create(t, batchIngestion(ns, "del-early"))
		eventually(t, "finalizer", 20*time.Second, func() (bool, string) {
			return slices.Contains(get(t, obj).Finalizers, controllers.FinalizerBatchCleanup), ""
		})
		deleteIngestion(t, get(t, obj))
		waitGone(t, obj)
		if jobs := listJobs(t, obj, worker.RoleCleanup); len(jobs) != 0 {
			t.Errorf("%d cleanup Jobs for a run that never planned", len(jobs))
		}
	})

	t.Run("online: no finalizer, deletion as before", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "online", nil))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 4000, 1000)
		eventually(t, "running", 20*time.Second, func() (bool, string) {
			return len(runningChunkJobs(t, obj)) == 4, ""
		})
		if f := get(t, obj).Finalizers; slices.Contains(f, controllers.FinalizerBatchCleanup) {
			t.Fatalf("online ingestion holds %v", f)
		}
		deleteIngestion(t, get(t, obj))
		waitGone(t, obj)
		if jobs := listJobs(t, obj, worker.RoleCleanup); len(jobs) != 0 {
			t.Errorf("%d cleanup Jobs for a deleted online run", len(jobs))
		}
	})

	t.Run("cancelled, not deleted: condition, finalizer gone", func(t *testing.T) {
		obj := runningBatch(t, ns, "cancel")
		update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
		waitPhase(t, obj, v1alpha1.PhaseCancelled)
		j := waitCleanupJob(t, obj, "")
		if len(j.OwnerReferences) != 1 || j.OwnerReferences[0].UID != obj.UID {
			t.Errorf("cleanup Job of a live ingestion not owned by it: %v", j.OwnerReferences)
		}
		finishJob(t, j, worker.Result{Role: worker.RoleCleanup}, 0, "")
		eventually(t, "BatchCleanup condition, finalizer removed", 20*time.Second, func() (bool, string) {
			cur := get(t, obj)
			c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBatchCleanup)
			return c != nil && c.Status == metav1.ConditionTrue && c.Reason == controllers.ReasonBatchCleanupDone &&
				!slices.Contains(cur.Finalizers, controllers.FinalizerBatchCleanup), fmt.Sprintf("%+v, finalizers %v", c, cur.Finalizers)
		})
		deleteIngestion(t, get(t, obj))
		waitGone(t, obj)
	})

	t.Run("namespace being deleted: lets go", func(t *testing.T) {
		obj := runningBatch(t, doomed, "in-doomed")
		// envtest runs no namespace controller: the namespace stays Terminating, and the API
		// server refuses new objects in it, as in a real cluster.
		if err := cluster.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: doomed}}); err != nil {
			t.Fatal(err)
		}
		deleteIngestion(t, obj)
		waitGone(t, obj)
		if jobs := listJobs(t, obj, worker.RoleCleanup); len(jobs) != 0 {
			t.Errorf("%d cleanup Jobs in a terminating namespace", len(jobs))
		}
	})
}

// Each batch-mode chunk's result reports its batches; the status adds them up over the
// recorded chunks, and the counters count them once.
func TestBatchStatusAddsUpChunks(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	batchesBefore, linesBefore := gather(t, "vectordb_batches_total"), gather(t, "vectordb_batch_lines_total")
	obj := create(t, batchIngestion(ns, "counts"))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 3000, 1000)
	perChunk := map[int]v1alpha1.BatchStatus{
		0: {Batches: 1, Completed: 1, Lines: 1000, LinesDone: 998, LinesFailed: 2},
		// Expired half done; the rest resubmitted in a second batch.
		1: {Batches: 2, Completed: 1, Expired: 1, Lines: 1000, LinesDone: 1000},
		2: {Batches: 1, Failed: 1, Lines: 1000, LinesFailed: 1000},
	}
	final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
		res := okResult(1000)
		b := perChunk[i]
		res.Batch = &b
		res.Processed, res.Failed = b.LinesDone, b.LinesFailed
		return res, 0, ""
	}, nil)
	want := v1alpha1.BatchStatus{Batches: 4, Completed: 2, Expired: 1, Failed: 1, Lines: 3000, LinesDone: 1998, LinesFailed: 1002}
	if final.Status.Batch == nil || *final.Status.Batch != want {
		t.Errorf("status.batch %+v, want %+v", final.Status.Batch, want)
	}
	eventually(t, "batch counts in the task item", 15*time.Second, func() (bool, string) {
		item, _ := taskItem(t, obj.Spec.TaskID)
		got := fmt.Sprintf("%+v", item.Batch)
		if item.Batch == nil {
			return false, "none"
		}
		return *item.Batch == tasktable.BatchCounts{Batches: 4, Completed: 2, Expired: 1, Failed: 1, Lines: 3000, LinesDone: 1998, LinesFailed: 1002}, got
	})
	eventually(t, "batch counters", 10*time.Second, func() (bool, string) {
		b, l := gather(t, "vectordb_batches_total"), gather(t, "vectordb_batch_lines_total")
		got := fmt.Sprintf("completed %v failed %v expired %v cancelled %v; lines submitted %v done %v failed %v",
			b["state=completed"]-batchesBefore["state=completed"], b["state=failed"]-batchesBefore["state=failed"],
			b["state=expired"]-batchesBefore["state=expired"], b["state=cancelled"]-batchesBefore["state=cancelled"],
			l["result=submitted"]-linesBefore["result=submitted"], l["result=done"]-linesBefore["result=done"], l["result=failed"]-linesBefore["result=failed"])
		return got == "completed 2 failed 1 expired 1 cancelled 0; lines submitted 3000 done 1998 failed 1002", got
	})
	// The finished run's cleanup Job ends; the finalizer goes, then the ingestion.
	finishCleanup(t, obj)
}

// finishCleanup ends the batch cleanup Job of obj (deleted, its finished run's batches to clean
// up) as its pod would, then waits for the finalizer to go and the ingestion with it.
func finishCleanup(t *testing.T, obj *v1alpha1.CsvIngestion) {
	t.Helper()
	finishJob(t, waitCleanupJob(t, obj, ""), worker.Result{Role: worker.RoleCleanup}, 0, "")
	eventually(t, "finalizer removed", 20*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return !slices.Contains(cur.Finalizers, controllers.FinalizerBatchCleanup), fmt.Sprint(cur.Finalizers)
	})
	deleteIngestion(t, get(t, obj))
	waitGone(t, obj)
}

// completeJob marks a Job complete as the Job controller would, without a pod.
func completeJob(t *testing.T, job *batchv1.Job) {
	t.Helper()
	j := getJob(t, job.Namespace, job.Name)
	now := metav1.Now()
	start := metav1.NewTime(now.Add(-5 * time.Second))
	j.Status.StartTime, j.Status.CompletionTime, j.Status.Succeeded = &start, &now, 1
	j.Status.Conditions = append(j.Status.Conditions,
		batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now},
		batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now})
	if err := cluster.Client.Status().Update(context.Background(), j); err != nil {
		t.Fatalf("complete job %s: %v", j.Name, err)
	}
}

// A manager restarted while a deleted ingestion's cleanup runs finds the Job again and lets the
// ingestion go once it ends; nothing is created twice.
func TestBatchCleanupSurvivesManagerRestart(t *testing.T) {
	ns := newNamespace(t)
	stop := startManager(t, nil, ns)
	obj := runningBatch(t, ns, "restart")
	deleteIngestion(t, obj)
	j := waitCleanupJob(t, obj, "")
	stop()
	startManager(t, nil, ns)
	consistently(t, "the same cleanup Job, the ingestion waiting", 2*time.Second, func() (bool, string) {
		cur := &batchv1.Job{}
		err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(j), cur)
		gerr := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
		return err == nil && cur.UID == j.UID && gerr == nil, fmt.Sprintf("job %v (uid %s), ingestion %v", err, cur.UID, gerr)
	})
	completeJob(t, j)
	waitGone(t, obj)
	deleteCleanupJob(t, j)
}
