package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/prune"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Reasons of the MissingDeleted condition (failures carry the worker's reason, e.g. DeleteGuard
// or NoKey).
const (
	ReasonDeleting      = "Deleting"
	ReasonDeleted       = "Deleted"
	ReasonDeleteBlocked = "DeleteNotStarted"
	// ReasonSyncWaiting: held while another ingestion with the same target and prefix runs.
	ReasonSyncWaiting = "Waiting"
	// ReasonSyncSuspended: held by spec.suspend.
	ReasonSyncSuspended = "Suspended"
	// ReasonSuperseded: a newer ingestion with the same target and prefix finished writing
	// first; deleting after it would remove what it wrote.
	ReasonSuperseded = "Superseded"
	// ReasonReportOnly: maxDeletePercent is 0; the step counted, deleted nothing.
	ReasonReportOnly = "ReportOnly"
	// ReasonRunFailed: the run failed before its sync step; nothing was deleted.
	ReasonRunFailed = "RunFailed"
	// ReasonSyncCancelled: spec.cancel ended the run.
	ReasonSyncCancelled = "Cancelled"
)

// syncAction is what the pass does about spec.sync.deleteMissing once the chunks are recorded.
type syncAction int

const (
	// syncNone: no deletion step and no condition (no deleteMissing, or a dry run).
	syncNone syncAction = iota
	// syncRun: run (or wait for) the sync Job.
	syncRun
	// syncHold: keep the run at ProcessingChunks with MissingDeleted False (reason Waiting or
	// Suspended), and look again later.
	syncHold
	// syncEnd: end the run as the chunks decided, with MissingDeleted False and the reason.
	syncEnd
)

// syncFacts is what the sync decision depends on.
type syncFacts struct {
	DeleteMissing, DryRun, Suspend bool
	// Outcome is how the chunks ended the run: Completed, PartiallyCompleted or Failed.
	Outcome v1alpha1.Phase
	// JobExists: the sync Job was created; JobDone: it finished (its outcome ends the run).
	JobExists, JobDone bool
	// Superseded names a newer ingestion with the same target and prefix that finished writing
	// (it is at its sync step or terminal); WaitFor one whose writes or deletes may still come.
	Superseded, WaitFor string
}

type syncVerdict struct {
	action          syncAction
	reason, message string
}

// syncDecision decides the deletion step: only with deleteMissing, never in a dry run, never
// after a Failed run. A PartiallyCompleted run deletes too: the sync Job takes the ids from the
// file, so a failed row keeps its vector (and a row without an id stops the step, NoKey). A Job
// already created finishes (suspend suspends it); before that, suspend holds the step, a newer
// run that finished writing supersedes it, and a run whose writes may still come holds it.
func syncDecision(f syncFacts) syncVerdict {
	switch {
	case !f.DeleteMissing || f.DryRun:
		return syncVerdict{action: syncNone}
	case f.Outcome != v1alpha1.PhaseCompleted && f.Outcome != v1alpha1.PhasePartiallyCompleted:
		return syncVerdict{syncEnd, ReasonRunFailed, "the run did not complete: nothing was deleted"}
	case f.JobDone:
		return syncVerdict{action: syncRun}
	case f.JobExists && f.Suspend:
		return syncVerdict{syncHold, ReasonSyncSuspended, "spec.suspend is set: the sync Job is suspended; unset it to resume deleting"}
	case f.JobExists:
		return syncVerdict{action: syncRun}
	case f.Suspend:
		return syncVerdict{syncHold, ReasonSyncSuspended, "every chunk finished; spec.suspend holds the step that deletes the vectors missing from the file: unset it to run it"}
	case f.Superseded != "":
		return syncVerdict{syncEnd, ReasonSuperseded, fmt.Sprintf(
			"nothing was deleted: the newer ingestion %s with the same index, namespace and id prefix wrote after this run started, and deleting what this older file lacks would remove its new vectors", f.Superseded)}
	case f.WaitFor != "":
		return syncVerdict{syncHold, ReasonSyncWaiting, fmt.Sprintf(
			"every chunk finished; waiting for ingestion %s, which writes to the same index, namespace and id prefix, before deleting the vectors missing from the file (one deleter at a time)", f.WaitFor)}
	}
	return syncVerdict{action: syncRun}
}

// syncEnding is how a finished sync Job ends the run that the chunks ended as outcome: the
// MissingDeleted condition and the run's phase, reason and message suffix.
type syncEnding struct {
	ok              bool // MissingDeleted True
	condReason, msg string
	phase           v1alpha1.Phase
	phaseReason     string
}

