package embeddingbudget

import (
	"math"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)

// budget makes a budget created age minutes after t0, listing secrets ("ns/name") and
// namespaces ("ns" or "ns=weight" as a second list).
func budget(name string, age int, secrets []string, namespaces map[string]int32, models ...string) v1alpha1.EmbeddingBudget {
	b := v1alpha1.EmbeddingBudget{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))}}
	for _, s := range secrets {
		ns, n, _ := cut(s)
		b.Spec.Secrets = append(b.Spec.Secrets, v1alpha1.BudgetSecret{Namespace: ns, Name: n})
	}
	for ns, w := range namespaces {
		b.Spec.Namespaces = append(b.Spec.Namespaces, v1alpha1.BudgetNamespace{Name: ns, Weight: w})
	}
	if len(models) == 0 {
		models = []string{"m"}
	}
	for _, m := range models {
		b.Spec.Models = append(b.Spec.Models, v1alpha1.BudgetModel{Name: m, RequestsPerMinute: 100, TokensPerMinute: 1000})
	}
	return b
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestFind(t *testing.T) {
	deleted := budget("deleted", -10, []string{"a/key"}, nil)
	deleted.DeletionTimestamp = &metav1.Time{Time: t0}
	cases := []struct {
		name            string
		budgets         []v1alpha1.EmbeddingBudget
		ns, secret, mdl string
		want            string // winning budget, "" none
		via             Via
		weight          float64
		listed          bool
	}{
		{"none", nil, "a", "key", "m", "", ViaNone, 0, false},
		{"other namespace, other secret", []v1alpha1.EmbeddingBudget{budget("b", 0, []string{"a/other", "x/key"}, map[string]int32{"x": 1})},
			"a", "key", "m", "", ViaNone, 0, false},
		{"by secret", []v1alpha1.EmbeddingBudget{budget("b", 0, []string{"a/key"}, nil)}, "a", "key", "m", "b", ViaSecret, 1, true},
		{"by namespace, weighted", []v1alpha1.EmbeddingBudget{budget("b", 0, nil, map[string]int32{"a": 3})}, "a", "any", "m", "b", ViaNamespace, 3, true},
		{"by secret, namespace's weight in the same budget", []v1alpha1.EmbeddingBudget{budget("b", 0, []string{"a/key"}, map[string]int32{"a": 2})},
			"a", "key", "m", "b", ViaSecret, 2, true},
		{"secret beats namespace even when newer", []v1alpha1.EmbeddingBudget{
			budget("ns-old", 0, nil, map[string]int32{"a": 5}), budget("sec-new", 10, []string{"a/key"}, nil)},
			"a", "key", "m", "sec-new", ViaSecret, 1, true},
		{"namespace claim covers the namespace's other secrets", []v1alpha1.EmbeddingBudget{
			budget("ns-old", 0, nil, map[string]int32{"a": 5}), budget("sec-new", 10, []string{"a/key"}, nil)},
			"a", "other", "m", "ns-old", ViaNamespace, 5, true},
		{"two on the secret: oldest wins", []v1alpha1.EmbeddingBudget{
			budget("young", 5, []string{"a/key"}, nil), budget("old", 1, []string{"a/key"}, nil)},
			"a", "key", "m", "old", ViaSecret, 1, true},
		{"same age: smallest name wins", []v1alpha1.EmbeddingBudget{
			budget("zeta", 1, []string{"a/key"}, nil), budget("alpha", 1, []string{"a/key"}, nil)},
			"a", "key", "m", "alpha", ViaSecret, 1, true},
		{"two on the namespace: oldest wins", []v1alpha1.EmbeddingBudget{
			budget("young", 5, nil, map[string]int32{"a": 1}), budget("old", 1, nil, map[string]int32{"a": 4})},
			"a", "key", "m", "old", ViaNamespace, 4, true},
		{"a budget being deleted is ignored", []v1alpha1.EmbeddingBudget{deleted, budget("live", 0, []string{"a/key"}, nil)},
			"a", "key", "m", "live", ViaSecret, 1, true},
		{"model not listed: claimed, no model", []v1alpha1.EmbeddingBudget{budget("b", 0, []string{"a/key"}, nil, "other-model")},
			"a", "key", "m", "b", ViaSecret, 1, false},
		{"the secret of the same name in another namespace", []v1alpha1.EmbeddingBudget{budget("b", 0, []string{"x/key"}, nil)},
			"a", "key", "m", "", ViaNone, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := Find(c.budgets, c.ns, c.secret, c.mdl)
			got := ""
			if m.Budget != nil {
				got = m.Budget.Name
			}
			if got != c.want || m.Via != c.via || m.Weight != c.weight || (m.Model != nil) != c.listed {
				t.Fatalf("got %q via %v weight %g listed %v; want %q via %v weight %g listed %v",
					got, m.Via, m.Weight, m.Model != nil, c.want, c.via, c.weight, c.listed)
			}
			if c.listed && m.Model.Name != c.mdl {
				t.Fatalf("model entry %q", m.Model.Name)
			}
		})
	}
}

