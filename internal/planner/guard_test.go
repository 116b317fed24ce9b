package planner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// The planner hands the guard the file's first rows as the chunks will write them (vector id with
// the prefix, the row's namespace, the sanitized text), fails permanently on a mismatch before
// any plan exists, adds the guard's tokens to the estimate, and does not call the guard at all
// when allowMixedVectorSpaces is set.
func TestPlanRunsTheVectorSpaceGuard(t *testing.T) {
	m := sharedMinIO(t)
	rows := [][]string{{"id", "body", "ns"}}
	var rowTokens int64
	for i := range 150 {
		ns := ""
		if i%2 == 1 {
			ns = "odd"
		}
		rows = append(rows, []string{fmt.Sprintf(" %d ", i), fmt.Sprintf("<b>Item</b> %d", i), ns})
		rowTokens += int64(tokens.Count(fmt.Sprintf("Item %d", i)))
	}
	put(t, m, "guard/items.csv", csvBytes(t, rows))
	ing := ingestion(m, "guard/items.csv")
	ing.Spec.Mapping.IDPrefix = "239."
	ing.Spec.Mapping.NamespaceColumn = "ns"
	ing.Spec.Target.Pinecone.Namespace = "v2"

	var got []vectorspace.Candidate
	verdict := &v1alpha1.VectorSpaceStatus{Result: v1alpha1.VectorSpaceMatched, Compared: 3, MinCosine: "1.0000", Tokens: 321}
	guard := func(_ context.Context, c []vectorspace.Candidate) (*v1alpha1.VectorSpaceStatus, error) {
		got = c
		return verdict, nil
	}
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != vectorspace.MaxCandidates {
		t.Fatalf("guard got %d candidates, want the first %d rows", len(got), vectorspace.MaxCandidates)
	}
	if want := (vectorspace.Candidate{ID: "239.0", Namespace: "v2", Text: "Item 0"}); got[0] != want {
		t.Errorf("candidate 0 = %+v, want %+v", got[0], want)
	}
	if want := (vectorspace.Candidate{ID: "239.1", Namespace: "odd", Text: "Item 1"}); got[1] != want {
		t.Errorf("candidate 1 = %+v, want %+v", got[1], want)
	}
	if plan.VectorSpace != verdict || plan.EstimatedTokens != rowTokens+321 ||
		plan.EstimatedCostUSD != tokens.CostUSD(ing.Spec.Embedding.Model, rowTokens+321) {
		t.Errorf("plan: vectorSpace %+v, tokens %d (rows %d + guard 321), cost %s", plan.VectorSpace, plan.EstimatedTokens, rowTokens, plan.EstimatedCostUSD)
	}

	// A mismatch fails the plan permanently with the guard's message.
	verdict = &v1alpha1.VectorSpaceStatus{Result: v1alpha1.VectorSpaceMismatch, Message: "re-embedding with text-embedding-3-small gives cosine 0.0123"}
	plan, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), Guard: guard})
	p := permanent(t, err, worker.ReasonVectorSpaceMismatch)
	if plan != nil || !strings.Contains(p.Error(), "cosine 0.0123") {
		t.Errorf("mismatch: plan %v, error %v", plan, err)
	}

	// A namespace with vectors the guard could not compare fails the plan too: the model is unknown.
	verdict = &v1alpha1.VectorSpaceStatus{Result: v1alpha1.VectorSpaceUnverified, Message: "namespace \"v2\" holds vectors, but none has its text"}
	plan, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), Guard: guard})
	p = permanent(t, err, worker.ReasonVectorSpaceUnverified)
	if plan != nil || !strings.Contains(p.Error(), "holds vectors") {
		t.Errorf("unverified: plan %v, error %v", plan, err)
	}

	// A guard error (say, Pinecone unreachable) is the plan's error.
	boom := errors.New("pinecone unreachable")
	_, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), Guard: func(context.Context, []vectorspace.Candidate) (*v1alpha1.VectorSpaceStatus, error) {
		return nil, boom
	}})
	if !errors.Is(err, boom) {
		t.Errorf("guard error: %v", err)
	}

	// The override: the guard is not called and the plan says it was skipped.
	ing.Spec.Target.Pinecone.AllowMixedVectorSpaces = true
	got = nil
	plan, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	if got != nil || plan.VectorSpace == nil || plan.VectorSpace.Result != v1alpha1.VectorSpaceSkipped ||
		!strings.Contains(plan.VectorSpace.Message, "allowMixedVectorSpaces") || plan.EstimatedTokens != rowTokens {
		t.Errorf("override: guard called with %d candidates, plan.vectorSpace %+v, tokens %d", len(got), plan.VectorSpace, plan.EstimatedTokens)
	}
}
