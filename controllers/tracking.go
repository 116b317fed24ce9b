package controllers

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// ChunkOutcome is one finished chunk as the task table's chunk map shows it.
type ChunkOutcome struct {
	Index     int
	Status    string // completed | failed
	StartRow  int64
	EndRow    int64
	Processed int64
	Failed    int64
	Vectors   int64
	Error     string
}

// Tracker mirrors an ingestion into its task table. Implementations must refuse a write whose
// version is older than the stored one, so a stale controller never moves the item backwards.
type Tracker interface {
	// Sync writes the task item at obj.Status.TrackingVersion, with the chunk entries that changed.
	Sync(ctx context.Context, obj *v1alpha1.CsvIngestion, chunks map[int]ChunkOutcome) error
	// Cancelled marks the task cancelled (the ingestion is being deleted while it runs).
	Cancelled(ctx context.Context, obj *v1alpha1.CsvIngestion, at time.Time) error
}

// mirror sends the written status and the entries of chunks recorded but not yet released. The
// entries come from what the cluster keeps (the chunks' Jobs and pods, held until the table has
// them), so a crash or a leader change between the status write and this write loses nothing, and
// writing them again is harmless. A failure is remembered for the TrackingDegraded condition;
// ingestion carries on regardless.
func (r *Reconciler) mirror(ctx context.Context, obj *v1alpha1.CsvIngestion, open map[int]ChunkOutcome) error {
	r.mu.Lock()
	upToDate := r.mirrored[obj.UID] >= obj.Status.TrackingVersion && len(open) == 0
	hadErr := r.trackErr[obj.UID] != nil
	r.mu.Unlock()
	if upToDate {
		return nil
	}

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := r.Tracker.Sync(cctx, obj, open)

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.trackErr[obj.UID] = err
		trackingErrors.Inc()
		if !hadErr {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "TrackingDegraded", "Track",
				"task table write failed, ingestion continues: %v", err)
		}
		logr.FromContextOrDiscard(ctx).Info("task table write failed", "error", err.Error())
		return err
	}
	delete(r.trackErr, obj.UID)
	r.mirrored[obj.UID] = obj.Status.TrackingVersion
	return nil
}
