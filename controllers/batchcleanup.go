package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// FinalizerBatchCleanup holds a batch-mode ingestion until its cleanup Job has cancelled its
// open batches and deleted their files at OpenAI, so deleting a running ingestion does not leave
// batches running (and billed) behind. Online ingestions never get it. It is removed when the
// cleanup Job succeeded, when it failed (bounded by the Job's backoffLimit and deadline: a
// Warning event says what was left behind), when nothing was ever submitted (no plan), or when
// the namespace is being deleted (no Job can be created there any more).
const FinalizerBatchCleanup = "ingestion.vectordb.io/batch-cleanup"

// Reasons of the BatchCleanup condition and its events.
const (
	ReasonBatchCleanupDone    = "BatchCleanupDone"
	ReasonBatchCleanupFailed  = "BatchCleanupFailed"
	ReasonBatchCleanupSkipped = "BatchCleanupSkipped"
	ReasonBatchCleanupBlocked = "BatchCleanupBlocked"
)

// batchCleanupRetry is how soon a cleanup Job the API server refused is tried again.
const batchCleanupRetry = 10 * time.Second

// cleanupJobState is what the cluster shows of an ingestion's cleanup Job.
type cleanupJobState int

const (
	cleanupNoJob cleanupJobState = iota
	cleanupRunning
	cleanupSucceeded
	cleanupFailed
)

// batchFinalizerAction is what to do with FinalizerBatchCleanup in one pass.
type batchFinalizerAction int

const (
	finalizerKeep batchFinalizerAction = iota // nothing to do (absent and not wanted, or waiting)
	finalizerAdd
	finalizerRemoveDone    // the cleanup Job succeeded
	finalizerRemoveFailed  // the cleanup Job failed: give up, saying what was left
	finalizerRemoveNothing // nothing was submitted (no plan), or not batch mode
)

// batchFinalizerInput is what the decision depends on.
type batchFinalizerInput struct {
	batch, has, deleting, terminal bool
	// planned: a plan was made (the ConfigMap is there or the status pinned one), so chunks may
	// have submitted batches.
	planned bool
	job     cleanupJobState
}

// decideBatchFinalizer is the finalizer's pure decision. A running batch ingestion (not yet
// deleted) gets it; a deleted running one is first stopped like spec.cancel (the pass does that),
// so only a terminal one is ever released, once its cleanup Job has ended.
func decideBatchFinalizer(in batchFinalizerInput) batchFinalizerAction {
	switch {
	case !in.batch:
		if in.has {
			return finalizerRemoveNothing // never ours to hold (the mode is immutable)
		}
		return finalizerKeep
	case !in.has:
		if !in.deleting && !in.terminal {
			return finalizerAdd
		}
		return finalizerKeep
	case !in.terminal:
		return finalizerKeep // the pass stops the run first (cancel on delete)
	case !in.planned:
		return finalizerRemoveNothing
	}
	switch in.job {
	case cleanupSucceeded:
		return finalizerRemoveDone
	case cleanupFailed:
		return finalizerRemoveFailed
	}
	return finalizerKeep // the Job is being created or runs
}

// holdsBatchCleanup reports whether a deleted ingestion must be stopped and cleaned up through
// the normal pass rather than let go at once.
func holdsBatchCleanup(obj *v1alpha1.CsvIngestion) bool {
	return obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch && controllerutil.ContainsFinalizer(obj, FinalizerBatchCleanup)
}

// cleanupJobOf returns the ingestion's cleanup Job and its state. A Job of that name that does
// not carry this ingestion's UID (label or controller reference) is reported as foreign: one
// left by an earlier ingestion of the same name (a deleted one's cleanup is not owned, see
// cleanupStaged), or anyone else's, whose end must not release the finalizer.
func (r *Reconciler) cleanupJobOf(ctx context.Context, obj *v1alpha1.CsvIngestion) (*batchv1.Job, cleanupJobState, bool, error) {
	job := &batchv1.Job{}
	err := r.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: worker.CleanupJobName(obj.Name)}, job)
	if apierrors.IsNotFound(err) {
		return nil, cleanupNoJob, false, nil
	}
	if err != nil {
		return nil, cleanupNoJob, false, fmt.Errorf("get cleanup Job of %s: %w", obj.Name, err)
	}
	if !ownCleanupJob(job, obj.UID) {
		return job, cleanupNoJob, true, nil
	}
	switch {
	case jobCompleteCondition(job):
		return job, cleanupSucceeded, false, nil
	case jobFailedCondition(job):
		return job, cleanupFailed, false, nil
	case !job.DeletionTimestamp.IsZero():
		return job, cleanupNoJob, false, nil // going: another is created once it is gone
	}
	return job, cleanupRunning, false, nil
}

