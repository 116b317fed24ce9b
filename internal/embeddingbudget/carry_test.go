package embeddingbudget

import (
	"reflect"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// TestCarryBackoff: a model the last leader's status showed backed off is kept, with no holders,
// while this leader has not known it; not once it has (its own state is the status then, and a
// budget it forgot had recovered), nor when it was not backed off, nor when the spec no longer
// lists it; a model this leader reports is its own.
func TestCarryBackoff(t *testing.T) {
	rates := func(r, t int64) v1alpha1.BudgetRates {
		return v1alpha1.BudgetRates{RequestsPerMinute: r, TokensPerMinute: t}
	}
	old := func(name string, eff v1alpha1.BudgetRates) v1alpha1.BudgetModelStatus {
		return v1alpha1.BudgetModelStatus{Name: name, Declared: rates(300, 1000), Effective: eff, Granted: rates(100, 400),
			Used: rates(90, 300), Holders: 3, RateLimited: 7}
	}
	carried := func(name string, eff v1alpha1.BudgetRates) v1alpha1.BudgetModelStatus {
		return v1alpha1.BudgetModelStatus{Name: name, Declared: rates(300, 1000), Effective: eff}
	}
	mine := v1alpha1.BudgetModelStatus{Name: "a", Declared: rates(300, 1000), Effective: rates(300, 1000), Holders: 1}
	for _, c := range []struct {
		name  string
		spec  []string
		old   []v1alpha1.BudgetModelStatus
		cur   []v1alpha1.BudgetModelStatus
		known map[string]bool
		want  []v1alpha1.BudgetModelStatus
	}{
		{"backed off, not known: carried without holders", []string{"b"}, []v1alpha1.BudgetModelStatus{old("b", rates(150, 500))}, nil, nil,
			[]v1alpha1.BudgetModelStatus{carried("b", rates(150, 500))}},
		{"backed off, known (forgotten): dropped", []string{"b"}, []v1alpha1.BudgetModelStatus{old("b", rates(150, 500))}, nil, map[string]bool{"b": true}, nil},
		{"not backed off: dropped", []string{"b"}, []v1alpha1.BudgetModelStatus{old("b", rates(300, 1000))}, nil, nil, nil},
		{"no longer in the spec: dropped", []string{"a"}, []v1alpha1.BudgetModelStatus{old("b", rates(150, 500))}, nil, nil, nil},
		{"reported by this leader: its own", []string{"a"}, []v1alpha1.BudgetModelStatus{old("a", rates(150, 500))},
			[]v1alpha1.BudgetModelStatus{mine}, nil, []v1alpha1.BudgetModelStatus{mine}},
		{"sorted among this leader's", []string{"c", "a"}, []v1alpha1.BudgetModelStatus{old("c", rates(30, 100))},
			[]v1alpha1.BudgetModelStatus{mine}, nil, []v1alpha1.BudgetModelStatus{mine, carried("c", rates(30, 100))}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &v1alpha1.EmbeddingBudget{Status: v1alpha1.EmbeddingBudgetStatus{Models: c.old}}
			for _, m := range c.spec {
				b.Spec.Models = append(b.Spec.Models, v1alpha1.BudgetModel{Name: m})
			}
			st := v1alpha1.EmbeddingBudgetStatus{Models: c.cur}
			CarryBackoff(b, &st, func(model string) bool { return c.known[model] })
			if !reflect.DeepEqual(st.Models, c.want) {
				t.Fatalf("models %+v, want %+v", st.Models, c.want)
			}
		})
	}
}
