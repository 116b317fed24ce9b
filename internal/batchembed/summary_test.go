package batchembed

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func TestRecordSummary(t *testing.T) {
	cases := []struct {
		name    string
		batches []Batch
		want    v1alpha1.BatchStatus
	}{
		{"empty", nil, v1alpha1.BatchStatus{}},
		{"only uploaded: not at OpenAI yet", []Batch{{State: StateUploaded, Lines: 100}}, v1alpha1.BatchStatus{Lines: 100}},
		{"one of each live state", []Batch{
			{State: "validating", Lines: 10}, {State: "in_progress", Lines: 20, Completed: 5},
			{State: "finalizing", Lines: 30, Completed: 30}, {State: "cancelling", Lines: 40, Completed: 1},
		}, v1alpha1.BatchStatus{Batches: 4, Validating: 1, InProgress: 1, Finalizing: 2, Lines: 100, LinesDone: 36}},
		{"completed with error-file lines", []Batch{{State: "completed", Lines: 50, Completed: 48, Failed: 2}},
			v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 50, LinesDone: 48, LinesFailed: 2}},
		{"failed as a whole: every line failed", []Batch{{State: "failed", Lines: 50}},
			v1alpha1.BatchStatus{Batches: 1, Failed: 1, Lines: 50, LinesFailed: 50}},
		{"expired half done, rest resubmitted and done: lines counted once", []Batch{
			// OpenAI counts the expired lines as failed.
			{Pass: 0, State: "expired", Lines: 2000, Completed: 1000, Failed: 1000},
			{Pass: 0, Index: 1, State: "completed", Lines: 2000, Completed: 2000},
			{Pass: 1, State: "completed", Lines: 1000, Completed: 1000},
		}, v1alpha1.BatchStatus{Batches: 3, Completed: 2, Expired: 1, Lines: 4000, LinesDone: 4000}},
		{"expired after the last resubmission: those lines failed", []Batch{
			{Pass: 0, State: "expired", Lines: 100, Completed: 60, Failed: 40},
			{Pass: 1, State: "expired", Lines: 40, Completed: 30, Failed: 10},
		}, v1alpha1.BatchStatus{Batches: 2, Expired: 2, Lines: 100, LinesDone: 90, LinesFailed: 10}},
		{"expired with error-file lines: only the resubmitted ones leave failed", []Batch{
			{Pass: 0, State: "expired", Lines: 100, Completed: 50, Failed: 50}, // 5 refused, 45 expired
			{Pass: 1, State: "completed", Lines: 45, Completed: 45},
		}, v1alpha1.BatchStatus{Batches: 2, Completed: 1, Expired: 1, Lines: 100, LinesDone: 95, LinesFailed: 5}},
		{"resubmission uploaded, not created yet", []Batch{
			{Pass: 0, State: "expired", Lines: 100, Completed: 50, Failed: 50},
			{Pass: 1, State: StateUploaded, Lines: 50},
		}, v1alpha1.BatchStatus{Batches: 1, Expired: 1, Lines: 100, LinesDone: 50}},
		{"cancelled keeps its lines done", []Batch{{State: "cancelled", Lines: 30, Completed: 7}},
			v1alpha1.BatchStatus{Batches: 1, Cancelled: 1, Lines: 30, LinesDone: 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := (Record{Batches: tc.batches}).Summary(); got != tc.want {
				t.Errorf("Summary()\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
