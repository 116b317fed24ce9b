package controllers_test

import (
	"context"
	"math"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/tools/events"

	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/embeddingbudget"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// TestEmbeddingBudgetIdleBackoffSurvivesALeaderChange: the old leader kept a backed-off budget
// while no pod held a lease of it (the next pod must not storm the key), and its status showed
// that. A new leader that no pod has renewed with yet must not write that backoff away after its
// warmup: the next pod, whenever it comes, resumes from it. Once this leader has known the budget
// and forgotten it (recovered, no holders), the status drops it as before.
func TestEmbeddingBudgetIdleBackoffSurvivesALeaderChange(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const model = "text-embedding-3-small"
	ing := create(t, newIngestion(ns, "eb-idle", nil))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), ing) })
	name := "eb-idle-" + ns
	halvedBudget(t, name, ns, model)

	res := manager.DeclaredBudgets(cluster.Client, logr.Discard())
	srv, err := ratelease.NewServer(ratelease.ServerOptions{Key: []byte("idle-resume-test-key-0123456789"), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	w := &controllers.BudgetStatusWriter{Client: cluster.Client, Recorder: events.NewFakeRecorder(100), Snapshot: srv.Snapshot}
	// The new leader's warmup is over and no pod of the budget has renewed with it.
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if f := embeddingbudget.LastFactor(getBudget(t, name), model); math.Abs(f-0.5) > 1e-9 {
		t.Fatalf("after the new leader's first pass the status shows factor %g (models %+v), want the last leader's 0.5",
			f, getBudget(t, name).Status.Models)
	}
	// The next pod resumes from it.
	got, err := res.Resolve(ctx, ns, ing.Name, model)
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Renew(ratelease.RenewRequest{Namespace: ns, Ingestion: ing.Name, Job: "j", Holder: "p", Model: model}, got)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(l.TPM-450_000) > 1 {
		t.Fatalf("the next pod's first lease: %g TPM, want 450000 (half, as the last leader left it)", l.TPM)
	}
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	// Known to this leader now: what it writes is its own state.
	if m := getBudget(t, name).Status.Models; len(m) != 1 || m[0].Holders != 1 {
		t.Fatalf("status models %+v, want this leader's one holder", m)
	}
}
