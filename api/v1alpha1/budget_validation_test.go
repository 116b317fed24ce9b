package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

const budgetSample = "ingestion_v1alpha1_embeddingbudget.yaml"

// TestEmbeddingBudgetRules: every rule of the EmbeddingBudget CRD rejects on the real API server
// with the message saying what to fix, and the sample (and its edge values) is accepted.
func TestEmbeddingBudgetRules(t *testing.T) {
	ctx := context.Background()
	model := func(name string, rpm, tpm int64) map[string]any {
		return map[string]any{"name": name, "requestsPerMinute": rpm, "tokensPerMinute": tpm}
	}
	cases := []struct {
		name   string
		mutate func(map[string]any)
		want   string // "" accepted
	}{
		{"sample", func(map[string]any) {}, ""},
		{"secrets only", func(s map[string]any) { set(s, "namespaces", nil) }, ""},
		{"namespaces only", func(s map[string]any) { set(s, "secrets", nil) }, ""},
		{"largest limits", func(s map[string]any) {
			set(s, "models", []any{model("m", 1000000, 1000000000)})
		}, ""},
		{"neither secrets nor namespaces", func(s map[string]any) {
			set(s, "secrets", nil)
			set(s, "namespaces", nil)
		}, "list at least one key Secret in spec.secrets or one namespace in spec.namespaces"},
		{"empty lists", func(s map[string]any) {
			set(s, "secrets", []any{})
			set(s, "namespaces", []any{})
		}, "list at least one key Secret in spec.secrets or one namespace in spec.namespaces"},
		{"no models", func(s map[string]any) { set(s, "models", []any{}) }, "spec.models: Invalid value"},
		{"duplicate model", func(s map[string]any) {
			set(s, "models", []any{model("m", 1, 1), model("m", 2, 2)})
		}, `spec.models[1]: Duplicate value: {"name":"m"}`},
		{"zero rpm", func(s map[string]any) { set(s, "models", []any{model("m", 0, 1)}) },
			"spec.models[].requestsPerMinute must be between 1 and 1000000"},
		{"rpm too large", func(s map[string]any) { set(s, "models", []any{model("m", 1000001, 1)}) },
			"spec.models[].requestsPerMinute must be between 1 and 1000000"},
		{"negative tpm", func(s map[string]any) { set(s, "models", []any{model("m", 1, -5)}) },
			"spec.models[].tokensPerMinute must be between 1 and 1000000000"},
		{"tpm too large", func(s map[string]any) { set(s, "models", []any{model("m", 1, 1000000001)}) },
			"spec.models[].tokensPerMinute must be between 1 and 1000000000"},
		{"empty model name", func(s map[string]any) { set(s, "models", []any{model("", 1, 1)}) },
			"spec.models[].name must be a model name of 1 to 253 characters"},
		{"duplicate secret", func(s map[string]any) {
			set(s, "secrets", []any{map[string]any{"namespace": "a", "name": "k"}, map[string]any{"namespace": "a", "name": "k"}})
		}, `spec.secrets[1]: Duplicate value: {"name":"k","namespace":"a"}`},
		{"same name, two namespaces", func(s map[string]any) {
			set(s, "secrets", []any{map[string]any{"namespace": "a", "name": "k"}, map[string]any{"namespace": "b", "name": "k"}})
		}, ""},
		{"bad secret namespace", func(s map[string]any) {
			set(s, "secrets", []any{map[string]any{"namespace": "Team_A", "name": "k"}})
		}, "spec.secrets[].namespace must be a namespace name"},
		{"bad secret name", func(s map[string]any) {
			set(s, "secrets", []any{map[string]any{"namespace": "a", "name": "k/../x"}})
		}, "spec.secrets[].name must be a Secret name"},
		{"duplicate namespace", func(s map[string]any) {
			set(s, "namespaces", []any{map[string]any{"name": "a"}, map[string]any{"name": "a", "weight": int64(2)}})
		}, `spec.namespaces[1]: Duplicate value: {"name":"a"}`},
		{"zero weight", func(s map[string]any) {
			set(s, "namespaces", []any{map[string]any{"name": "a", "weight": int64(0)}})
		}, "spec.namespaces[].weight must be between 1 and 1000"},
		{"weight too large", func(s map[string]any) {
			set(s, "namespaces", []any{map[string]any{"name": "a", "weight": int64(1001)}})
		}, "spec.namespaces[].weight must be between 1 and 1000"},
		{"bad namespace", func(s map[string]any) {
			set(s, "namespaces", []any{map[string]any{"name": "-a"}})
		}, "spec.namespaces[].name must be a namespace name"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, budgetSample)
			u.SetNamespace("")
			u.SetName(fmt.Sprintf("budget-rules-%d", i))
			tc.mutate(u.Object["spec"].(map[string]any))
			err := cluster.Client.Create(ctx, u)
			if err == nil {
				t.Cleanup(func() { _ = cluster.Client.Delete(ctx, u) })
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want Invalid containing %q", err, tc.want)
			}
		})
	}
}

// TestEmbeddingBudgetDefaultsAndScope: the budget is cluster-scoped, a namespace's weight
// defaults to 1, and an edit of the limits is accepted (budgets are edited in place and reach
// pods at their next renewal).
func TestEmbeddingBudgetDefaultsAndScope(t *testing.T) {
	ctx := context.Background()
	u := loadSample(t, budgetSample)
	u.SetNamespace("")
	u.SetName("budget-defaults")
	set(u.Object["spec"].(map[string]any), "namespaces", []any{map[string]any{"name": "reports"}})
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(ctx, u) })
	var got v1alpha1.EmbeddingBudget
	if err := cluster.Client.Get(ctx, client.ObjectKey{Name: "budget-defaults"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "" || got.Spec.Namespaces[0].Weight != 1 {
		t.Fatalf("namespace %q, weight %d; want cluster-scoped, weight 1", got.Namespace, got.Spec.Namespaces[0].Weight)
	}
	got.Spec.Models[0].TokensPerMinute = 500000
	if err := cluster.Client.Update(ctx, &got); err != nil {
		t.Fatalf("edit rejected: %v", err)
	}
}
