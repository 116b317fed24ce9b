package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/batchembed"
	"github.com/vectordb-io/vectordb-operator/internal/ranges"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// maxFailedChunkDetails bounds status.failedChunks; every failed index stays in failedChunkIndexes.
const maxFailedChunkDetails = 50

// resultGrace is how long a finished Job may wait for its pod's termination message to reach the
// cache before the chunk is recorded without it.
const resultGrace = 20 * time.Second

// pass is one reconcile of one ingestion: it starts from the last written status and the children
// as they are, records what finished, decides what to run next, and leaves the new status.
type pass struct {
	r      *Reconciler
	obj    *v1alpha1.CsvIngestion
	kids   *children
	now    metav1.Time
	status v1alpha1.CsvIngestionStatus

	completed, failed ranges.Set
	// outcomes recorded in this pass, for the task table's chunk map and metrics.
	outcomes    map[int]ChunkOutcome
	newlyFailed []v1alpha1.FailedChunk
	results     []finishedChunk
	permanent   *v1alpha1.FailedChunk
	// notes for events that are not transitions of the status (e.g. a missing result).
	warnings     []string
	requeueAfter time.Duration
	// blocked is the first write the API server refused in this pass.
	blocked *refusal
}

// refusal is a create or update the API server refused, with its message.
type refusal struct {
	what string
	err  error
}

type finishedChunk struct {
	succeeded bool
	result    *worker.Result
	duration  time.Duration
}

func (r *Reconciler) newPass(obj *v1alpha1.CsvIngestion, kids *children, completed, failed ranges.Set) *pass {
	p := &pass{r: r, obj: obj, kids: kids, now: metav1.NewTime(r.Now()), outcomes: map[int]ChunkOutcome{},
		completed: completed, failed: failed}
	p.status = *obj.Status.DeepCopy()
	return p
}

// recordedSets parses the chunk indexes a status has recorded.
func recordedSets(obj *v1alpha1.CsvIngestion) (completed, failed ranges.Set, err error) {
	if completed, err = ranges.Parse(obj.Status.CompletedChunks); err != nil {
		return completed, failed, fmt.Errorf("status.completedChunks of %s: %w", obj.Name, err)
	}
	if failed, err = ranges.Parse(obj.Status.FailedChunkIndexes); err != nil {
		return completed, failed, fmt.Errorf("status.failedChunkIndexes of %s: %w", obj.Name, err)
	}
	return completed, failed, nil
}

func (p *pass) recorded(i int) bool { return p.completed.Has(i) || p.failed.Has(i) }

func (p *pass) run(ctx context.Context) error {
	st := &p.status
	before := trackedView(st)
	// The live part of status.batch is computed afresh by every pass (addLiveBatches).
	withoutLive(st)
	defer func() {
		p.addLiveBatches()
		// Every write of a changed task view gets a new version, so the task table can refuse
		// anything older.
		if trackedView(st) != before || len(p.outcomes) > 0 {
			st.TrackingVersion++
		}
		p.blockedCondition()
	}()
	st.ObservedGeneration = p.obj.Generation
	st.TaskID = p.obj.EffectiveTaskID()
	if st.StartTime == nil {
		st.StartTime = &p.now
	}
	if st.Phase == "" {
		st.Phase = v1alpha1.PhasePending
	}
	p.trackingCondition()

	if st.Phase.Terminal() {
		// Terminal is final; only make sure nothing is left running.
		p.refreshConditions()
		return p.stopActive(ctx)
	}
	deleted := !p.obj.DeletionTimestamp.IsZero() && holdsBatchCleanup(p.obj)
	if p.obj.Spec.Cancel || deleted {
		// Chunks that finished since the last pass are counted before the rest is stopped.
		if ok, _ := checkPlan(st.Plan, p.kids); ok && p.kids.plan != nil {
			p.pinPlan()
			p.recordFinishedChunks()
		}
		if err := p.stopActive(ctx); err != nil {
			return err
		}
		if deleted && !p.obj.Spec.Cancel {
			p.finish(v1alpha1.PhaseCancelled, "Deleted", "cancelled by deletion: the cleanup Job cancels the open batches and deletes their files at OpenAI before the ingestion goes")
		} else {
			p.finish(v1alpha1.PhaseCancelled, "Cancelled", "cancelled by spec.cancel")
		}
		return nil
	}
	planned, err := p.planStep(ctx)
	if err != nil || !planned {
		return err
	}
	if p.obj.Spec.DryRun {
		msg := fmt.Sprintf("dry run: %d rows, %d chunks, about %d tokens (%s USD), at least %s",
			st.Records.Total, st.Chunks.Total, st.Estimate.Tokens, st.Estimate.CostUSD, st.Estimate.MinDuration)
		if e := st.Estimate; e.Mode == v1alpha1.EmbeddingBatch {
			msg = fmt.Sprintf("dry run: %d rows, %d chunks, about %d tokens in about %d batches: %s USD at the Batch API's rate, %s USD saved against %s USD online",
				st.Records.Total, st.Chunks.Total, e.Tokens, e.Batches, e.CostUSD, e.SavedUSD, e.OnlineCostUSD)
		}
		if se := st.Estimate.Sync; se != nil {
			msg += fmt.Sprintf("; sync: %d rows to embed (about %d tokens, %s USD), %d to skip", se.RowsToEmbed, se.Tokens, se.CostUSD, se.RowsToSkip)
			if p.obj.Spec.DeletesMissing() {
				msg += fmt.Sprintf(", %d of %d vectors under the id prefix to delete (delete guard: %s)", se.VectorsToDelete, se.VectorsUnderPrefix, se.DeleteGuard)
			}
		}
		p.finish(v1alpha1.PhaseCompleted, "DryRun", msg)
		return nil
	}
	p.recordFinishedChunks()
	return p.decide(ctx)
}

