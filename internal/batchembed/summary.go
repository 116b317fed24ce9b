package batchembed

import "github.com/vectordb-io/vectordb-operator/api/v1alpha1"

// Summary rolls a chunk's record up into the counts the status shows: its batches by OpenAI's
// state and its lines. A batch recorded as only uploaded is not counted (it does not exist at
// OpenAI yet). Lines are those of the first pass's batches (each row to embed once); lines
// resubmitted after an expiry are in later passes, so LinesDone counts every batch's lines done
// and LinesFailed every batch's failed lines (all lines of a failed batch) but the expired
// lines that were submitted again.
func (rec Record) Summary() v1alpha1.BatchStatus {
	var s v1alpha1.BatchStatus
	for _, b := range rec.Batches {
		if b.State == StateUploaded {
			continue
		}
		s.Batches++
		switch b.State {
		case "validating":
			s.Validating++
		case "in_progress":
			s.InProgress++
		case "finalizing", "cancelling":
			// cancelling is on its way to cancelled; until then OpenAI still writes its files.
			s.Finalizing++
		case "completed":
			s.Completed++
		case "failed":
			// A batch that failed as a whole (e.g. validation) ran none of its lines: OpenAI's
			// counts stay 0, and every line is dead-lettered as batch_failed.
			s.Failed++
			s.LinesFailed += int64(b.Lines - b.Completed - b.Failed)
		case "expired":
			s.Expired++
		case "cancelled":
			s.Cancelled++
		}
		s.LinesDone += int64(b.Completed)
		s.LinesFailed += int64(b.Failed)
	}
	for _, b := range rec.Batches {
		if b.Pass == 0 {
			s.Lines += int64(b.Lines)
		} else {
			// OpenAI counts an expired batch's expired lines as failed; those submitted again
			// in a later pass are not failed (what the later batch does with them is counted
			// there, once the batch exists). Expired lines never resubmitted stay failed: they
			// are dead-lettered.
			s.LinesFailed -= int64(b.Lines)
		}
	}
	s.LinesFailed = max(s.LinesFailed, 0)
	return s
}
