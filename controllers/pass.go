package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ranges"
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
}

type finishedChunk struct {
	succeeded bool
	result    *worker.Result
	duration  time.Duration
}

func (r *Reconciler) newPass(obj *v1alpha1.CsvIngestion, kids *children) *pass {
	p := &pass{r: r, obj: obj, kids: kids, now: metav1.NewTime(r.Now()), outcomes: map[int]ChunkOutcome{}}
	p.status = *obj.Status.DeepCopy()
	return p
}

func (p *pass) run(ctx context.Context) error {
	st := &p.status
	before := trackedView(st)
	defer func() {
		// Every write of a changed task view gets a new version, so the task table can refuse
		// anything older.
		if trackedView(st) != before || len(p.outcomes) > 0 {
			st.TrackingVersion++
		}
	}()
	st.ObservedGeneration = p.obj.Generation
	st.TaskID = p.obj.EffectiveTaskID()
	if st.StartTime == nil {
		st.StartTime = &p.now
	}
	if st.Phase == "" {
		st.Phase = v1alpha1.PhasePending
	}
	var err error
	p.completed, err = ranges.Parse(st.CompletedChunks)
	if err != nil {
		return fmt.Errorf("status.completedChunks of %s: %w", p.obj.Name, err)
	}
	p.failed, err = ranges.Parse(st.FailedChunkIndexes)
	if err != nil {
		return fmt.Errorf("status.failedChunkIndexes of %s: %w", p.obj.Name, err)
	}
	p.trackingCondition()

	if st.Phase.Terminal() {
		// Terminal is final; only make sure nothing is left running.
		p.refreshConditions()
		return p.stopActive(ctx)
	}
	if p.obj.Spec.Cancel {
		if err := p.stopActive(ctx); err != nil {
			return err
		}
		p.finish(v1alpha1.PhaseCancelled, "Cancelled", "cancelled by spec.cancel")
		return nil
	}
	planned, err := p.planStep(ctx)
	if err != nil || !planned {
		return err
	}
	if p.obj.Spec.DryRun {
		p.finish(v1alpha1.PhaseCompleted, "DryRun", fmt.Sprintf("dry run: %d rows, %d chunks, about %d tokens (%s USD), at least %s",
			st.Records.Total, st.Chunks.Total, st.Estimate.Tokens, st.Estimate.CostUSD, st.Estimate.MinDuration))
		return nil
	}
	p.recordFinishedChunks()
	return p.decide(ctx)
}