// checkPlan decides whether the plan in the cluster is the one the ingestion is pinned to. Before
// any plan is pinned every usable plan is fine; after, a missing, unusable or different plan is
// not, and the ingestion must stop rather than plan again: the chunks recorded so far are
// boundaries of the pinned plan.
func checkPlan(pinned *v1alpha1.PlanFingerprint, kids *children) (ok bool, problem string) {
	if pinned == nil {
		return true, ""
	}
	switch {
	case !kids.planFound:
		return false, "was deleted after planning"
	case kids.planErr != nil:
		return false, fmt.Sprintf("became unusable after planning: %v", kids.planErr)
	}
	if got := fingerprint(kids.plan); *got != *pinned {
		return false, fmt.Sprintf("changed after planning (etag %s, %d rows, %d per chunk, %d chunks, offsets %.12s; pinned etag %s, %d rows, %d per chunk, %d chunks, offsets %.12s)",
			got.ETag, got.Rows, got.RowsPerChunk, got.Chunks, got.OffsetsSHA256,
			pinned.ETag, pinned.Rows, pinned.RowsPerChunk, pinned.Chunks, pinned.OffsetsSHA256)
	}
	return true, ""
}

func (p *pass) pinPlan() {
	st, plan := &p.status, p.kids.plan
	if st.Plan == nil {
		st.Plan = fingerprint(plan)
	}
	st.Source = &v1alpha1.SourceStatus{ETag: plan.ETag, Bucket: plan.Bucket, Key: plan.Key, SizeBytes: plan.SizeBytes, TotalRows: plan.TotalRows}
	st.Records.Total = plan.TotalRows
	st.Chunks.Total = int32(plan.Chunks())
	st.Estimate = estimate(p.obj, plan)
	st.Estimate.Sync = plan.SyncEstimate // a dry run's preview of spec.sync
	st.VectorSpace = plan.VectorSpace    // the planner's vector-space guard
}

// planStep makes sure there is a plan: it creates the planner Job, waits for it, or fails the
// ingestion with the planner's own message. Once planned, the plan is pinned.
func (p *pass) planStep(ctx context.Context) (bool, error) {
	st, kids := &p.status, p.kids
	if ok, problem := checkPlan(st.Plan, kids); !ok {
		msg := fmt.Sprintf("plan ConfigMap %s %s; the chunks recorded so far belong to the pinned plan, so the ingestion stops instead of planning again (create a new CsvIngestion to start over)",
			worker.PlanConfigMapName(p.obj.Name), problem)
		p.setCondition(v1alpha1.ConditionPlanned, false, ReasonPlanChanged, msg)
		p.fail(ReasonPlanChanged, msg)
		return false, p.stopActive(ctx)
	}
	if kids.plan != nil {
		p.pinPlan()
		p.setCondition(v1alpha1.ConditionPlanned, true, "Planned",
			fmt.Sprintf("%d rows in %d chunks of %s", kids.plan.TotalRows, kids.plan.Chunks(), kids.plan.Key))
		if w := kids.plan.SourceWarning; w != "" {
			p.setCondition(v1alpha1.ConditionSourceTruncated, true, "RowsMayBeMissing", w)
		}
		return true, nil
	}
	if kids.planErr != nil {
		p.fail("PlanInvalid", fmt.Sprintf("plan ConfigMap %s is unusable: %v", worker.PlanConfigMapName(p.obj.Name), kids.planErr))
		return false, p.stopActive(ctx)
	}
	st.Phase = v1alpha1.PhasePlanning
	switch pl := kids.planner; {
	case pl == nil:
		if p.r.leasing() {
			// The planner's vector-space guard leases too: its Secret first, as for chunk Jobs.
			if err := p.r.ensureLeaseSecret(ctx, p.obj); err != nil {
				if !p.refused("write the rate lease Secret", err) {
					return false, err
				}
				p.setCondition(v1alpha1.ConditionPlanned, false, "Planning", "planner Job not created yet: the API server refused its rate lease Secret (see the Blocked condition)")
				break
			}
		}
		job, err := p.r.plannerJob(p.obj)
		if err != nil {
			return false, err
		}
		if err := p.r.create(ctx, p.obj.UID, job); err != nil {
			if !p.refused("create planner Job "+job.Name, err) {
				return false, fmt.Errorf("create job %s: %w", job.Name, err)
			}
			p.setCondition(v1alpha1.ConditionPlanned, false, "Planning", "planner Job not created yet: the API server refused it (see the Blocked condition)")
			break
		}
		p.setCondition(v1alpha1.ConditionPlanned, false, "Planning", "planner Job created")
	case pl.state == jobFailed:
		reason, msg := "PlanFailed", "planner failed"
		if pl.result != nil && pl.result.Error != "" {
			msg = "planner failed: " + pl.result.Error
			if pl.result.Reason != "" {
				reason = pl.result.Reason
			}
		} else if pl.failMessage != "" {
			msg = fmt.Sprintf("planner failed: %s: %s", pl.failReason, pl.failMessage)
		}
		p.setCondition(v1alpha1.ConditionPlanned, false, reason, msg)
		p.fail(reason, msg)
	case pl.state == jobSucceeded:
		// The ConfigMap may not have reached the cache yet.
		if done := finishedAt(pl.job); done != nil && p.now.Sub(done.Time) > time.Minute {
			p.fail("PlanMissing", "the planner succeeded but wrote no plan ConfigMap "+worker.PlanConfigMapName(p.obj.Name))
		} else {
			p.requeueAfter = 2 * time.Second
		}
	default:
		p.setCondition(v1alpha1.ConditionPlanned, false, "Planning", "planner running")
	}
	p.status.Message = meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionPlanned).Message
	return false, nil
}

