package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// A pass takes the previous pass's live part out of status.batch, records what finished, and
// adds the live reports of the chunks that still run: never a chunk twice, never a stale live
// part kept.
func TestLiveBatchMerge(t *testing.T) {
	c0 := v1alpha1.BatchStatus{Batches: 1, InProgress: 1, Lines: 1000, LinesDone: 400}
	c1 := v1alpha1.BatchStatus{Batches: 1, Validating: 1, Lines: 1000}
	c1Later := v1alpha1.BatchStatus{Batches: 1, Finalizing: 1, Lines: 1000, LinesDone: 1000}
	rec0 := v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 1000, LinesDone: 1000}
	sum := func(bs ...v1alpha1.BatchStatus) *v1alpha1.BatchStatus {
		var s v1alpha1.BatchStatus
		for _, b := range bs {
			s.Add(b)
		}
		return &s
	}
	cases := []struct {
		name        string
		batch, live *v1alpha1.BatchStatus // status before the pass
		record      *v1alpha1.BatchStatus // a chunk's result recorded in this pass (chunk 0)
		reports     map[int]v1alpha1.BatchStatus
		running     []int
		wantBatch   *v1alpha1.BatchStatus
		wantLive    *v1alpha1.BatchStatus
	}{
		{name: "first live reports", reports: map[int]v1alpha1.BatchStatus{0: c0, 1: c1}, running: []int{0, 1},
			wantBatch: sum(c0, c1), wantLive: sum(c0, c1)},
		{name: "reports moved on: the old live part is replaced", batch: sum(c0, c1), live: sum(c0, c1),
			reports: map[int]v1alpha1.BatchStatus{0: c0, 1: c1Later}, running: []int{0, 1},
			wantBatch: sum(c0, c1Later), wantLive: sum(c0, c1Later)},
		{name: "chunk 0 recorded this pass: its result counts, its last report does not", batch: sum(c0, c1), live: sum(c0, c1),
			record: &rec0, reports: map[int]v1alpha1.BatchStatus{0: c0, 1: c1}, running: []int{1},
			wantBatch: sum(rec0, c1), wantLive: sum(c1)},
		{name: "a report of a chunk not running (pending, suspended, recorded earlier) is left out", batch: sum(rec0), live: nil,
			reports: map[int]v1alpha1.BatchStatus{0: c0, 2: c1}, running: []int{1},
			wantBatch: sum(rec0), wantLive: nil},
		{name: "reports gone (new leader, expired): back to the recorded chunks", batch: sum(rec0, c1), live: sum(c1),
			running: []int{1}, wantBatch: sum(rec0), wantLive: nil},
		{name: "only live before, nothing now: no batch status", batch: sum(c0), live: sum(c0),
			running: []int{0}, wantBatch: nil, wantLive: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := v1alpha1.CsvIngestionStatus{Batch: tc.batch, BatchLive: tc.live}
			withoutLive(&st)
			if tc.record != nil {
				if st.Batch == nil {
					st.Batch = &v1alpha1.BatchStatus{}
				}
				st.Batch.Add(*tc.record)
			}
			reports := map[int]ratelease.LiveBatch{}
			for i, s := range tc.reports {
				reports[i] = ratelease.LiveBatch{Summary: s, At: time.Unix(1_700_000_000, 0)}
			}
			run := map[int]bool{}
			for _, i := range tc.running {
				run[i] = true
			}
			withLive(&st, reports, func(i int) bool { return run[i] })
			if !equalBatch(st.Batch, tc.wantBatch) || !equalBatch(st.BatchLive, tc.wantLive) {
				t.Errorf("batch %+v live %+v, want batch %+v live %+v", st.Batch, st.BatchLive, tc.wantBatch, tc.wantLive)
			}
		})
	}
}

func equalBatch(a, b *v1alpha1.BatchStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// The live-batch gauge has series only for unfinished batch-mode ingestions with live reports.
func TestComputeGaugesLiveBatches(t *testing.T) {
	live := &v1alpha1.BatchStatus{Batches: 3, Validating: 1, InProgress: 2, Lines: 30}
	ing := func(name string, mode string, phase v1alpha1.Phase, bl *v1alpha1.BatchStatus) v1alpha1.CsvIngestion {
		o := v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: v1alpha1.CsvIngestionStatus{Phase: phase, BatchLive: bl}}
		o.Spec.Embedding.Mode = mode
		return o
	}
	g := computeGauges([]v1alpha1.CsvIngestion{
		ing("running", v1alpha1.EmbeddingBatch, v1alpha1.PhaseProcessingChunks, live),
		ing("ended", v1alpha1.EmbeddingBatch, v1alpha1.PhaseCancelled, live),
		ing("no-reports", v1alpha1.EmbeddingBatch, v1alpha1.PhaseProcessingChunks, nil),
	})
	got := map[string]float64{}
	for _, s := range g.liveBatches {
		got[s.namespace+"/"+s.name+"/"+s.state] = s.n
	}
	want := map[string]float64{"ns/running/validating": 1, "ns/running/in_progress": 2, "ns/running/finalizing": 0,
		"ns/running/completed": 0, "ns/running/failed": 0, "ns/running/expired": 0, "ns/running/cancelled": 0}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if n, ok := got[k]; !ok || n != v {
			t.Errorf("%s = %v (present %v), want %v", k, n, ok, v)
		}
	}
}