// judgeSync decides what a finished sync Job says. res is its last result (nil: unreadable),
// deleted the deletions of all its attempts; failReason/failMsg its failure. A DeleteGuard stop or a Job failure fails the run; a
// row without an id (NoKey) and report-only end it as the chunks decided, without deleting.
func judgeSync(outcome v1alpha1.Phase, succeeded bool, res *worker.Result, deleted int64, failReason, failMsg string, prefix string, maxPercent int32) syncEnding {
	leftAlone := ""
	if res != nil && res.LeftAlone > 0 {
		leftAlone = fmt.Sprintf("; %d vectors under the prefix belong to another source; left alone", res.LeftAlone)
		if res.Unmarked > 0 {
			leftAlone += fmt.Sprintf(" (%d of them carry no owner marker: see spec.sync.adoptUnmarked)", res.Unmarked)
		}
	}
	switch {
	case succeeded && res == nil:
		return syncEnding{condReason: ReasonOutcomeUnknown, phase: v1alpha1.PhaseFailed, phaseReason: ReasonOutcomeUnknown,
			msg: "the sync Job succeeded but no pod's termination message could be read (pods gone): how many vectors it deleted is unknown"}
	case succeeded && maxPercent == 0:
		return syncEnding{condReason: ReasonReportOnly, phase: outcome, phaseReason: string(outcome), msg: fmt.Sprintf(
			"report only (spec.sync.maxDeletePercent is 0): %d vectors under id prefix %q are not in the file and would be deleted, nothing was (%d listed)%s",
			res.Deletable, prefix, res.Listed, leftAlone)}
	case succeeded:
		return syncEnding{ok: true, condReason: ReasonDeleted, phase: outcome, phaseReason: string(outcome), msg: fmt.Sprintf(
			"deleted %d vectors under id prefix %q that are not in the file (%d listed, %d not in the file at the last attempt)%s",
			deleted, prefix, res.Listed, res.Missing, leftAlone)}
	case failReason == worker.ReasonNoKey:
		return syncEnding{condReason: worker.ReasonNoKey, phase: outcome, phaseReason: string(outcome), msg: failMsg}
	case failReason == worker.ReasonDeleteGuard:
		return syncEnding{condReason: failReason, phase: v1alpha1.PhaseFailed, phaseReason: failReason, msg: failMsg + leftAlone}
	}
	if failReason == "" || failReason == "ChunkFailed" {
		failReason = "SyncFailed"
	}
	return syncEnding{condReason: failReason, phase: v1alpha1.PhaseFailed, phaseReason: failReason,
		msg: "deleting the vectors missing from the file failed: " + failMsg}
}

// syncJob reads the whole planned file for its ids and deletes, in the index, the vectors under
// the id prefix that it no longer has and that this source owns. It needs the Pinecone key and
// the source's S3 access, not the OpenAI key or the API server.
func (r *Reconciler) syncJob(obj *v1alpha1.CsvIngestion, plan *worker.Plan) (*batchv1.Job, error) {
	env := []corev1.EnvVar{secretEnv(worker.EnvPineconeAPIKey, obj.Spec.Target.Pinecone.APIKeySecretRef)}
	pod, err := r.podSpec(obj, plan.Whole().SyncFlags(), env, false)
	if err != nil {
		return nil, err
	}
	return r.job(obj, worker.SyncJobName(obj.Name), worker.RoleSync, pod, nil, syncTimeout(&obj.Spec, plan.TotalRows)), nil
}

// syncTimeout bounds one attempt of the sync Job: spec.sync.timeout, or what the plan's rows
// take to read, list and check (prune.Deadline), never less than chunkTimeout.
func syncTimeout(spec *v1alpha1.CsvIngestionSpec, rows int64) time.Duration {
	if spec.Sync != nil && spec.Sync.Timeout != nil && spec.Sync.Timeout.Duration > 0 {
		return spec.Sync.Timeout.Duration
	}
	return max(prune.Deadline(rows), spec.Chunking.ChunkTimeout.Duration)
}

// syncPending is the reasons of a run held or busy at its sync step.
func syncPending(reason string) bool {
	return reason == ReasonDeleting || reason == ReasonSyncWaiting || reason == ReasonSyncSuspended || reason == ReasonDeleteBlocked
}

