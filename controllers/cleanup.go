package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// cleanupStaged starts, once the ingestion has ended, a Job running `embedder cleanup`, which
// deletes what the planner staged in S3 (the UTF-8 copy of a gzip or non-UTF-8 object, the
// duplicate-id list) and, in batch mode, cancels the batches of chunks that did not finish and
// deletes their files at OpenAI. The controller holds no S3 credentials or OpenAI key, so the deletion runs in a worker pod
// like the planner. The Job is created once and kept (no TTL) as the record of the cleanup; a
// failed cleanup is reported with a Warning event and the Job left for inspection: deleting it
// starts another. Staged objects of an online ingestion deleted before it ended are not removed
// (the Job would go with its owner); a batch-mode ingestion is held by FinalizerBatchCleanup
// until its cleanup ran (batchcleanup.go).
func (r *Reconciler) cleanupStaged(ctx context.Context, obj *v1alpha1.CsvIngestion, kids *children) error {
	batch := obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch
	var staged []string
	bucket := ""
	if kids.plan != nil {
		staged, bucket = kids.plan.StagedKeys(), kids.plan.Bucket
	}
	// Batch mode: once a plan was pinned, chunks may have submitted batches, even if the plan
	// ConfigMap is gone since (the cleanup then finds them by the chunks' records).
	planned := kids.plan != nil || (batch && obj.Status.Plan != nil)
	if !obj.Status.Phase.Terminal() || !planned || (len(staged) == 0 && !batch) {
		return nil
	}
	name := worker.CleanupJobName(obj.Name)
	existing, state, foreign, err := r.cleanupJobOf(ctx, obj)
	if err != nil {
		return err
	}
	switch {
	case foreign && !leftoverCleanupJob(existing, obj):
		// Someone else's Job holds the name: it is neither adopted (its end says nothing about
		// this ingestion's batches) nor deleted.
		return cleanupNameTakenError(existing)
	case foreign:
		// An earlier ingestion of this name left its (unowned) cleanup Job: once it has ended it
		// is deleted so this one's can be created; while it runs, this one waits.
		if jobFailedCondition(existing) || jobCompleteCondition(existing) {
			if err := r.Delete(ctx, existing, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete the earlier cleanup Job %s: %w", name, err)
			}
		}
		return nil
	case existing != nil && state == cleanupNoJob:
		return nil // being deleted: created again once it is gone
	case existing != nil:
		if state == cleanupFailed && !r.cleanupReported(existing.UID) {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "StagedCleanupFailed", "Cleanup",
				"cleanup Job %s failed: staged objects %v may still be in s3://%s; delete the Job to try again",
				name, staged, bucket)
		}
		return nil
	}
	var env []corev1.EnvVar
	if batch {
		// Batch mode: the cleanup cancels unfinished batches and deletes their files at OpenAI.
		env = append(env, secretEnv(worker.EnvOpenAIAPIKey, obj.Spec.Embedding.APIKeySecretRef))
	}
	pod, err := r.podSpec(obj, []string{worker.RoleCleanup}, env, true)
	if err != nil {
		return err
	}
	job := r.job(obj, name, worker.RoleCleanup, pod, nil, 0)
	if !obj.DeletionTimestamp.IsZero() {
		// The ingestion is being deleted: a Job it owns would be deleted with it (foreground
		// deletion deletes dependents first). This one is not owned; it expires after JobTTL
		// once finished, long enough to read its logs.
		job.OwnerReferences = nil
		job.Spec.TTLSecondsAfterFinished = ptr.To(int32(r.Config.JobTTL.Seconds()))
	}
	if err := r.Create(ctx, job); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The cache shows only Jobs with an ingestion's labels: a Job of that name without
			// them is someone else's, which would otherwise hold the cleanup without a word.
			return r.cleanupNameTaken(ctx, obj, job)
		}
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return &namespaceTerminatingError{err: err}
		}
		return fmt.Errorf("create cleanup Job of %s: %w", obj.Name, err)
	}
	return nil
}

// cleanupNameTaken reads, past the cache, the Job a create of the cleanup Job met: nil if it is
// the ingestion's own or one an earlier ingestion of the name left (the cache shows it soon),
// otherwise an error naming it.
func (r *Reconciler) cleanupNameTaken(ctx context.Context, obj *v1alpha1.CsvIngestion, job *batchv1.Job) error {
	if r.APIReader == nil {
		return nil
	}
	cur := &batchv1.Job{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), cur); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("cleanup Job %s existed when created and was gone when read; trying again", job.Name)
		}
		return fmt.Errorf("read cleanup Job %s: %w", job.Name, err)
	}
	if ownCleanupJob(cur, obj.UID) || leftoverCleanupJob(cur, obj) {
		return nil
	}
	return cleanupNameTakenError(cur)
}

func cleanupNameTakenError(j *batchv1.Job) error {
	// No HTTP code: with 409 the error would read as a conflict (see nameTaken).
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Reason: ReasonJobNameTaken,
		Message: fmt.Sprintf("Job %s already exists and is not this ingestion's cleanup Job (labels %v): it is neither adopted nor deleted; delete or rename it", j.Name, j.Labels)}}
}

// namespaceTerminatingError: the cleanup Job cannot be created because the namespace is going.
type namespaceTerminatingError struct{ err error }

func (e *namespaceTerminatingError) Error() string { return e.err.Error() }
func (e *namespaceTerminatingError) Unwrap() error { return e.err }

func jobFailedCondition(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// cleanupReported remembers failed cleanup Jobs already reported, so the event is emitted once
// per Job rather than once per pass.
func (r *Reconciler) cleanupReported(uid types.UID) bool {
	r.cleanupMu.Lock()
	defer r.cleanupMu.Unlock()
	if r.cleanupFailures == nil {
		r.cleanupFailures = map[types.UID]bool{}
	}
	if r.cleanupFailures[uid] {
		return true
	}
	r.cleanupFailures[uid] = true
	return false
}

// stagedCleanupPending reports whether a finished run's planner staged objects that its cleanup
// Job has not finished deleting (the Job is not created yet, or still runs). A failed cleanup
// is reported by the run's own events and does not hold the run.
func stagedCleanupPending(ctx context.Context, c client.Reader, obj *v1alpha1.CsvIngestion) (bool, error) {
	var cm corev1.ConfigMap
	err := c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: worker.PlanConfigMapName(obj.Name)}, &cm)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get plan of %s: %w", obj.Name, err)
	}
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil || len(plan.StagedKeys()) == 0 {
		return false, nil // nothing staged (or nothing to clean up from an unusable plan)
	}
	var job batchv1.Job
	err = c.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: worker.CleanupJobName(obj.Name)}, &job)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("get cleanup Job of %s: %w", obj.Name, err)
	}
	return !jobFailedCondition(&job) && !jobCompleteCondition(&job), nil
}

func jobCompleteCondition(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}
