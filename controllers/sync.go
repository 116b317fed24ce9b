package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Reasons of the MissingDeleted condition (failures carry the worker's reason, e.g. DeleteGuard).
const (
	ReasonDeleting      = "Deleting"
	ReasonDeleted       = "Deleted"
	ReasonDeleteBlocked = "DeleteNotStarted"
)

// syncStart is what the pass does once the chunks are recorded, for spec.sync.deleteMissing.
type syncStart int

const (
	// syncSkip: no deletion step (no deleteMissing, or the run did not complete).
	syncSkip syncStart = iota
	// syncRun: every chunk succeeded without a failed row: run (or wait for) the sync Job.
	syncRun
)

// syncDecision decides whether the sync step runs: only with deleteMissing, never in a dry run,
// and only when the run would otherwise end Completed (every chunk succeeded, no row failed).
// A PartiallyCompleted, Failed or Cancelled run deletes nothing: rows it did not write could be
// taken for rows that left the file.
func syncDecision(spec *v1alpha1.CsvIngestionSpec, phase v1alpha1.Phase) syncStart {
	if !spec.DeletesMissing() || spec.DryRun || spec.Cancel || phase != v1alpha1.PhaseCompleted {
		return syncSkip
	}
	return syncRun
}

// syncJob reads the whole planned file for its ids and deletes, in the index, the vectors under
// the id prefix that it no longer has. It needs the Pinecone key and the source's S3 access, not
// the OpenAI key or the API server.
func (r *Reconciler) syncJob(obj *v1alpha1.CsvIngestion, plan *worker.Plan) (*batchv1.Job, error) {
	env := []corev1.EnvVar{secretEnv(worker.EnvPineconeAPIKey, obj.Spec.Target.Pinecone.APIKeySecretRef)}
	pod, err := r.podSpec(obj, plan.Whole().SyncFlags(), env, false)
	if err != nil {
		return nil, err
	}
	return r.job(obj, worker.SyncJobName(obj.Name), worker.RoleSync, pod, nil), nil
}

// syncStep runs the deletion step of a run whose chunks all succeeded, and ends the run from its
// Job's outcome: Completed with records.deleted, or Failed with the worker's reason (DeleteGuard
// when the guard stopped it, nothing deleted). While the Job runs the phase stays
// ProcessingChunks and MissingDeleted is False with reason Deleting.
func (p *pass) syncStep(ctx context.Context, completedMsg string) error {
	st, s := &p.status, p.kids.sync
	total := int(st.Chunks.Total)
	prefix := p.obj.Spec.Mapping.IDPrefix
	switch {
	case s == nil:
		if p.blocked != nil {
			break
		}
		job, err := p.r.syncJob(p.obj, p.kids.plan)
		if err != nil {
			return err
		}
		if err := p.r.create(ctx, p.obj.UID, job); err != nil {
			if !p.refused("create sync Job "+job.Name, err) {
				return fmt.Errorf("create job %s: %w", job.Name, err)
			}
			p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleteBlocked,
				"every chunk succeeded, but the sync Job that deletes the vectors missing from the file was not created: the API server refused it (see the Blocked condition)")
			break
		}
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleting, fmt.Sprintf(
			"every chunk succeeded; Job %s lists the vectors under id prefix %q and deletes those not in the file (guard: at most %d%%)",
			job.Name, prefix, p.obj.Spec.Sync.MaxDeletePercentOrDefault()))
	case s.state == jobSucceeded:
		if s.result == nil {
			if done := finishedAt(s.job); done != nil && p.now.Sub(done.Time) < resultGrace {
				p.requeueAfter = 2 * time.Second
				break
			}
			msg := fmt.Sprintf("sync Job %s succeeded but no pod's termination message could be read (pods gone): how many vectors it deleted is unknown", s.job.Name)
			st.Records.Deleted = s.usage.Deleted
			p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonOutcomeUnknown, msg)
			p.fail(ReasonOutcomeUnknown, msg)
			return nil
		}
		st.Records.Deleted = max(s.usage.Deleted, s.result.Deleted)
		msg := fmt.Sprintf("deleted %d vectors under id prefix %q that are not in the file (%d listed, %d missing at the last attempt)",
			st.Records.Deleted, prefix, s.result.Listed, s.result.Missing)
		p.setCondition(v1alpha1.ConditionMissingDeleted, true, ReasonDeleted, msg)
		p.finish(v1alpha1.PhaseCompleted, "Completed", fmt.Sprintf("%s; %s", completedMsg, msg))
		return nil
	case s.state == jobFailed:
		reason, msg := chunkFailure(s)
		if reason == "ChunkFailed" {
			reason = "SyncFailed"
		}
		st.Records.Deleted = s.usage.Deleted
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, reason, msg)
		if reason == worker.ReasonDeleteGuard {
			p.fail(reason, fmt.Sprintf("every chunk succeeded, but %s", msg))
		} else {
			p.fail(reason, fmt.Sprintf("every chunk succeeded, but deleting the vectors missing from the file failed (%d deleted): %s", st.Records.Deleted, msg))
		}
		return nil
	default:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleting, fmt.Sprintf(
			"every chunk succeeded; Job %s is deleting the vectors under id prefix %q that are not in the file", s.job.Name, prefix))
	}
	st.Phase = v1alpha1.PhaseProcessingChunks
	p.counts(total, total, 0)
	st.Message = fmt.Sprintf("%d/%d chunks finished; deleting the vectors missing from the file", total, total)
	if p.blocked != nil {
		st.Message += "; blocked: " + truncate(p.blocked.err.Error(), 300)
	}
	return nil
}