// Reasons of outcomes and failures the controller itself decides.
const (
	ReasonPlanChanged    = "PlanChanged"
	ReasonOutcomeUnknown = "OutcomeUnknown"
	ReasonBlocked        = "Blocked"
	ReasonTaskItemStale  = "TaskItemStale"
)

// verdict is what one finished chunk adds to the status.
type verdict struct {
	// wait: the Job finished but its result may still be on its way to the cache.
	wait      bool
	succeeded bool
	// res holds the counts, bounded by the chunk's rows.
	res               worker.Result
	reason, message   string
	permanent         bool
	warning           string
	processedVerified bool
}

// judgeChunk decides what a finished chunk's Job and pods say, given the chunk's rows. It never
// counts rows as processed without a result that says so: a succeeded Job whose result cannot be
// read (its pods are gone) is a failed chunk with reason OutcomeUnknown.
func judgeChunk(c *childJob, rows int64, finished *metav1.Time, now time.Time) verdict {
	switch c.state {
	case jobSucceeded:
		if c.result == nil {
			if finished != nil && now.Sub(finished.Time) < resultGrace {
				return verdict{wait: true}
			}
			return verdict{reason: ReasonOutcomeUnknown, res: worker.Result{Failed: rows}, message: fmt.Sprintf(
				"the Job succeeded but no pod's termination message could be read (pods gone); its %d rows are counted as failed because their outcome is unknown", rows)}
		}
		res, warning := boundCounts(*c.result, rows)
		return verdict{succeeded: true, res: res, warning: warning}
	case jobFailed:
		reason, msg := chunkFailure(c)
		v := verdict{reason: reason, message: msg, permanent: c.permanent}
		if c.result != nil {
			v.res.VectorsUpserted = min(max(c.result.VectorsUpserted, 0), rows)
		}
		// The chunk will not run again: all of its rows count as failed.
		v.res.Failed = rows
		return v
	}
	return verdict{wait: true}
}

// boundCounts keeps a worker's counts within its chunk: none negative, processed + failed +
// skipped equal to the chunk's rows. Rows the worker does not account for count as failed;
// over-counting is cut from processed (failures are never hidden). A warning says what changed.
func boundCounts(res worker.Result, rows int64) (worker.Result, string) {
	in := res
	res.Failed = min(max(res.Failed, 0), rows)
	res.Skipped = min(max(res.Skipped, 0), rows-res.Failed)
	res.Processed = min(max(res.Processed, 0), rows-res.Failed-res.Skipped)
	if missing := rows - res.Processed - res.Failed - res.Skipped; missing > 0 {
		res.Failed += missing
	}
	res.VectorsUpserted = min(max(res.VectorsUpserted, 0), rows)
	if res.Processed == in.Processed && res.Failed == in.Failed && res.Skipped == in.Skipped && res.VectorsUpserted == in.VectorsUpserted {
		return res, ""
	}
	return res, fmt.Sprintf("reported processed=%d failed=%d skipped=%d vectors=%d for %d rows; recorded processed=%d failed=%d skipped=%d vectors=%d",
		in.Processed, in.Failed, in.Skipped, in.VectorsUpserted, rows, res.Processed, res.Failed, res.Skipped, res.VectorsUpserted)
}

// outcomeOf is a chunk's entry in the task table's chunk map.
func outcomeOf(i int, args worker.ChunkArgs, v verdict) ChunkOutcome {
	out := ChunkOutcome{Index: i, StartRow: args.FirstRow, EndRow: args.FirstRow + args.Rows - 1,
		Processed: v.res.Processed, Failed: v.res.Failed, Vectors: v.res.VectorsUpserted}
	if v.succeeded {
		out.Status = "completed"
	} else {
		out.Status = "failed"
		out.Error = truncate(v.reason+": "+v.message, 1000)
	}
	return out
}

