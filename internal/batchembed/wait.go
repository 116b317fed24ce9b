package batchembed

import (
	"context"
	"fmt"

	openai "github.com/sashabaranov/go-openai"
)

// codeTokenLimit is the error code of a batch refused for the organisation's enqueued-token cap:
// the same file is submitted again once batches have finished.
const codeTokenLimit = "token_limit_exceeded"

// update copies what OpenAI says of a batch into its record entry.
func (r *Runner) update(b *Batch, got openai.Batch) {
	b.ID, b.State = got.ID, got.Status
	if got.OutputFileID != nil {
		b.OutputFileID = *got.OutputFileID
	}
	if got.ErrorFileID != nil {
		b.ErrorFileID = *got.ErrorFileID
	}
	b.Completed, b.Failed = got.RequestCounts.Completed, got.RequestCounts.Failed
	if got.Status == "failed" && got.Errors != nil && len(got.Errors.Data) > 0 {
		e := got.Errors.Data[0]
		b.Reason = e.Code + ": " + e.Message
	}
}

func refusedForCap(b Batch) bool {
	return b.State == "failed" && len(b.Reason) >= len(codeTokenLimit) && b.Reason[:len(codeTokenLimit)] == codeTokenLimit
}

// openTokens is the tokens of batches that hold the enqueued-token budget, other than batch
// (pass, index).
func (r *Runner) openTokens(pass, index int) int64 {
	var n int64
	for _, b := range r.rec.Batches {
		if (b.Pass != pass || b.Index != index) && b.ID != "" && !Terminal(b.State) {
			n += b.Tokens
		}
	}
	return n
}

// waitForRoom polls the open batches until tokens more fit under MaxEnqueuedTokens.
func (r *Runner) waitForRoom(ctx context.Context, tokens int64, pass, index int) error {
	limit := r.cfg.Limits.MaxEnqueuedTokens
	for limit > 0 && r.openTokens(pass, index) > 0 && r.openTokens(pass, index)+tokens > limit {
		if err := r.cfg.Sleep(ctx, r.cfg.PollInterval); err != nil {
			return err
		}
		if _, err := r.poll(ctx); err != nil {
			return err
		}
	}
	return nil
}

// poll retrieves every open batch once, records changes, and says whether all have ended.
func (r *Runner) poll(ctx context.Context) (bool, error) {
	all, changed := true, false
	for i := range r.rec.Batches {
		b := &r.rec.Batches[i]
		if b.ID == "" || Terminal(b.State) {
			continue
		}
		got, err := r.cfg.Client.RetrieveBatch(ctx, b.ID)
		r.stats.Polls++
		if err != nil {
			return false, r.classify("retrieve batch "+b.ID, err)
		}
		before := *b
		r.update(b, got.Batch)
		if *b != before {
			changed = true
			r.cfg.Log.Info("batch changed", "batch", b.ID, "state", b.State, "completed", b.Completed, "failed", b.Failed)
		}
		if !Terminal(b.State) {
			all = false
		}
	}
	if changed {
		if err := r.save(ctx); err != nil {
			return false, err
		}
	}
	r.report(ctx)
	return all, nil
}

// report hands the record's summary to Config.Report when it differs from the last one handed
// (a create, an adoption or a poll changed it).
func (r *Runner) report(ctx context.Context) {
	if r.cfg.Report == nil {
		return
	}
	s := r.rec.Summary()
	if r.reported != nil && *r.reported == s {
		return
	}
	r.cfg.Report(ctx, s)
	r.reported = &s
}

// Wait creates any batch uploaded but not created, polls until every batch has ended, submits
// again the files refused for the enqueued-token cap, and, when batches of the last pass expired
// and resubmissions are left, opens the next pass and reports resubmit true: the caller then
// submits Pending's rows again and calls Wait once more.
func (r *Runner) Wait(ctx context.Context) (resubmit bool, err error) {
	if err := r.own(ctx); err != nil {
		return false, err
	}
	if err := r.SubmitUploaded(ctx); err != nil {
		return false, err
	}
	for {
		all, err := r.poll(ctx)
		if err != nil {
			return false, err
		}
		retried := false
		var refused [][2]int // by pass and index: saving may merge in other writers' entries
		for _, b := range r.rec.Batches {
			if refusedForCap(b) {
				refused = append(refused, [2]int{b.Pass, b.Index})
			}
		}
		for _, k := range refused {
			_, b := r.batchAt(k[0], k[1])
			if b == nil || !refusedForCap(*b) {
				continue // another pod of the chunk resubmitted it meanwhile
			}
			if b.Try+1 >= maxTries {
				return false, fmt.Errorf("batch %s: refused %d times for the enqueued-token cap: %s", b.ID, b.Try+1, b.Reason)
			}
			r.cfg.Log.Info("batch refused for the enqueued-token cap; submitting its file again once others finish", "batch", b.ID, "reason", b.Reason)
			b.Try++
			b.ID, b.State, b.Reason, b.Claim, b.ClaimedAt = "", StateUploaded, "", "", 0
			if err := r.save(ctx); err != nil {
				return false, err
			}
			if err := r.create(ctx, k[0], k[1]); err != nil {
				return false, err
			}
			retried = true
		}
		if all && !retried {
			break
		}
		if err := r.cfg.Sleep(ctx, r.cfg.PollInterval); err != nil {
			return false, err
		}
	}
	last := len(r.rec.Passes) - 1
	expired := 0
	for _, b := range r.rec.Batches {
		if b.Pass == last && b.State == "expired" {
			expired++
		}
	}
	if expired == 0 || r.cfg.MaxResubmits < 0 || last >= r.cfg.MaxResubmits {
		return false, nil
	}
	rows, err := r.expiredRows(ctx, last)
	if err != nil || len(rows) == 0 {
		return false, err
	}
	r.stats.Resubmitted += len(rows)
	r.rec.Passes = append(r.rec.Passes, Pass{})
	r.cfg.Log.Info("resubmitting expired lines", "pass", last+1, "lines", len(rows))
	return true, r.save(ctx)
}