// finishSync gives a run with deleteMissing that ends without a sync verdict its
// MissingDeleted condition: every terminal run with deleteMissing says whether it deleted.
func (p *pass) finishSync(phase v1alpha1.Phase, reason, msg string) {
	spec := &p.obj.Spec
	if !spec.DeletesMissing() || spec.DryRun {
		return
	}
	c := meta.FindStatusCondition(p.status.Conditions, v1alpha1.ConditionMissingDeleted)
	if c != nil && !syncPending(c.Reason) {
		return // the step's own verdict
	}
	switch {
	case phase == v1alpha1.PhaseCancelled && c != nil && c.Reason == ReasonDeleting:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonSyncCancelled,
			"cancelled while the sync Job was deleting the vectors missing from the file: some of them may be deleted, the others are still in the index")
	case phase == v1alpha1.PhaseCancelled:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonSyncCancelled, "cancelled by spec.cancel: nothing was deleted")
	case reason == worker.ReasonSourceTruncated:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, worker.ReasonSourceTruncated, "the source looks truncated: nothing was deleted ("+msg+")")
	default:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonRunFailed, fmt.Sprintf("the run ended %s (%s) before its sync step: nothing was deleted", phase, reason))
	}
}

// syncStep runs the deletion step once the chunks ended the run as outcome (Completed or
// PartiallyCompleted, with reason and msg): it holds, skips, or runs the sync Job and ends the
// run from its outcome. While the step is held or its Job runs, the phase stays
// ProcessingChunks.
func (p *pass) syncStep(ctx context.Context, outcome v1alpha1.Phase, reason, msg string) error {
	st, s := &p.status, p.kids.sync
	total := int(st.Chunks.Total)
	prefix := p.obj.Spec.Mapping.IDPrefix
	f := syncFacts{DeleteMissing: p.obj.Spec.DeletesMissing(), DryRun: p.obj.Spec.DryRun, Suspend: p.obj.Spec.Suspend,
		Outcome: outcome, JobExists: s != nil, JobDone: s != nil && (s.state == jobSucceeded || s.state == jobFailed)}
	if s == nil && !p.obj.Spec.Suspend {
		peers, err := p.r.samePrefix(ctx, p.obj)
		if err != nil {
			return err
		}
		f.Superseded, f.WaitFor = peers.verdict()
		if syncDecision(f).action == syncRun {
			// The cache shows no newer run; the writers record also knows the ones deleted
			// since and the ones too new for the cache, and takes this run's claim.
			if f.Superseded, err = p.r.claimDelete(ctx, p.obj, peers.uids()); err != nil {
				if !p.refusedRecord("record this run's sync step as the deleter under its id prefix", err) {
					return err
				}
				f.Superseded = ""
			}
		}
	}
	v := syncDecision(f)
	switch v.action {
	case syncNone:
		p.finish(outcome, reason, msg)
		return nil
	case syncEnd:
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, v.reason, v.message)
		p.finish(outcome, reason, msg+"; "+v.message)
		return nil
	case syncHold:
		if s == nil {
			if err := p.r.releaseClaim(ctx, p.obj); err != nil && !p.refusedRecord("drop this run's claim on its id prefix while its sync step holds", err) {
				return err
			}
		}
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, v.reason, v.message)
		if s != nil && s.state == jobActive && s.job.UID != "" {
			if err := p.setSuspend(ctx, s, true); err != nil {
				return err
			}
		}
		p.requeueAfter = peerRecheck
		st.Phase = v1alpha1.PhaseProcessingChunks
		p.counts(total, total, 0)
		st.Message = fmt.Sprintf("%d/%d chunks finished; %s", total, total, v.message)
		return nil
	}

	switch {
	case s == nil:
		if p.blocked != nil {
			// Refused earlier in this pass (its claim on the prefix, say): no Job yet, and the
			// step's condition says so rather than what it said before.
			p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleteBlocked,
				"every chunk finished, but the sync Job that deletes the vectors missing from the file was not created: a write it needs was refused (see the Blocked condition)")
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
				"every chunk finished, but the sync Job that deletes the vectors missing from the file was not created: the API server refused it (see the Blocked condition)")
			break
		}
		what := fmt.Sprintf("deletes those this source owns that are not in the file (guard: at most %d%%)", p.obj.Spec.Sync.MaxDeletePercentOrDefault())
		if p.obj.Spec.Sync.MaxDeletePercentOrDefault() == 0 {
			what = "counts those not in the file without deleting them (maxDeletePercent 0: report only)"
		}
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleting, fmt.Sprintf(
			"every chunk finished; Job %s lists the vectors under id prefix %q and %s", job.Name, prefix, what))
	case s.state == jobSucceeded || s.state == jobFailed:
		if s.state == jobSucceeded && s.result == nil {
			if done := finishedAt(s.job); done != nil && p.now.Sub(done.Time) < resultGrace {
				p.requeueAfter = 2 * time.Second
				break
			}
		}
		failReason, failMsg := "", ""
		if s.state == jobFailed {
			failReason, failMsg = chunkFailure(s)
		}
		st.Records.Deleted = s.usage.Deleted
		if s.result != nil {
			st.Records.Deleted = max(s.usage.Deleted, s.result.Deleted)
			st.Records.LeftAlone = s.result.LeftAlone
		}
		e := judgeSync(outcome, s.state == jobSucceeded, s.result, st.Records.Deleted, failReason, failMsg, prefix, p.obj.Spec.Sync.MaxDeletePercentOrDefault())
		p.setCondition(v1alpha1.ConditionMissingDeleted, e.ok, e.condReason, e.msg)
		switch {
		case e.phase == v1alpha1.PhaseFailed && e.condReason == worker.ReasonDeleteGuard:
			p.fail(e.phaseReason, fmt.Sprintf("every chunk finished, but %s", e.msg))
		case e.phase == v1alpha1.PhaseFailed:
			p.fail(e.phaseReason, fmt.Sprintf("every chunk finished, but %s (%d deleted)", e.msg, st.Records.Deleted))
		default:
			p.finish(outcome, reason, fmt.Sprintf("%s; %s", msg, e.msg))
		}
		return nil
	default:
		if s.state == jobSuspended && s.job.UID != "" {
			if err := p.setSuspend(ctx, s, false); err != nil {
				return err
			}
		}
		p.setCondition(v1alpha1.ConditionMissingDeleted, false, ReasonDeleting, fmt.Sprintf(
			"every chunk finished; Job %s is deleting the vectors under id prefix %q that this source owns and the file lacks", s.job.Name, prefix))
	}
	st.Phase = v1alpha1.PhaseProcessingChunks
	p.counts(total, total, 0)
	st.Message = fmt.Sprintf("%d/%d chunks finished; deleting the vectors missing from the file", total, total)
	if p.blocked != nil {
		st.Message += "; blocked: " + truncate(p.blocked.err.Error(), 300)
	}
	return nil
}