// recordFinishedChunks moves each finished, unrecorded chunk into the status with its outcome.
// Status is the record: a Job gets its TTL, and its pods lose their finalizer, only after this
// status is written (and mirrored).
func (p *pass) recordFinishedChunks() {
	st := &p.status
	idx := make([]int, 0, len(p.kids.chunks))
	for i := range p.kids.chunks {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		c := p.kids.chunks[i]
		if p.recorded(i) || (c.state != jobSucceeded && c.state != jobFailed) {
			continue
		}
		args, err := p.kids.plan.Chunk(i)
		if err != nil {
			continue // a Job for a chunk the plan doesn't have: never ours to count
		}
		v := judgeChunk(c, args.Rows, finishedAt(c.job), p.now.Time)
		if v.wait {
			p.requeueAfter = 2 * time.Second
			continue
		}
		if v.warning != "" {
			p.warnings = append(p.warnings, fmt.Sprintf("chunk %d: %s", i, v.warning))
		}
		usage := c.usage
		usage.VectorsUpserted = v.res.VectorsUpserted
		addUsage(st, &usage)
		if c.result != nil && c.result.Batch != nil {
			// The chunk's batches as its last pod saw them in the chunk's record (which every
			// attempt shares, so the last one's counts are the chunk's).
			if st.Batch == nil {
				st.Batch = &v1alpha1.BatchStatus{}
			}
			st.Batch.Add(*c.result.Batch)
		}
		if v.succeeded {
			p.completed.Add(i)
			st.Records.Processed += v.res.Processed
			st.Records.Failed += v.res.Failed
			st.Records.Skipped += v.res.Skipped
			p.results = append(p.results, finishedChunk{succeeded: true, result: c.result, duration: jobDuration(c.job)})
		} else {
			p.failed.Add(i)
			st.Records.Failed += v.res.Failed
			fc := v1alpha1.FailedChunk{Index: int32(i), Rows: chunkRows(args), Reason: v.reason, Message: truncate(v.message, 1000)}
			if len(st.FailedChunks) < maxFailedChunkDetails {
				st.FailedChunks = append(st.FailedChunks, fc)
			}
			p.newlyFailed = append(p.newlyFailed, fc)
			if v.permanent && p.permanent == nil {
				p.permanent = &fc
			}
			p.results = append(p.results, finishedChunk{succeeded: false, result: c.result, duration: jobDuration(c.job)})
		}
		p.outcomes[i] = outcomeOf(i, args, v)
	}
	st.CompletedChunks = p.completed.String()
	st.FailedChunkIndexes = p.failed.String()
}

// openOutcomes are the task-table entries of recorded chunks not yet released: derived again
// from their Jobs and pods (which the controller keeps until the entry is accepted), so no entry
// lives only in memory.
func (p *pass) openOutcomes() map[int]ChunkOutcome {
	out := make(map[int]ChunkOutcome, len(p.outcomes))
	if p.kids.plan == nil {
		return out
	}
	for i, c := range p.kids.chunks {
		if !p.recorded(i) || c.released() {
			continue
		}
		if o, ok := p.outcomes[i]; ok {
			out[i] = o
			continue
		}
		if len(c.held) == 0 && c.pods == 0 && podsCounted(c.job) {
			// Its pods left the cache: they were released (the release labels them out of it),
			// which happens only after the table accepted the entry. The cache can still show
			// the Job without its TTL (Jobs and pods reach it through separate watches);
			// deriving from that Job alone would overwrite the accepted entry with
			// OutcomeUnknown. A Job that never had a pod, or whose pods are still cached
			// without the finalizer (a user removed it), was not released: it is derived again,
			// or its entry would be lost when the table missed the pass that recorded it.
			continue
		}
		args, err := p.kids.plan.Chunk(i)
		if err != nil {
			continue
		}
		// Recorded earlier: no grace to wait for, and the status's verdict stands.
		v := judgeChunk(c, args.Rows, nil, p.now.Time)
		if p.failed.Has(i) && v.succeeded {
			v = verdict{reason: ReasonOutcomeUnknown, message: "recorded as failed", res: worker.Result{Failed: args.Rows}}
		}
		out[i] = outcomeOf(i, args, v)
	}
	return out
}

func chunkFailure(c *childJob) (reason, msg string) {
	reason, msg = c.failReason, c.failMessage
	if c.result != nil {
		if c.result.Reason != "" {
			reason = c.result.Reason
		}
		if c.result.Error != "" {
			msg = c.result.Error
		}
	}
	if c.permanent && reason == batchv1.JobReasonPodFailurePolicy {
		reason = worker.ReasonPermanentError
	}
	if reason == "" {
		reason = "ChunkFailed"
	}
	return reason, msg
}

// outcomePhase decides how a run ends once chunks are recorded: "" while it goes on.
func outcomePhase(total, finished, failedChunks int, failedRows int64, budget float64, permanent bool) (v1alpha1.Phase, string) {
	switch {
	case permanent:
		return v1alpha1.PhaseFailed, "Permanent"
	case float64(failedRows) > budget:
		return v1alpha1.PhaseFailed, "TooManyFailedRows"
	case finished >= total && failedRows == 0 && failedChunks == 0:
		return v1alpha1.PhaseCompleted, "Completed"
	case finished >= total:
		return v1alpha1.PhasePartiallyCompleted, "PartiallyCompleted"
	}
	return "", ""
}

