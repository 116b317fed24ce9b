package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func TestComputeGauges(t *testing.T) {
	created := metav1.Unix(1_700_000_000, 0)
	started := metav1.Unix(1_700_000_060, 0)
	moved := metav1.Unix(1_700_003_600, 0)
	suspendedCond := []metav1.Condition{{Type: v1alpha1.ConditionSuspended, Status: metav1.ConditionTrue, Reason: "Suspended"}}
	ing := func(name string, st v1alpha1.CsvIngestionStatus, mutate ...func(*v1alpha1.CsvIngestion)) v1alpha1.CsvIngestion {
		o := v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, CreationTimestamp: created}, Status: st}
		for _, m := range mutate {
			m(&o)
		}
		return o
	}
	items := []v1alpha1.CsvIngestion{
		// Never reconciled (manager down since it was created): Pending, its clock from creation.
		ing("new", v1alpha1.CsvIngestionStatus{}),
		// Running and moving.
		ing("running", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &started, LastProgressTime: &moved,
			Chunks: v1alpha1.ChunkCounts{Total: 100, Pending: 60, Active: 4, Succeeded: 36}}),
		// Written by a version without lastProgressTime: the clock falls back to startTime.
		ing("old-status", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhasePlanning, StartTime: &started}),
		// Suspended, by condition or by a spec the controller has not seen yet: counted, not stalled.
		ing("suspended", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &started, LastProgressTime: &moved,
			Conditions: suspendedCond, Chunks: v1alpha1.ChunkCounts{Total: 10, Pending: 10}}),
		ing("suspend-asked", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &started, LastProgressTime: &moved,
			Chunks: v1alpha1.ChunkCounts{Total: 10, Pending: 8, Active: 2}}, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true }),
		// Finished: counted by phase, no chunks, no clock, even with stale counts in status.
		ing("done", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseCompleted, StartTime: &started, LastProgressTime: &moved,
			Chunks: v1alpha1.ChunkCounts{Total: 10, Succeeded: 10}}),
		ing("failed", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseFailed, StartTime: &started,
			Chunks: v1alpha1.ChunkCounts{Total: 10, Pending: 5, Failed: 1}}),
	}
	g := computeGauges(items)
	wantPhases := map[v1alpha1.Phase]float64{v1alpha1.PhasePending: 1, v1alpha1.PhasePlanning: 1, v1alpha1.PhaseProcessingChunks: 3,
		v1alpha1.PhaseCompleted: 1, v1alpha1.PhaseFailed: 1}
	for _, ph := range allPhases {
		if g.phases[ph] != wantPhases[ph] {
			t.Errorf("phase %s: %v, want %v", ph, g.phases[ph], wantPhases[ph])
		}
	}
	if g.pending != 60+10+8 || g.active != 4+2 {
		t.Errorf("chunks pending %v active %v, want 78 and 6", g.pending, g.active)
	}
	got := map[string]float64{}
	for _, s := range g.lastProgress {
		got[s.namespace+"/"+s.name] = s.at
	}
	want := map[string]float64{"ns/new": 1_700_000_000, "ns/running": 1_700_003_600, "ns/old-status": 1_700_000_060}
	if len(got) != len(want) {
		t.Errorf("last progress series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("last progress of %s = %v, want %v", k, got[k], v)
		}
	}
}

func TestMarkProgress(t *testing.T) {
	t0 := metav1.Unix(1_700_000_000, 0)
	now := metav1.NewTime(time.Unix(1_700_009_999, 0))
	suspended := []metav1.Condition{{Type: v1alpha1.ConditionSuspended, Status: metav1.ConditionTrue, Reason: "Suspended"}}
	resumed := []metav1.Condition{{Type: v1alpha1.ConditionSuspended, Status: metav1.ConditionFalse, Reason: "Running"}}
	running := v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &t0, LastProgressTime: &t0}
	cases := []struct {
		name          string
		before, after v1alpha1.CsvIngestionStatus
		results       int
		want          metav1.Time
	}{
		{"first pass", v1alpha1.CsvIngestionStatus{}, v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhasePending, StartTime: &now}, 0, now},
		{"nothing finished", running, running, 0, t0},
		{"a chunk recorded", running, running, 1, now},
		{"phase changed", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhasePlanning, StartTime: &t0, LastProgressTime: &t0}, running, 0, now},
		{"resumed", withConds(running, suspended), withConds(running, resumed), 0, now},
		{"still suspended", withConds(running, suspended), withConds(running, suspended), 0, t0},
		{"status from a version without the field", v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &t0},
			v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &t0}, 0, now},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &pass{obj: &v1alpha1.CsvIngestion{Status: *tc.before.DeepCopy()}, status: *tc.after.DeepCopy(), now: now,
				results: make([]finishedChunk, tc.results)}
			p.markProgress()
			if p.status.LastProgressTime == nil || !p.status.LastProgressTime.Equal(&tc.want) {
				t.Errorf("lastProgressTime %v, want %v", p.status.LastProgressTime, tc.want)
			}
		})
	}
}

func withConds(st v1alpha1.CsvIngestionStatus, c []metav1.Condition) v1alpha1.CsvIngestionStatus {
	st.Conditions = c
	return st
}