// Progress counts the record's batches by state and their lines done.
func (r *Runner) Progress() (byState map[string]int, linesDone int) {
	byState = map[string]int{}
	for _, b := range r.rec.Batches {
		byState[b.State]++
		linesDone += b.Completed
	}
	return byState, linesDone
}

// Cancel cancels the chunk's open batches (the ingestion was cancelled or deleted). A batch that
// ended meanwhile (the API refuses to cancel it) is recorded as it ended. A batch recorded as
// only uploaded may exist all the same (a pod killed between creating and recording it): it is
// looked up by its metadata first, never created.
func (r *Runner) Cancel(ctx context.Context) error {
	if err := r.own(ctx); err != nil {
		return err
	}
	for i := range r.rec.Batches {
		b := &r.rec.Batches[i]
		if b.ID == "" && b.State == StateUploaded {
			found, err := r.find(ctx, r.batchKey(*b), b.InputFileID)
			if err != nil {
				return err
			}
			if found != nil {
				r.stats.BatchesAdopted++
				r.update(b, *found)
				r.trust(found.ID, found.InputFileID)
			}
		}
		if b.ID == "" || Terminal(b.State) || b.State == "cancelling" {
			continue
		}
		got, err := r.cfg.Client.CancelBatch(ctx, b.ID)
		if err != nil {
			if st := apiStatus(err); st != 409 && st != 400 {
				return r.classify("cancel batch "+b.ID, err)
			}
			if got, err = r.cfg.Client.RetrieveBatch(ctx, b.ID); err != nil {
				return r.classify("retrieve batch "+b.ID, err)
			}
		}
		r.update(b, got.Batch)
	}
	return r.save(ctx)
}

// DeleteFiles deletes every file the chunk's batches uploaded or produced; files already gone
// are not an error.
func (r *Runner) DeleteFiles(ctx context.Context) error {
	if err := r.own(ctx); err != nil {
		return err
	}
	for _, b := range r.rec.Batches {
		for _, id := range []string{b.InputFileID, b.OutputFileID, b.ErrorFileID} {
			if id == "" {
				continue
			}
			if err := r.cfg.Client.DeleteFile(ctx, id); err != nil && apiStatus(err) != 404 {
				return r.classify("delete file "+id, err)
			}
		}
	}
	return nil
}

// Finish deletes the chunk's files at OpenAI and marks the record done, once its vectors are
// upserted.
func (r *Runner) Finish(ctx context.Context) error {
	if err := r.DeleteFiles(ctx); err != nil {
		return err
	}
	r.rec.Done = true
	if err := r.save(ctx); err != nil {
		return err
	}
	// Every batch this runner knew of has ended (Collect and Abandon wait for it). One still
	// open came in through the save's merge: another pod of the chunk created it meanwhile (the
	// cleanup of a cancelled run racing a chunk pod). The record is done, so nobody would ever
	// poll, collect or cancel it: cancel it now (best effort, after checking it is this chunk's).
	for _, b := range r.rec.Batches {
		if b.ID == "" || Terminal(b.State) || b.State == "cancelling" {
			continue
		}
		if !r.trusted[b.ID] {
			got, err := r.cfg.Client.RetrieveBatch(ctx, b.ID)
			if err != nil || !r.ours(got.Metadata, r.batchKey(b)) {
				r.cfg.Log.Info("not cancelling an open batch the finished record names: not verified as this chunk's", "batch", b.ID, "error", fmt.Sprint(err))
				continue
			}
		}
		r.cfg.Log.Info("cancelling a batch another pod of this chunk created while this one finished", "batch", b.ID)
		if _, err := r.cfg.Client.CancelBatch(ctx, b.ID); err != nil {
			r.cfg.Log.Error(r.classify("cancel batch "+b.ID, err), "could not cancel a batch of the finished record", "batch", b.ID)
		}
	}
	return nil
}

// Abandon is the end of a chunk whose ingestion was cancelled or failed: it cancels the open
// batches, waits (polling, bounded by ctx) until OpenAI has ended them, so that their partial
// output files exist, deletes every file, and marks the record done.
func (r *Runner) Abandon(ctx context.Context) error {
	if r.rec.Done {
		return nil
	}
	if err := r.Cancel(ctx); err != nil {
		return err
	}
	for {
		all, err := r.poll(ctx)
		if err != nil {
			return err
		}
		if all {
			break
		}
		if err := r.cfg.Sleep(ctx, r.cfg.PollInterval); err != nil {
			return err
		}
	}
	return r.Finish(ctx)
}