// nextChunks picks up to room chunk indexes to start: the lowest ones neither recorded nor with
// a Job. It jumps over the recorded intervals, so its cost follows the gaps, not the chunks done.
func nextChunks(total, room int, completed, failed ranges.Set, hasJob func(int) bool) []int {
	var out []int
	for i := 0; i < total && len(out) < room; i++ {
		// Skip whatever either set holds, until both say i is absent.
		for {
			j := failed.NextAbsent(completed.NextAbsent(i))
			if j == i {
				break
			}
			i = j
		}
		if i < total && !hasJob(i) {
			out = append(out, i)
		}
	}
	return out
}

// decide ends the ingestion or keeps up to parallelism chunk Jobs running.
func (p *pass) decide(ctx context.Context) error {
	st, spec := &p.status, &p.obj.Spec
	total := int(st.Chunks.Total)
	finished := p.completed.Len() + p.failed.Len()
	budget := float64(spec.Chunking.MaxFailedRowsPercent) / 100 * float64(st.Records.Total)

	switch phase, reason := outcomePhase(total, finished, p.failed.Len(), st.Records.Failed, budget, p.permanent != nil); phase {
	case v1alpha1.PhaseFailed:
		if err := p.stopActive(ctx); err != nil {
			return err
		}
		if reason == "Permanent" {
			p.fail(p.permanent.Reason, fmt.Sprintf("chunk %d failed permanently: %s", p.permanent.Index, p.permanent.Message))
		} else {
			p.fail(reason, fmt.Sprintf("%d of %d rows failed, over the %d%% budget (spec.chunking.maxFailedRowsPercent)",
				st.Records.Failed, st.Records.Total, spec.Chunking.MaxFailedRowsPercent))
		}
		return nil
	case v1alpha1.PhaseCompleted:
		msg := fmt.Sprintf("%d rows in %d chunks, %d vectors", st.Records.Processed, total, usageVectors(st))
		return p.syncStep(ctx, phase, reason, msg)
	case v1alpha1.PhasePartiallyCompleted:
		return p.syncStep(ctx, phase, reason, fmt.Sprintf("%d rows processed, %d failed (within the %d%% budget) in %d chunks, %d failed chunks",
			st.Records.Processed, st.Records.Failed, spec.Chunking.MaxFailedRowsPercent, total, p.failed.Len()))
	}

	st.Phase = v1alpha1.PhaseProcessingChunks
	// With spec.worker.queueName every chunk Job is Kueue's (the ingestion decides, not a label
	// a user may add or remove): queued are those it holds suspended until it admits them, and
	// running the admitted ones. Otherwise suspended are those this controller suspended.
	kueue := spec.Worker.QueueName != ""
	var running, suspended, queued []*childJob
	for i, c := range p.kids.chunks {
		if p.recorded(i) {
			continue
		}
		switch {
		case c.state == jobActive:
			running = append(running, c)
		case c.state == jobSuspended && kueue:
			queued = append(queued, c)
		case c.state == jobSuspended:
			suspended = append(suspended, c)
		}
	}
	byIndex := func(cs []*childJob) {
		sort.Slice(cs, func(a, b int) bool { return cs[a].index < cs[b].index })
	}
	byIndex(running)
	byIndex(suspended)
	byIndex(queued)

	if spec.Suspend {
		admitted := 0
		for _, c := range running {
			if kueue {
				// Kueue would start it again: an admitted chunk runs to the end.
				admitted++
				continue
			}
			if err := p.setSuspend(ctx, c, true); err != nil {
				return err
			}
		}
		if err := p.withdraw(ctx, queued); err != nil {
			return err
		}
		msg := "spec.suspend is set: no chunk runs"
		if admitted > 0 {
			msg = fmt.Sprintf("spec.suspend is set: no chunk starts; the %d chunk Jobs Kueue admitted run to the end", admitted)
		}
		p.setCondition(v1alpha1.ConditionSuspended, true, "Suspended", msg)
		p.counts(total, finished, admitted)
		st.Message = fmt.Sprintf("suspended at %d/%d chunks", finished, total)
		return nil
	}
	p.setCondition(v1alpha1.ConditionSuspended, false, "Running", "")

	limit := int(spec.Chunking.Parallelism)
	// A lowered parallelism takes effect at once: the newest extra chunks are suspended, and
	// resume first when room frees up. Kueue's are never suspended or resumed here (Kueue
	// starts what it admitted): queued extras are withdrawn, admitted ones finish.
	keep, drop := kueueWithdraw(len(running), queued, limit)
	if err := p.withdraw(ctx, drop); err != nil {
		return err
	}
	queued = keep
	for len(running) > limit && !kueue {
		c := running[len(running)-1]
		if err := p.setSuspend(ctx, c, true); err != nil {
			return err
		}
		running = running[:len(running)-1]
	}
	for len(running) < limit && len(suspended) > 0 && p.blocked == nil {
		c := suspended[0]
		if err := p.setSuspend(ctx, c, false); err != nil {
			return err
		}
		suspended, running = suspended[1:], append(running, c)
	}
	unfinished := total - finished
	hasJob := func(i int) bool { c := p.kids.chunks[i]; return c != nil && !c.gone }
	next := nextChunks(total, limit-len(running)-len(queued), p.completed, p.failed, hasJob)
	holdFor := ""
	if len(next) > 0 && spec.Mapping.IDPrefix != "" {
		// An older run's sync step deleting under the same prefix would take this run's new
		// vectors for ones that left its file: start writing once it is done.
		peers, err := p.r.samePrefix(ctx, p.obj)
		if err != nil {
			return err
		}
		if holdFor = peers.olderDeleting(); holdFor != "" {
			next = nil
			p.requeueAfter = peerRecheck
		} else if !peers.deleter() {
			// No run that deletes under the prefix is running: none needs this run recorded.
		} else if holdFor, err = p.r.registerWriter(ctx, p.obj); err != nil {
			// Unrecorded, an older run's sync step could not see this run once it is deleted:
			// write nothing until the record takes it.
			if !p.refusedRecord("record this run as a writer under its id prefix", err) {
				return err
			}
			next = nil
		} else if holdFor != "" {
			next = nil
			p.requeueAfter = peerRecheck
		}
	}
	if len(next) > 0 && p.r.leasing() {
		if err := p.r.ensureLeaseSecret(ctx, p.obj); err != nil {
			if !p.refused("write the rate lease Secret", err) {
				return err
			}
			next = nil
		} else {
			p.noteRateBudget(ctx)
		}
	}
	for _, i := range next {
		if p.blocked != nil {
			break
		}
		args, err := p.kids.plan.Chunk(i)
		if err != nil {
			return err
		}
		args.RequestsPerMinute = budgetShare(float64(spec.Embedding.RequestsPerMinute), spec.Chunking.Parallelism, unfinished)
		args.TokensPerMinute = budgetShare(float64(spec.Embedding.TokensPerMinute), spec.Chunking.Parallelism, unfinished)
		job, err := p.r.chunkJob(p.obj, args)
		if err != nil {
			return err
		}
		if err := p.r.create(ctx, p.obj.UID, job); err != nil {
			if !p.refused("create chunk Job "+job.Name, err) {
				return fmt.Errorf("create job %s: %w", job.Name, err)
			}
			break
		}
		c := &childJob{job: job, index: i, state: jobActive}
		p.kids.chunks[i] = c
		if kueue {
			c.state = jobSuspended
			queued = append(queued, c)
		} else {
			running = append(running, c)
		}
	}
	p.counts(total, finished, len(running))
	st.Message = fmt.Sprintf("%d/%d chunks finished, %d running", finished, total, len(running))
	if len(queued) > 0 {
		st.Message += fmt.Sprintf(", %d queued in Kueue LocalQueue %s (not admitted yet)", len(queued), spec.Worker.QueueName)
	}
	if holdFor != "" {
		st.Message += fmt.Sprintf("; no new chunk starts while the older ingestion %s deletes under the same id prefix", holdFor)
	}
	if p.blocked != nil {
		st.Message += "; blocked: " + truncate(p.blocked.err.Error(), 300)
	}
	return nil
}

