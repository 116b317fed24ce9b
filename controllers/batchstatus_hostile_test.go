package controllers_test

import (
	"math"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Batch counts come from the chunk pods' termination messages, which the manager does not
// trust: negative counts add nothing (before, they reached status.batch and made the metrics'
// counters panic), and huge ones saturate instead of wrapping negative.
func TestBatchStatusHostileCounts(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, batchIngestion(ns, "hostile"))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) {
		res := okResult(1000)
		res.Batch = &v1alpha1.BatchStatus{Batches: math.MaxInt32, Completed: -7, Lines: math.MaxInt64, LinesDone: -1000, LinesFailed: 3}
		return res, 0, ""
	}, nil)
	want := v1alpha1.BatchStatus{Batches: math.MaxInt32, Lines: math.MaxInt64, LinesFailed: 6}
	if final.Status.Batch == nil || *final.Status.Batch != want {
		t.Errorf("status.batch %+v, want %+v", final.Status.Batch, want)
	}
	finishJob(t, waitCleanupJob(t, obj, ""), worker.Result{Role: worker.RoleCleanup}, 0, "")
	deleteIngestion(t, get(t, obj))
	waitGone(t, obj)
}
