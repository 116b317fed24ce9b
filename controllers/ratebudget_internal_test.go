package controllers

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ranges"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// status.rateBudget: a resolved budget is shown; an error keeps the last one; a resolve that
// runs out of time (the cache waiting for an informer the manager may not list) is not tried
// again by any pass for rateBudgetPause, so missing RBAC does not cost every chunk start of every
// ingestion rateBudgetTimeout; a quick error (ingestion gone) is tried again at once.
func TestStatusRateBudgetResolve(t *testing.T) {
	clk := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	calls := 0
	var answer func(ctx context.Context) (ratelease.Budget, error)
	r := &Reconciler{Now: func() time.Time { return clk }}
	r.Config.RateBudgets = ratelease.ResolverFunc(func(ctx context.Context, ns, name, model string) (ratelease.Budget, error) {
		calls++
		return answer(ctx)
	})
	obj := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", UID: "u1"}}
	obj.Spec.Embedding.Model = "m"
	obj.Status.RateBudget = "old"
	hang := func(ctx context.Context) (ratelease.Budget, error) {
		<-ctx.Done()
		return ratelease.Budget{}, ctx.Err()
	}
	gone := func(context.Context) (ratelease.Budget, error) { return ratelease.Budget{}, ratelease.ErrNotFound }
	found := func(context.Context) (ratelease.Budget, error) {
		return ratelease.Budget{Key: "embeddingbudget:b/m"}, nil
	}

	for _, step := range []struct {
		name      string
		advance   time.Duration
		answer    func(context.Context) (ratelease.Budget, error)
		wantCalls int
		want      string
	}{
		{name: "quick error keeps the last budget", answer: gone, wantCalls: 1, want: "old"},
		{name: "and is tried again at once", answer: found, wantCalls: 2, want: "embeddingbudget:b/m"},
		{name: "timed out keeps the last budget", answer: hang, wantCalls: 3, want: "old"},
		{name: "paused: not tried", advance: rateBudgetPause - time.Second, answer: found, wantCalls: 3, want: "old"},
		{name: "after the pause tried again", advance: time.Second, answer: found, wantCalls: 4, want: "embeddingbudget:b/m"},
	} {
		clk = clk.Add(step.advance)
		answer = step.answer
		p := r.newPass(obj, nil, ranges.Set{}, ranges.Set{})
		p.noteRateBudget(context.Background())
		if calls != step.wantCalls || p.status.RateBudget != step.want {
			t.Fatalf("%s: %d resolves, status.rateBudget %q; want %d, %q", step.name, calls, p.status.RateBudget, step.wantCalls, step.want)
		}
	}

	// Batch mode leases nothing for embedding: never resolved.
	obj.Spec.Embedding.Mode = v1alpha1.EmbeddingBatch
	p := r.newPass(obj, nil, ranges.Set{}, ranges.Set{})
	p.noteRateBudget(context.Background())
	if calls != 4 || p.status.RateBudget != "old" {
		t.Fatalf("batch mode: %d resolves, status.rateBudget %q", calls, p.status.RateBudget)
	}
}