// refused records a write the API server answered with an error status (quota, admission,
// RBAC, validation): it becomes the Blocked condition and is retried with backoff. It reports
// false for errors that are not the server's answer (network), which fail the pass instead.
func (p *pass) refused(what string, err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return false
	}
	if p.blocked == nil {
		p.blocked = &refusal{what: what, err: err}
	}
	return true
}

// blockedCondition sets Blocked from this pass: True with the server's message while something
// is refused, False once a pass goes through without a refusal.
func (p *pass) blockedCondition() {
	if p.blocked != nil {
		reason := string(apierrors.ReasonForError(p.blocked.err))
		if reason == "" || reason == string(metav1.StatusReasonUnknown) {
			reason = ReasonBlocked
		}
		p.setCondition(v1alpha1.ConditionBlocked, true, reason, fmt.Sprintf("%s: %v", p.blocked.what, p.blocked.err))
		return
	}
	if meta.IsStatusConditionTrue(p.status.Conditions, v1alpha1.ConditionBlocked) {
		p.setCondition(v1alpha1.ConditionBlocked, false, "NotBlocked", "the API server accepts the ingestion's writes again")
	}
}

func (p *pass) counts(total, finished, active int) {
	st := &p.status
	st.Chunks.Succeeded = int32(p.completed.Len())
	st.Chunks.Failed = int32(p.failed.Len())
	st.Chunks.Active = int32(active)
	st.Chunks.Pending = int32(total - finished - active)
	st.Progress = fmt.Sprintf("%d/%d", finished, total)
}

func (p *pass) setSuspend(ctx context.Context, c *childJob, suspend bool) error {
	if c.job.Spec.Suspend != nil && *c.job.Spec.Suspend == suspend {
		return nil
	}
	// c.job may be the cache's own object (listed without a copy): change a copy.
	job := c.job.DeepCopy()
	patch := client.MergeFrom(c.job)
	job.Spec.Suspend = ptr.To(suspend)
	if err := p.r.Patch(ctx, job, patch); err != nil {
		if apierrors.IsNotFound(err) || p.refused(fmt.Sprintf("set suspend=%v on Job %s", suspend, c.job.Name), err) {
			return nil
		}
		return fmt.Errorf("set suspend=%v on job %s: %w", suspend, c.job.Name, err)
	}
	c.job = job
	if suspend {
		c.state = jobSuspended
	} else {
		c.state = jobActive
	}
	return nil
}