// prefixKey is the index name and id prefix a deleter works under (hashed: a field index
// value). The namespace and host are left out, sharesNamespace decides on them among the peers:
// with spec.mapping.namespaceColumn a run writes to (and its sync step deletes in) the
// namespaces its rows name, and one run may name the index's host while another lets it be
// looked up.
func prefixKey(spec *v1alpha1.CsvIngestionSpec) string {
	t := spec.Target.Pinecone
	sum := sha256.Sum256([]byte(strings.Join([]string{t.Index, spec.Mapping.IDPrefix}, "\x00")))
	return hex.EncodeToString(sum[:16])
}

// sharesNamespace reports whether two ingestions under one index name and prefix may write to a
// common namespace of one index: the same host (or either left to be looked up), and the same
// target namespace or either routes rows by namespaceColumn (to any namespace, the other's
// included), so one's sync step may delete the other's new vectors.
func sharesNamespace(a, b *v1alpha1.CsvIngestionSpec) bool {
	ta, tb := a.Target.Pinecone, b.Target.Pinecone
	if ta.Host != "" && tb.Host != "" && ta.Host != tb.Host {
		return false
	}
	return a.Mapping.NamespaceColumn != "" || b.Mapping.NamespaceColumn != "" || ta.Namespace == tb.Namespace
}

// ingestionPrefixIndex indexes the ingestions that write under an id prefix (dry runs write
// nothing) by prefixKey, so finding a run's peers does not copy every ingestion of the cache.
const ingestionPrefixIndex = ".spec.prefixKey"

func ingestionPrefix(o client.Object) []string {
	ing, ok := o.(*v1alpha1.CsvIngestion)
	if !ok || ing.Spec.Mapping.IDPrefix == "" || ing.Spec.DryRun {
		return nil
	}
	return []string{prefixKey(&ing.Spec)}
}

// peer is another ingestion that writes under the same index, namespace and prefix.
type peer struct {
	uid      types.UID
	name     string
	newer    bool
	terminal bool
	// syncReason is its MissingDeleted reason ("" before its sync step).
	syncReason string
	// syncJob: its sync Job exists (looked up only for a suspended sync step).
	syncJob bool
	// deletes: it has spec.sync.deleteMissing.
	deletes bool
}

type peers []peer