// planStep makes sure there is a plan: it creates the planner Job, waits for it, or fails the
// ingestion with the planner's own message.
func (p *pass) planStep(ctx context.Context) (bool, error) {
	st, kids := &p.status, p.kids
	if kids.plan != nil {
		plan := kids.plan
		st.Source = &v1alpha1.SourceStatus{ETag: plan.ETag, Bucket: plan.Bucket, Key: plan.Key, SizeBytes: plan.SizeBytes, TotalRows: plan.TotalRows}
		st.Records.Total = plan.TotalRows
		st.Chunks.Total = int32(plan.Chunks())
		st.Estimate = estimate(p.obj, plan)
		p.setCondition(v1alpha1.ConditionPlanned, true, "Planned",
			fmt.Sprintf("%d rows in %d chunks of %s", plan.TotalRows, plan.Chunks(), plan.Key))
		return true, nil
	}
	if kids.planErr != nil {
		p.fail("PlanInvalid", fmt.Sprintf("plan ConfigMap %s is unusable: %v", worker.PlanConfigMapName(p.obj.Name), kids.planErr))
		return false, p.stopActive(ctx)
	}
	st.Phase = v1alpha1.PhasePlanning
	switch pl := kids.planner; {
	case pl == nil:
		job, err := p.r.plannerJob(p.obj)
		if err != nil {
			return false, err
		}
		if err := p.r.create(ctx, p.obj.UID, job); err != nil {
			return false, err
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

// recordFinishedChunks moves each finished, unrecorded chunk into the status with its outcome.
// Status is the record: a Job may be deleted (TTL) only after this status is written.
func (p *pass) recordFinishedChunks() {
	st := &p.status
	idx := make([]int, 0, len(p.kids.chunks))
	for i := range p.kids.chunks {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		c := p.kids.chunks[i]
		if p.completed.Has(i) || p.failed.Has(i) || (c.state != jobSucceeded && c.state != jobFailed) {
			continue
		}
		args, err := p.kids.plan.Chunk(i)
		if err != nil {
			continue // a Job for a chunk the plan doesn't have: never ours to count
		}
		dur := jobDuration(c.job)
		out := ChunkOutcome{Index: i, StartRow: args.FirstRow, EndRow: args.FirstRow + args.Rows - 1}
		if c.state == jobSucceeded {
			res := c.result
			if res == nil {
				if done := finishedAt(c.job); done != nil && p.now.Sub(done.Time) < resultGrace {
					p.requeueAfter = 2 * time.Second
					continue
				}
				// Exit 0 means every row was handled; only the per-row detail is unknown.
				res = &worker.Result{Processed: args.Rows}
				p.warnings = append(p.warnings, fmt.Sprintf("chunk %d finished without a readable result; counted its %d rows as processed", i, args.Rows))
			}
			p.completed.Add(i)
			st.Records.Processed += res.Processed
			st.Records.Failed += res.Failed
			st.Records.Skipped += res.Skipped
			addUsage(st, res)
			out.Status, out.Processed, out.Failed, out.Vectors = "completed", res.Processed, res.Failed, res.VectorsUpserted
			p.results = append(p.results, finishedChunk{succeeded: true, result: res, duration: dur})
		} else {
			p.failed.Add(i)
			reason, msg := chunkFailure(c)
			// The chunk will not run again: all of its rows count as failed.
			st.Records.Failed += args.Rows
			if c.result != nil {
				addUsage(st, c.result)
			}
			fc := v1alpha1.FailedChunk{Index: int32(i), Rows: chunkRows(args), Reason: reason, Message: truncate(msg, 1000)}
			if len(st.FailedChunks) < maxFailedChunkDetails {
				st.FailedChunks = append(st.FailedChunks, fc)
			}
			p.newlyFailed = append(p.newlyFailed, fc)
			if c.permanent && p.permanent == nil {
				p.permanent = &fc
			}
			out.Status, out.Failed, out.Error = "failed", args.Rows, truncate(reason+": "+msg, 1000)
			p.results = append(p.results, finishedChunk{succeeded: false, result: c.result, duration: dur})
		}
		p.outcomes[i] = out
	}
	st.CompletedChunks = p.completed.String()
	st.FailedChunkIndexes = p.failed.String()
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

// decide ends the ingestion or keeps up to parallelism chunk Jobs running.
func (p *pass) decide(ctx context.Context) error {
	st, spec := &p.status, &p.obj.Spec
	total := int(st.Chunks.Total)
	finished := p.completed.Len() + p.failed.Len()
	budget := float64(spec.Chunking.MaxFailedRowsPercent) / 100 * float64(st.Records.Total)

	switch {
	case p.permanent != nil:
		if err := p.stopActive(ctx); err != nil {
			return err
		}
		p.fail(p.permanent.Reason, fmt.Sprintf("chunk %d failed permanently: %s", p.permanent.Index, p.permanent.Message))
		return nil
	case float64(st.Records.Failed) > budget:
		if err := p.stopActive(ctx); err != nil {
			return err
		}
		p.fail("TooManyFailedRows", fmt.Sprintf("%d of %d rows failed, over the %d%% budget (spec.chunking.maxFailedRowsPercent)",
			st.Records.Failed, st.Records.Total, spec.Chunking.MaxFailedRowsPercent))
		return nil
	case finished >= total:
		if st.Records.Failed == 0 && p.failed.Len() == 0 {
			p.finish(v1alpha1.PhaseCompleted, "Completed", fmt.Sprintf("%d rows in %d chunks, %d vectors", st.Records.Processed, total, usageVectors(st)))
		} else {
			p.finish(v1alpha1.PhasePartiallyCompleted, "PartiallyCompleted", fmt.Sprintf("%d rows processed, %d failed (within the %d%% budget) in %d chunks, %d failed chunks",
				st.Records.Processed, st.Records.Failed, spec.Chunking.MaxFailedRowsPercent, total, p.failed.Len()))
		}
		return nil
	}

	st.Phase = v1alpha1.PhaseProcessingChunks
	var running, suspended []*childJob
	for i, c := range p.kids.chunks {
		if p.completed.Has(i) || p.failed.Has(i) {
			continue
		}
		switch c.state {
		case jobActive:
			running = append(running, c)
		case jobSuspended:
			suspended = append(suspended, c)
		}
	}
	sort.Slice(running, func(a, b int) bool { return running[a].index < running[b].index })
	sort.Slice(suspended, func(a, b int) bool { return suspended[a].index < suspended[b].index })

	if spec.Suspend {
		for _, c := range running {
			if err := p.setSuspend(ctx, c, true); err != nil {
				return err
			}
		}
		p.setCondition(v1alpha1.ConditionSuspended, true, "Suspended", "spec.suspend is set: no chunk runs")
		p.counts(total, finished, 0)
		st.Message = fmt.Sprintf("suspended at %d/%d chunks", finished, total)
		return nil
	}
	p.setCondition(v1alpha1.ConditionSuspended, false, "Running", "")

	limit := int(spec.Chunking.Parallelism)
	// A lowered parallelism takes effect at once: the newest extra chunks are suspended, and
	// resume first when room frees up.
	for len(running) > limit {
		c := running[len(running)-1]
		if err := p.setSuspend(ctx, c, true); err != nil {
			return err
		}
		running = running[:len(running)-1]
	}
	for len(running) < limit && len(suspended) > 0 {
		c := suspended[0]
		if err := p.setSuspend(ctx, c, false); err != nil {
			return err
		}
		suspended, running = suspended[1:], append(running, c)
	}
	unfinished := total - finished
	for i := 0; i < total && len(running) < limit; i++ {
		if p.completed.Has(i) || p.failed.Has(i) || p.kids.chunks[i] != nil {
			continue
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
			return err
		}
		c := &childJob{job: job, index: i, state: jobActive}
		p.kids.chunks[i] = c
		running = append(running, c)
	}
	p.counts(total, finished, len(running))
	st.Message = fmt.Sprintf("%d/%d chunks finished, %d running", finished, total, len(running))
	return nil
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
	patch := client.MergeFrom(c.job.DeepCopy())
	c.job.Spec.Suspend = ptr.To(suspend)
	if err := p.r.Patch(ctx, c.job, patch); err != nil {
		return fmt.Errorf("set suspend=%v on job %s: %w", suspend, c.job.Name, err)
	}
	if suspend {
		c.state = jobSuspended
	} else {
		c.state = jobActive
	}
	return nil
}

// stopActive deletes every Job of the ingestion that is still running; their pods follow through
// garbage collection.
func (p *pass) stopActive(ctx context.Context) error {
	jobs := make([]*childJob, 0, len(p.kids.chunks)+1)
	if p.kids.planner != nil {
		jobs = append(jobs, p.kids.planner)
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
	if err != nil {
		p.setCondition(v1alpha1.ConditionTrackingDegraded, true, trackingReason(err), err.Error())
	} else if meta.FindStatusCondition(p.status.Conditions, v1alpha1.ConditionTrackingDegraded) != nil {
		p.setCondition(v1alpha1.ConditionTrackingDegraded, false, "TaskTableReachable", "")
	}
}

func addUsage(st *v1alpha1.CsvIngestionStatus, res *worker.Result) {
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
	return &v1alpha1.Estimate{
		Tokens:      plan.EstimatedTokens,
		CostUSD:     plan.EstimatedCostUSD,
		Requests:    requests,
		MinDuration: floor.Round(time.Second).String(),
	}
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
	fmt.Fprintf(&b, "%s|%d|%d|%d|%d|%+v|%s|%v", st.Phase, st.Records.Total, st.Records.Processed, st.Records.Failed,
		usageVectors(st), st.Chunks, st.Message, st.CompletionTime != nil)
	return b.String()
}