// withdrawRecheck is how soon a pass looks again at a queued Job whose withdrawal met a
// newer version of it.
const withdrawRecheck = 2 * time.Second

// kueueWithdraw splits the queued Kueue chunk Jobs (by index) into those kept and those to
// withdraw so that admitted plus queued stay within limit; the highest indexes go first.
func kueueWithdraw(admitted int, queued []*childJob, limit int) (keep, withdraw []*childJob) {
	n := min(max(limit-admitted, 0), len(queued))
	return queued[:n], queued[n:]
}

// withdraw deletes chunk Jobs Kueue has not admitted (or preempted): the chunk gets a new Job
// of the same name when there is room again. A preempted Job's killed pods stay held, and
// their usage counts when that new Job finishes (they carry its name).
func (p *pass) withdraw(ctx context.Context, jobs []*childJob) error {
	for _, c := range jobs {
		if !c.job.DeletionTimestamp.IsZero() {
			continue
		}
		if c.job.UID == "" {
			// Created but not in the cache yet: its creation wakes the next pass, which can.
			continue
		}
		// Only the Job as read: had Kueue admitted it since, the precondition fails and it runs.
		rv := c.job.ResourceVersion
		err := p.r.Delete(ctx, c.job, client.PropagationPolicy(metav1.DeletePropagationBackground),
			client.Preconditions{UID: &c.job.UID, ResourceVersion: &rv})
		switch {
		case err == nil || apierrors.IsNotFound(err):
		case apierrors.IsConflict(err):
			// Changed since it was read: admitted (then it runs), or only touched (Kueue's
			// stop of a preempted Job writes it three times; most of its writes wake no pass).
			// Look again soon, so a Job meant to go is not admitted later over the limit.
			if p.requeueAfter == 0 || p.requeueAfter > withdrawRecheck {
				p.requeueAfter = withdrawRecheck
			}
		case p.refused("withdraw queued chunk Job "+c.job.Name, err):
			return nil
		default:
			return fmt.Errorf("withdraw queued job %s: %w", c.job.Name, err)
		}
	}
	return nil
}

// stopActive deletes every Job of the ingestion that is still running; their pods follow through
// garbage collection.
func (p *pass) stopActive(ctx context.Context) error {
	jobs := make([]*childJob, 0, len(p.kids.chunks)+2)
	if p.kids.planner != nil {
		jobs = append(jobs, p.kids.planner)
	}
	if p.kids.sync != nil {
		jobs = append(jobs, p.kids.sync)
	}
	for _, c := range p.kids.chunks {
		jobs = append(jobs, c)
	}
	for _, c := range jobs {
		if c.state == jobSucceeded || c.state == jobFailed || !c.job.DeletionTimestamp.IsZero() {
			continue
		}
		if err := p.r.Delete(ctx, c.job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete job %s: %w", c.job.Name, err)
		}
	}
	st := &p.status
	st.Chunks.Active = 0
	return nil
}

func (p *pass) finish(phase v1alpha1.Phase, reason, msg string) {
	p.finishSync(phase, reason, msg)
	st := &p.status
	st.Phase = phase
	st.Message = msg
	if st.CompletionTime == nil {
		st.CompletionTime = &p.now
	}
	done := phase == v1alpha1.PhaseCompleted || phase == v1alpha1.PhasePartiallyCompleted
	p.setCondition(v1alpha1.ConditionComplete, done, reason, msg)
	p.setCondition(v1alpha1.ConditionFailed, phase == v1alpha1.PhaseFailed, reason, msg)
	p.setCondition(v1alpha1.ConditionSuspended, false, reason, "")
	if st.Chunks.Total > 0 {
		finished := p.completed.Len() + p.failed.Len()
		p.counts(int(st.Chunks.Total), finished, 0)
	} else {
		st.Progress = "0/0"
	}
}

func (p *pass) fail(reason, msg string) { p.finish(v1alpha1.PhaseFailed, reason, msg) }

func (p *pass) setCondition(t string, ok bool, reason, msg string) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	if reason == "" {
		reason = "Unknown"
	}
	meta.SetStatusCondition(&p.status.Conditions, metav1.Condition{
		Type: t, Status: s, Reason: reason, Message: truncate(msg, 1000), ObservedGeneration: p.obj.Generation,
	})
}

// refreshConditions stamps every condition with the generation it was checked against.
func (p *pass) refreshConditions() {
	for i := range p.status.Conditions {
		p.status.Conditions[i].ObservedGeneration = p.obj.Generation
	}
}