// samePrefix lists the other ingestions in the cluster (as far as the cache sees) that write
// under the same index and id prefix to a namespace this one may write to (sharesNamespace);
// dry runs write nothing and are left out.
func (r *Reconciler) samePrefix(ctx context.Context, obj *v1alpha1.CsvIngestion) (peers, error) {
	if obj.Spec.Mapping.IDPrefix == "" {
		return nil, nil
	}
	key := prefixKey(&obj.Spec)
	var list v1alpha1.CsvIngestionList
	if err := r.List(ctx, &list, client.MatchingFields{ingestionPrefixIndex: key}); err != nil {
		return nil, fmt.Errorf("list ingestions with the same target and prefix: %w", err)
	}
	var out peers
	for i := range list.Items {
		o := &list.Items[i]
		if o.UID == obj.UID || o.Spec.DryRun || prefixKey(&o.Spec) != key || !sharesNamespace(&o.Spec, &obj.Spec) {
			continue
		}
		pr := peer{uid: o.UID, name: o.Namespace + "/" + o.Name, newer: newerThan(o, obj), terminal: o.Status.Phase.Terminal(), deletes: o.Spec.DeletesMissing()}
		if c := meta.FindStatusCondition(o.Status.Conditions, v1alpha1.ConditionMissingDeleted); c != nil {
			pr.syncReason = c.Reason
		}
		if pr.syncReason == ReasonSyncSuspended && !pr.terminal {
			// Suspended before its sync Job was created, it decides afresh when resumed (and
			// a newer run then supersedes it); a suspended Job resumes deleting.
			err := r.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: worker.SyncJobName(o.Name)}, &batchv1.Job{})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("look up the sync Job of %s/%s: %w", o.Namespace, o.Name, err)
			}
			pr.syncJob = err == nil
		}
		out = append(out, pr)
	}
	return out, nil
}

// newerThan orders runs by creation time, then name (then namespace).
func newerThan(a, b *v1alpha1.CsvIngestion) bool {
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	if a.Name != b.Name {
		return a.Name > b.Name
	}
	return a.Namespace > b.Namespace
}

// verdict says whether a run at its sync step is superseded by a newer peer that finished
// writing (terminal, or itself at its sync step), or must wait for a peer whose writes or
// deletes may still come: a newer one still writing, or an older one that is not terminal and
// not held behind this one (an older run waiting at its sync step will be superseded, never
// delete). Names are sorted for stable messages.
func (ps peers) verdict() (superseded, waitFor string) {
	var sup, wait []string
	for _, pr := range ps {
		atSync := pr.syncReason != ""
		switch {
		case pr.newer && (pr.terminal || atSync):
			sup = append(sup, pr.name)
		case pr.newer:
			wait = append(wait, pr.name)
		case !pr.terminal && pr.syncReason != ReasonSyncWaiting:
			wait = append(wait, pr.name)
		}
	}
	return firstSorted(sup), firstSorted(wait)
}

// uids are the peers the cache shows.
func (ps peers) uids() map[types.UID]bool {
	out := make(map[types.UID]bool, len(ps))
	for _, pr := range ps {
		out[pr.uid] = true
	}
	return out
}

// deleter reports whether a peer that may delete under the prefix (deleteMissing) is not
// terminal: only such a run's sync step reads the writers record, so a run records itself
// only then. Without it every ingestion with an id prefix (each question id of the REST API)
// would leave a record behind, read and written once per run, that no run ever reads. A
// deleter created later is newer than this run (this run's own vectors are never what its
// older file lacks, and its claim is seen by this run's next pass, which then records itself).
func (ps peers) deleter() bool {
	return slices.ContainsFunc(ps, func(pr peer) bool { return pr.deletes && !pr.terminal })
}

// olderDeleting names an older peer whose sync Job may be deleting now: a newer run does not
// start writing until it is done, so its new vectors are never taken for ones that left the
// older file.
func (ps peers) olderDeleting() string {
	var out []string
	for _, pr := range ps {
		if !pr.newer && !pr.terminal && (pr.syncReason == ReasonDeleting || pr.syncReason == ReasonDeleteBlocked || pr.syncReason == ReasonSyncSuspended && pr.syncJob) {
			out = append(out, pr.name)
		}
	}
	return firstSorted(out)
}

func firstSorted(names []string) string {
	if len(names) == 0 {
		return ""
	}
	m := names[0]
	for _, n := range names[1:] {
		if n < m {
			m = n
		}
	}
	if len(names) > 1 {
		return fmt.Sprintf("%s (and %d more)", m, len(names)-1)
	}
	return m
}

// peerRecheck is how often a run held by a peer looks again (peers' changes do not trigger it).
const peerRecheck = 5 * time.Second
