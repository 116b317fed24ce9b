package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embeddingbudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// BudgetStatusWriter writes each EmbeddingBudget's status from the lease server's state: a pass
// every Interval on the leader (where the server's state is), one status write per budget
// whose status changed, its events after the write. The state is the leader's memory, not the
// API server's, so this is a ticker, not a reconciler: nothing in the cluster changes when a pod
// renews.
type BudgetStatusWriter struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Snapshot is the lease server's state (ratelease.Server.Snapshot).
	Snapshot func() []ratelease.Snapshot
	// Interval between passes (default 5 s).
	Interval time.Duration
	// Warmup: a new leader's lease server knows no holder until the pods have renewed with it
	// (within a lease period), so passes before then would write every budget empty and then
	// back (0 holders for a renewal or two at each leader change). Start skips writes for this
	// long; 0: none.
	Warmup time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	Log logr.Logger

	started time.Time
	// known are the budget keys this leader's lease server has shown in a snapshot (since Start):
	// a backed-off model it has not known yet keeps the last leader's status (CarryBackoff).
	known map[string]bool
}

func (w *BudgetStatusWriter) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// NeedLeaderElection: only the leader serves leases, so only it knows the holders.
func (w *BudgetStatusWriter) NeedLeaderElection() bool { return true }

// Start runs passes until ctx ends. A failed pass is logged and retried at the next tick.
func (w *BudgetStatusWriter) Start(ctx context.Context) error {
	iv := w.Interval
	if iv <= 0 {
		iv = 5 * time.Second
	}
	w.started = w.now()
	w.known = nil
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		if err := w.Pass(ctx); err != nil && ctx.Err() == nil {
			w.Log.Error(err, "write EmbeddingBudget status")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass writes the status of every budget whose status changed. A write that conflicts (the
// cache was behind, or the budget was edited meanwhile) is left to the next pass, which starts
// from the newer object. Within Warmup of Start it writes nothing.
func (w *BudgetStatusWriter) Pass(ctx context.Context) error {
	var list v1alpha1.EmbeddingBudgetList
	// Bounded, so that a cache that never syncs (the manager may not list the budgets) is
	// logged at every pass instead of blocking the writer silently.
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := w.Client.List(lctx, &list)
	timedOut := lctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil // the CRD is not installed: every budget is implicit
		}
		if timedOut {
			return fmt.Errorf("list EmbeddingBudgets: not synced within a minute: is the manager allowed to get, list and watch "+
				"embeddingbudgets.ingestion.vectordb.io cluster-wide? %w", err)
		}
		return fmt.Errorf("list EmbeddingBudgets: %w", err)
	}
	// Listed even while warming up: that starts the cache's informer, so the lease server's
	// first renewals find it synced.
	if !w.started.IsZero() && w.now().Sub(w.started) < w.Warmup {
		return nil
	}
	if len(list.Items) == 0 {
		return nil
	}
	snaps := w.Snapshot()
	if w.known == nil {
		w.known = map[string]bool{}
	}
	for _, sn := range snaps {
		w.known[sn.Key] = true
	}
	unlisted, err := w.unlisted(ctx, list.Items, snaps)
	if err != nil {
		return err
	}
	conflicts := embeddingbudget.Conflicts(list.Items)
	var errs []error
	for i := range list.Items {
		b := &list.Items[i]
		if b.DeletionTimestamp != nil {
			continue
		}
		st := embeddingbudget.Status(b, snaps, conflicts[b.Name], unlisted[b.Name])
		embeddingbudget.CarryBackoff(b, &st, func(model string) bool { return w.known[embeddingbudget.Key(b.Name, model)] })
		if equality.Semantic.DeepEqual(st, b.Status) {
			continue
		}
		old := b.Status
		upd := b.DeepCopy()
		upd.Status = st
		if err := w.Client.Status().Update(ctx, upd); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue
			}
			errs = append(errs, fmt.Errorf("EmbeddingBudget %s: %w", b.Name, err))
			continue
		}
		for _, e := range embeddingbudget.Events(b, old, st, unlisted[b.Name]) {
			w.Recorder.Eventf(upd, nil, e.Type, e.Reason, "Budget", "%s", e.Message)
		}
	}
	return errors.Join(errs...)
}

// unlisted finds the ingestions holding implicit budgets that a budget claims with a model it
// does not list (from the cache; an ingestion gone meanwhile is skipped).
func (w *BudgetStatusWriter) unlisted(ctx context.Context, budgets []v1alpha1.EmbeddingBudget, snaps []ratelease.Snapshot) (map[string][]embeddingbudget.Ingestion, error) {
	seen := map[client.ObjectKey]bool{}
	var ings []embeddingbudget.Ingestion
	for _, s := range snaps {
		if _, _, declared := embeddingbudget.ParseKey(s.Key); declared {
			continue
		}
		for id := range s.Holders {
			parts := strings.SplitN(id, "/", 3) // namespace/ingestion/job/pod
			if len(parts) < 3 {
				continue
			}
			k := client.ObjectKey{Namespace: parts[0], Name: parts[1]}
			if seen[k] {
				continue
			}
			seen[k] = true
			var obj v1alpha1.CsvIngestion
			if err := w.Client.Get(ctx, k, &obj); err != nil {
				if apierrors.IsNotFound(err) {
					continue
				}
				return nil, fmt.Errorf("get ingestion %s: %w", k, err)
			}
			ings = append(ings, embeddingbudget.Ingestion{Namespace: k.Namespace, Name: k.Name,
				Secret: obj.Spec.Embedding.APIKeySecretRef.Name, Model: obj.Spec.Embedding.Model})
		}
	}
	return embeddingbudget.Unlisted(budgets, ings), nil
}