func (p *pass) trackingCondition() {
	if !p.r.tracked(p.obj) {
		meta.RemoveStatusCondition(&p.status.Conditions, v1alpha1.ConditionTrackingDegraded)
		return
	}
	p.r.mu.Lock()
	err := p.r.trackErr[p.obj.UID]
	p.r.mu.Unlock()
	cur := meta.FindStatusCondition(p.status.Conditions, v1alpha1.ConditionTrackingDegraded)
	if err != nil && cur != nil && cur.Status == metav1.ConditionTrue && cur.Reason == ReasonTaskItemStale {
		return // the stronger word stands until the table takes the final state
	}
	if err != nil {
		p.setCondition(v1alpha1.ConditionTrackingDegraded, true, trackingReason(err), err.Error())
	} else if meta.FindStatusCondition(p.status.Conditions, v1alpha1.ConditionTrackingDegraded) != nil {
		p.setCondition(v1alpha1.ConditionTrackingDegraded, false, "TaskTableReachable", "")
	}
}

func addUsage(st *v1alpha1.CsvIngestionStatus, res *worker.Result) {
	if res.VectorsUpserted == 0 && res.Tokens == 0 && res.Requests == 0 && res.Retries == 0 && res.RateLimited == 0 {
		return
	}
	if st.Usage == nil {
		st.Usage = &v1alpha1.Usage{}
	}
	st.Usage.VectorsUpserted += res.VectorsUpserted
	st.Usage.Tokens += res.Tokens
	st.Usage.Requests += res.Requests
	st.Usage.Retries += res.Retries
	st.Usage.RateLimited += res.RateLimited
}

func usageVectors(st *v1alpha1.CsvIngestionStatus) int64 {
	if st.Usage == nil {
		return 0
	}
	return st.Usage.VectorsUpserted
}

func estimate(obj *v1alpha1.CsvIngestion, plan *worker.Plan) *v1alpha1.Estimate {
	e := obj.Spec.Embedding
	perReq := int64(e.MaxInputsPerRequest)
	if perReq <= 0 {
		perReq = 2048
	}
	requests := (plan.TotalRows + perReq - 1) / perReq
	// Requests also split at 300,000 tokens.
	if byTokens := (plan.EstimatedTokens + 299999) / 300000; byTokens > requests {
		requests = byTokens
	}
	floor := time.Duration(0)
	if e.RequestsPerMinute > 0 {
		floor = time.Duration(float64(requests) / float64(e.RequestsPerMinute) * float64(time.Minute))
	}
	if e.TokensPerMinute > 0 {
		if t := time.Duration(float64(plan.EstimatedTokens) / float64(e.TokensPerMinute) * float64(time.Minute)); t > floor {
			floor = t
		}
	}
	est := &v1alpha1.Estimate{
		Tokens:      plan.EstimatedTokens,
		CostUSD:     plan.EstimatedCostUSD,
		Requests:    requests,
		MinDuration: floor.Round(time.Second).String(),
	}
	if e.Mode == v1alpha1.EmbeddingBatch {
		batchEstimate(est, obj, plan)
	}
	return est
}

// batchEstimate prices a batch-mode run at the Batch API's rate and counts its batches as the
// chunks will cut them (batchembed), each chunk's tokens taken in proportion to its rows. The
// rate budgets do not bound a batch run, so it has no minimum duration.
func batchEstimate(est *v1alpha1.Estimate, obj *v1alpha1.CsvIngestion, plan *worker.Plan) {
	model := obj.Spec.Embedding.Model
	var maxEnq int64
	if b := obj.Spec.Embedding.Batch; b != nil {
		maxEnq = b.MaxEnqueuedTokens
	}
	share := batchembed.ChunkTokenShare(maxEnq, obj.Spec.Chunking.Parallelism)
	var batches int64
	for i := range plan.Chunks() {
		args, err := plan.Chunk(i)
		if err != nil || plan.TotalRows <= 0 {
			continue
		}
		chunkTokens := plan.EstimatedTokens * args.Rows / plan.TotalRows
		batches += batchembed.EstimateBatches(args.Rows, chunkTokens, share)
	}
	est.Mode = v1alpha1.EmbeddingBatch
	est.Batches = batches
	est.OnlineCostUSD = plan.EstimatedCostUSD
	est.CostUSD = tokens.BatchCostUSD(model, plan.EstimatedTokens)
	est.SavedUSD = tokens.BatchSavingUSD(model, plan.EstimatedTokens)
	est.Requests = batches
	est.MinDuration = ""
}

func finishedAt(j *batchv1.Job) *metav1.Time {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == "True" {
			return &c.LastTransitionTime
		}
	}
	return nil
}

func jobDuration(j *batchv1.Job) time.Duration {
	start := j.Status.StartTime
	end := finishedAt(j)
	if j.Status.CompletionTime != nil {
		end = j.Status.CompletionTime
	}
	if start == nil || end == nil {
		return 0
	}
	return end.Sub(start.Time)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// trackedView is what the task table shows of a status; a change of it needs a new version.
func trackedView(st *v1alpha1.CsvIngestionStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%d|%d|%d|%d|%d|%+v|%s|%v", st.Phase, st.Records.Total, st.Records.Processed, st.Records.Failed,
		st.Records.Deleted, usageVectors(st), st.Chunks, st.Message, st.CompletionTime != nil)
	if st.Batch != nil {
		// The task item's batch counts (live ones too, while chunks run).
		fmt.Fprintf(&b, "|%+v", *st.Batch)
	}
	return b.String()
}