// ownCleanupJob: the Job is the cleanup Job of the ingestion with this UID.
func ownCleanupJob(job *batchv1.Job, uid types.UID) bool {
	if ref := metav1.GetControllerOf(job); ref != nil {
		return ref.UID == uid
	}
	return job.Labels[worker.LabelUID] == string(uid) && job.Labels[worker.LabelRole] == worker.RoleCleanup
}

// leftoverCleanupJob: the Job is the (unowned) cleanup Job an earlier ingestion of this name
// left, which the controller may delete once it has ended. Anyone else's Job is never touched.
func leftoverCleanupJob(job *batchv1.Job, obj *v1alpha1.CsvIngestion) bool {
	return metav1.GetControllerOf(job) == nil && job.Labels[worker.LabelRole] == worker.RoleCleanup &&
		job.Labels[worker.LabelUID] != "" && job.Labels[worker.LabelUID] != string(obj.UID) &&
		job.Labels[worker.LabelName] == worker.LabelValue(obj.Name)
}

// cannotStart are the kubelet's reasons for a container that will not start without someone
// acting: its Secret or image is missing.
var cannotStart = map[string]bool{"CreateContainerConfigError": true, "CreateContainerError": true,
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true}

// stuckCleanupPod returns why a pod of the ingestion's cleanup Job cannot start ("" if none
// is stuck). Such a pod would hold a deletion for the Job's whole deadline (chunkTimeout times
// retriesPerChunk+1, two hours by default) without a word; the kubelet's reason is in its
// container status, which no pod event wakes a pass for, so the caller polls.
func (r *Reconciler) stuckCleanupPod(ctx context.Context, obj *v1alpha1.CsvIngestion) (string, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelUID: string(obj.UID), worker.LabelRole: worker.RoleCleanup}); err != nil {
		return "", fmt.Errorf("list the cleanup pods of %s: %w", obj.Name, err)
	}
	for _, p := range pods.Items {
		if !p.DeletionTimestamp.IsZero() || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && cannotStart[w.Reason] {
				return fmt.Sprintf("pod %s cannot start: %s: %s", p.Name, w.Reason, w.Message), nil
			}
		}
	}
	return "", nil
}

// batchCleanup applies decideBatchFinalizer after the pass (and cleanupStaged) ran. It returns
// true when it removed the finalizer, and when to look again at a cleanup Job whose pod cannot
// start (0: no need).
func (r *Reconciler) batchCleanup(ctx context.Context, obj *v1alpha1.CsvIngestion, kids *children) (bool, time.Duration, error) {
	batch := obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch
	has := controllerutil.ContainsFinalizer(obj, FinalizerBatchCleanup)
	if !batch && !has {
		return false, 0, nil // online: never touched
	}
	in := batchFinalizerInput{batch: batch, has: has, deleting: !obj.DeletionTimestamp.IsZero(),
		terminal: obj.Status.Phase.Terminal(), planned: kids.plan != nil || obj.Status.Plan != nil}
	var job *batchv1.Job
	if in.has && in.terminal && in.planned {
		var err error
		if job, in.job, _, err = r.cleanupJobOf(ctx, obj); err != nil {
			return false, 0, err
		}
	}
	var cond *metav1.Condition
	switch decideBatchFinalizer(in) {
	case finalizerKeep, finalizerAdd: // adding is done before the pass (Reconcile)
		if in.job != cleanupRunning {
			return false, 0, nil
		}
		why, err := r.stuckCleanupPod(ctx, obj)
		if err != nil || why == "" {
			if in.deleting {
				// A deletion waits: keep looking, at the latest when its wait would end.
				retry := batchCleanupRetry
				if left := r.Config.FinalizerTimeout - r.Now().Sub(obj.DeletionTimestamp.Time); left > 0 {
					retry = min(retry, left)
				}
				return false, retry, err
			}
			return false, 0, err
		}
		retry, err := r.batchCleanupRefused(ctx, obj, fmt.Errorf("cleanup Job %s: %s", job.Name, why))
		return retry == 0, retry, err
	case finalizerRemoveDone:
		cond = &metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonBatchCleanupDone,
			Message: fmt.Sprintf("cleanup Job %s cancelled the open batches and deleted their files at OpenAI", job.Name)}
	case finalizerRemoveFailed:
		msg := fmt.Sprintf("cleanup Job %s failed (%s): batches of chunks that did not finish may still be open at OpenAI and their files not deleted; "+
			"they are listed in the chunks' records under %s (run `embedder cleanup` again, or cancel them at OpenAI)",
			job.Name, jobFailureMessage(job), batchRecordLocation(obj))
		r.Recorder.Eventf(obj, job, corev1.EventTypeWarning, ReasonBatchCleanupFailed, "Cleanup", "%s", msg)
		cond = &metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonBatchCleanupFailed, Message: truncate(msg, 1000)}
	case finalizerRemoveNothing:
		if batch {
			cond = &metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonBatchCleanupSkipped,
				Message: "no plan was made, so no batch was submitted"}
		}
	}
	return true, 0, r.removeBatchFinalizer(ctx, obj, cond)
}