// The order of the list (the cache's) never changes the winner.
func TestFindIgnoresListOrder(t *testing.T) {
	bs := []v1alpha1.EmbeddingBudget{budget("c", 2, []string{"a/key"}, nil), budget("a", 3, []string{"a/key"}, nil), budget("b", 2, []string{"a/key"}, nil)}
	for _, perm := range [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {1, 2, 0}} {
		l := []v1alpha1.EmbeddingBudget{bs[perm[0]], bs[perm[1]], bs[perm[2]]}
		if m := Find(l, "a", "key", "m"); m.Budget == nil || m.Budget.Name != "b" {
			t.Fatalf("order %v: winner %v, want b (oldest, then name)", perm, m.Budget)
		}
	}
}

func TestConflicts(t *testing.T) {
	bs := []v1alpha1.EmbeddingBudget{
		budget("old", 0, []string{"a/key"}, map[string]int32{"r": 1}),
		budget("young", 5, []string{"a/key", "b/key"}, nil),
		budget("ns", 1, nil, map[string]int32{"a": 1, "r": 2}), // namespace a vs secret a/key: no conflict
		budget("alone", 2, []string{"c/key"}, nil),
	}
	got := Conflicts(bs)
	want := map[string][]Conflict{
		"old":   {{Claim: "key Secret a/key", Winner: "old", Others: []string{"young"}}, {Claim: "namespace r", Winner: "old", Others: []string{"ns"}}},
		"young": {{Claim: "key Secret a/key", Winner: "old", Others: []string{"old"}}},
		"ns":    {{Claim: "namespace r", Winner: "old", Others: []string{"old"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("conflicts\n got %+v\nwant %+v", got, want)
	}
	// Three on one claim: each names the other two, by precedence.
	three := Conflicts([]v1alpha1.EmbeddingBudget{budget("c", 3, []string{"a/k"}, nil), budget("a", 1, []string{"a/k"}, nil), budget("b", 2, []string{"a/k"}, nil)})
	if w := three["c"]; len(w) != 1 || w[0].Winner != "a" || !reflect.DeepEqual(w[0].Others, []string{"a", "b"}) {
		t.Fatalf("three: %+v", three)
	}
}

func TestKeys(t *testing.T) {
	for _, c := range []struct {
		key, budget, model string
		ok                 bool
	}{
		{Key("openai-prod", "text-embedding-3-small"), "openai-prod", "text-embedding-3-small", true},
		{Key("b", "org/model"), "b", "org/model", true},
		{"ns/openai:api-key//text-embedding-3-small", "", "", false}, // an implicit key
		{"embeddingbudget:b", "", "", false},
		{"embeddingbudget:/m", "", "", false},
	} {
		b, m, ok := ParseKey(c.key)
		if b != c.budget || m != c.model || ok != c.ok {
			t.Errorf("ParseKey(%q) = %q %q %v, want %q %q %v", c.key, b, m, ok, c.budget, c.model, c.ok)
		}
	}
}

// TestLastFactor: the backoff a leader left in a budget's status is effective ÷ declared for the
// model, the smaller of requests and tokens; a model not backed off, not in the status, or with
// nothing declared has none (0).
func TestLastFactor(t *testing.T) {
	const model = "text-embedding-3-small"
	st := func(dr, dt, er, et int64) v1alpha1.BudgetModelStatus {
		return v1alpha1.BudgetModelStatus{Name: model, Declared: v1alpha1.BudgetRates{RequestsPerMinute: dr, TokensPerMinute: dt},
			Effective: v1alpha1.BudgetRates{RequestsPerMinute: er, TokensPerMinute: et}}
	}
	for _, c := range []struct {
		name   string
		models []v1alpha1.BudgetModelStatus
		model  string
		want   float64
	}{
		{"halved", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, 150, 500_000)}, model, 0.5},
		{"the smaller of the two", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, 150, 250_000)}, model, 0.25},
		{"requests unlimited", []v1alpha1.BudgetModelStatus{st(0, 1_000_000, 0, 400_000)}, model, 0.4},
		{"not backed off", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, 300, 1_000_000)}, model, 0},
		{"another model's backoff", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, 150, 500_000)}, "text-embedding-3-large", 0},
		{"no status", nil, model, 0},
		{"nothing declared", []v1alpha1.BudgetModelStatus{st(0, 0, 0, 0)}, model, 0},
		// The status holds whole numbers (rounded): a small declaration backed off far rounds its
		// effective to zero, which says "below half of one", not "not backed off".
		{"requests rounded to zero, tokens backed off", []v1alpha1.BudgetModelStatus{st(4, 1_000_000, 0, 100_000)}, model, 0.1},
		{"requests only, rounded to zero", []v1alpha1.BudgetModelStatus{st(3, 0, 0, 0)}, model, 0.5 / 3},
		{"a negative effective says nothing", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, -5, 500_000)}, model, 0.5},
		{"effective zero: at most half a unit", []v1alpha1.BudgetModelStatus{st(300, 1_000_000, 0, 0)}, model, 0.5 / 1_000_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &v1alpha1.EmbeddingBudget{Status: v1alpha1.EmbeddingBudgetStatus{Models: c.models}}
			if got := LastFactor(b, c.model); math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("LastFactor %g, want %g", got, c.want)
			}
		})
	}
}
