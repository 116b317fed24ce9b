// Package taskstatus is the one mapping from a CsvIngestion phase to the status words of the legacy
// task API (§5), which the HTTP shim, the DynamoDB task item and the docs all use.
package taskstatus

import "github.com/vectordb-io/vectordb-operator/api/v1alpha1"

// The legacy status words, as the old FastAPI service reported them.
const (
	Pending            = "pending"
	Processing         = "processing"
	ProcessingChunks   = "processing_chunks"
	PartiallyCompleted = "partially_completed"
	Completed          = "completed"
	Failed             = "failed"
	Cancelled          = "cancelled"
)

// all is in life-cycle order; All returns a copy so callers cannot change it.
var all = []string{Pending, Processing, ProcessingChunks, PartiallyCompleted, Completed, Failed, Cancelled}

// FromPhase maps a phase to its status word. An empty phase is a resource not yet reconciled, so
// it is pending. An unknown phase (a newer API version) maps to processing: the task exists and is
// not known to be finished, which is the safe thing to tell a client that polls until done.
func FromPhase(p v1alpha1.Phase) string {
	switch p {
	case "", v1alpha1.PhasePending:
		return Pending
	case v1alpha1.PhasePlanning:
		return Processing
	case v1alpha1.PhaseProcessingChunks:
		return ProcessingChunks
	case v1alpha1.PhaseCompleted:
		return Completed
	case v1alpha1.PhasePartiallyCompleted:
		return PartiallyCompleted
	case v1alpha1.PhaseFailed:
		return Failed
	case v1alpha1.PhaseCancelled:
		return Cancelled
	}
	return Processing
}

// Terminal reports whether a task with this status word will do no more work.
func Terminal(word string) bool {
	switch word {
	case Completed, PartiallyCompleted, Failed, Cancelled:
		return true
	}
	return false
}

// Valid reports whether word is one of the status words.
func Valid(word string) bool {
	for _, w := range all {
		if w == word {
			return true
		}
	}
	return false
}

// All returns the status words in life-cycle order.
func All() []string {
	return append([]string(nil), all...)
}