// removeBatchFinalizer records cond (unless the ingestion is going: the event stays, the
// status does not) and removes the finalizer.
func (r *Reconciler) removeBatchFinalizer(ctx context.Context, obj *v1alpha1.CsvIngestion, cond *metav1.Condition) error {
	if cond != nil && obj.DeletionTimestamp.IsZero() {
		cond.Type, cond.ObservedGeneration = v1alpha1.ConditionBatchCleanup, obj.Generation
		if meta.SetStatusCondition(&obj.Status.Conditions, *cond) {
			if err := r.Status().Update(ctx, obj); err != nil {
				return client.IgnoreNotFound(err)
			}
		}
	}
	if !controllerutil.RemoveFinalizer(obj, FinalizerBatchCleanup) {
		return nil
	}
	if err := r.Update(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove finalizer %s of %s: %w", FinalizerBatchCleanup, obj.Name, err)
	}
	return nil
}

// batchCleanupRefused reports a cleanup Job that could not be created (a quota, an admission
// policy, missing RBAC, a Job of that name that is not the ingestion's) or whose pod cannot
// start (its Secret or image missing; the unowned Job of a deleted ingestion goes on trying
// after the ingestion went, until its deadline): the BatchCleanup
// condition (False, BatchCleanupBlocked) and a Warning event carry the server's message, and it
// is tried again. A deleted ingestion waits for it at most FinalizerTimeout from its deletion,
// then goes as in a terminating namespace, so deletion never hangs on a refusal. It returns
// when to try again (0 once it gave up).
func (r *Reconciler) batchCleanupRefused(ctx context.Context, obj *v1alpha1.CsvIngestion, why error) (time.Duration, error) {
	retry := batchCleanupRetry
	if !obj.DeletionTimestamp.IsZero() {
		waited := r.Now().Sub(obj.DeletionTimestamp.Time)
		if waited >= r.Config.FinalizerTimeout {
			return 0, r.giveUpBatchCleanup(ctx, obj, fmt.Errorf("tried for %s: %w", waited.Round(time.Second), why))
		}
		retry = min(retry, r.Config.FinalizerTimeout-waited)
	}
	msg := fmt.Sprintf("the cleanup cannot run, retrying: %v", why)
	r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBatchCleanupBlocked, "Cleanup", "%s", msg)
	if meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionBatchCleanup,
		Status: metav1.ConditionFalse, Reason: ReasonBatchCleanupBlocked, Message: truncate(msg, 1000), ObservedGeneration: obj.Generation}) {
		if err := r.Status().Update(ctx, obj); err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return retry, fmt.Errorf("record the refused cleanup of %s: %w", obj.Name, err)
		}
	}
	return retry, nil
}

// giveUpBatchCleanup lets a deleted ingestion go when no cleanup Job can run: its namespace is
// being deleted (the API server refuses new objects there, and deletes the Secret and Jobs), or
// the Job was refused for FinalizerTimeout.
func (r *Reconciler) giveUpBatchCleanup(ctx context.Context, obj *v1alpha1.CsvIngestion, why error) error {
	msg := fmt.Sprintf("the cleanup cannot run (%v): batches of chunks that did not finish may still be open at OpenAI; they are listed in the chunks' records under %s",
		why, batchRecordLocation(obj))
	r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonBatchCleanupFailed, "Cleanup", "%s", msg)
	return r.removeBatchFinalizer(ctx, obj, &metav1.Condition{Status: metav1.ConditionFalse,
		Reason: ReasonBatchCleanupFailed, Message: truncate(msg, 1000)})
}

func batchRecordLocation(obj *v1alpha1.CsvIngestion) string {
	d := obj.Spec.DeadLetter
	if d == nil {
		return "spec.deadLetter"
	}
	id := obj.EffectiveTaskID()
	if uid := string(obj.UID); uid != "" && uid != id {
		id += "-" + uid // as worker.Ingestion.ObjectID
	}
	return fmt.Sprintf("s3://%s/%s%s/", d.Bucket, d.KeyPrefix, id)
}

// jobFailureMessage is the Failed condition's reason and message.
func jobFailureMessage(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			if c.Message == "" {
				return c.Reason
			}
			return c.Reason + ": " + c.Message
		}
	}
	return "failed"
}
