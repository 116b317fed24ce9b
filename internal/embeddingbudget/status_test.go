package embeddingbudget

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

func snap(key string, eff ratebudget.Rates, rateLimited int64, holders map[string][3]float64) ratelease.Snapshot {
	s := ratelease.Snapshot{Key: key, Declared: eff, Effective: eff, Holders: map[string]ratebudget.Rates{}, Use: map[string]ratelease.HolderUse{}, RateLimited: rateLimited}
	for id, h := range holders { // grant TPM, used TPM, 429s
		s.Holders[id] = ratebudget.Rates{RPM: h[0] / 1000, TPM: h[0]}
		s.Use[id] = ratelease.HolderUse{Used: ratebudget.Rates{RPM: h[1] / 1000, TPM: h[1]}, RateLimited: int64(h[2])}
		s.Granted.RPM += h[0] / 1000
		s.Granted.TPM += h[0]
	}
	return s
}

// snapDeclared is a snapshot without holders of a budget declared decl, applied at eff.
func snapDeclared(key string, decl, eff ratebudget.Rates) ratelease.Snapshot {
	s := snap(key, eff, 0, nil)
	s.Declared = decl
	return s
}

func TestStatus(t *testing.T) {
	b := budget("prod", 0, []string{"a/key"}, map[string]int32{"r": 2}, "m", "n")
	b.Generation = 3
	snaps := []ratelease.Snapshot{
		snap(Key("prod", "m"), ratebudget.Rates{RPM: 100, TPM: 1000}, 7, map[string][3]float64{
			"a/ing1/job-0/pod-0": {300, 250.4, 1},
			"a/ing1/job-1/pod-1": {300, 100, 2},
			"r/ing2/job-0/pod-0": {400, 399.6, 0},
		}),
		snap(Key("other", "m"), ratebudget.Rates{RPM: 1, TPM: 1}, 0, map[string][3]float64{"x/y/j/p": {1, 1, 0}}),
		snap("a/key:api-key//m", ratebudget.Rates{RPM: 1, TPM: 1}, 0, map[string][3]float64{"a/z/j/p": {1, 1, 0}}),
	}
	// ing1's pods alone saw 429s: its own factor is cut (a factor of 1 is never listed).
	snaps[0].GroupFactors = map[string]float64{"a/ing1": 0.254, "x/y": 0.5}
	st := Status(&b, snaps, nil, nil)
	wantModels := []v1alpha1.BudgetModelStatus{{Name: "m", Declared: v1alpha1.BudgetRates{RequestsPerMinute: 100, TokensPerMinute: 1000}, Effective: v1alpha1.BudgetRates{RequestsPerMinute: 100, TokensPerMinute: 1000},
		Granted: v1alpha1.BudgetRates{RequestsPerMinute: 1, TokensPerMinute: 1000}, Used: v1alpha1.BudgetRates{RequestsPerMinute: 1, TokensPerMinute: 750},
		Holders: 3, RateLimited: 7}}
	if !reflect.DeepEqual(st.Models, wantModels) {
		t.Errorf("models\n got %+v\nwant %+v", st.Models, wantModels)
	}
	wantHolders := []v1alpha1.BudgetHolder{
		{Namespace: "a", Ingestion: "ing1", Model: "m", Pods: 2, Granted: v1alpha1.BudgetRates{RequestsPerMinute: 1, TokensPerMinute: 600},
			Used: v1alpha1.BudgetRates{RequestsPerMinute: 0, TokensPerMinute: 350}, RateLimited: 3, BackoffPercent: 25},
		{Namespace: "r", Ingestion: "ing2", Model: "m", Pods: 1, Granted: v1alpha1.BudgetRates{RequestsPerMinute: 0, TokensPerMinute: 400},
			Used: v1alpha1.BudgetRates{RequestsPerMinute: 0, TokensPerMinute: 400}},
	}
	if !reflect.DeepEqual(st.Holders, wantHolders) {
		t.Errorf("holders\n got %+v\nwant %+v", st.Holders, wantHolders)
	}
	if st.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d", st.ObservedGeneration)
	}
	for typ, want := range map[string]metav1.ConditionStatus{ConditionReady: metav1.ConditionTrue, ConditionConflicting: metav1.ConditionFalse,
		ConditionUnlistedModels: metav1.ConditionFalse} {
		if c := meta.FindStatusCondition(st.Conditions, typ); c == nil || c.Status != want || c.ObservedGeneration != 3 {
			t.Errorf("%s: %+v, want %s", typ, c, want)
		}
	}

	// The same input again gives an equal status (conditions keep their transition time): no write.
	b.Status = st
	if again := Status(&b, snaps, nil, nil); !equality.Semantic.DeepEqual(again, st) {
		t.Errorf("recomputed status differs:\n%+v\n%+v", again, st)
	}
}

func TestStatusHoldersCapped(t *testing.T) {
	b := budget("big", 0, []string{"a/key"}, nil)
	holders := map[string][3]float64{}
	for i := range MaxHolders + 5 {
		holders[fmt.Sprintf("a/ing%03d/j/p", i)] = [3]float64{float64(1000 + i), 0, 0}
	}
	st := Status(&b, []ratelease.Snapshot{snap(Key("big", "m"), ratebudget.Rates{RPM: 1, TPM: 1}, 0, holders)}, nil, nil)
	if len(st.Holders) != MaxHolders || st.HoldersOmitted != 5 || st.Holders[0].Ingestion != fmt.Sprintf("ing%03d", MaxHolders+4) {
		t.Fatalf("%d holders listed, %d omitted, first %+v: want the %d largest grants and 5 omitted", len(st.Holders), st.HoldersOmitted, st.Holders[0], MaxHolders)
	}
}

func TestStatusConditions(t *testing.T) {
	cases := []struct {
		name                     string
		b                        v1alpha1.EmbeddingBudget
		conflicts                []Conflict
		unlisted                 []Ingestion
		ready, conflict, unlistd metav1.ConditionStatus
		msg                      []string
	}{
		{"alone", budget("x", 0, []string{"a/k"}, nil), nil, nil, "True", "False", "False", nil},
		{"wins a conflict", budget("x", 0, []string{"a/k"}, nil),
			[]Conflict{{Claim: "key Secret a/k", Winner: "x", Others: []string{"y"}}}, nil,
			"True", "True", "False", []string{"key Secret a/k is also listed by y: this budget wins (the oldest)", "list each key Secret and namespace in one budget only"}},
		{"loses one of two claims", budget("y", 1, []string{"a/k", "b/k"}, nil),
			[]Conflict{{Claim: "key Secret a/k", Winner: "x", Others: []string{"x"}}}, nil,
			"True", "True", "False", []string{"budget x wins (older)"}},
		{"loses every claim", budget("y", 1, []string{"a/k"}, map[string]int32{"r": 1}),
			[]Conflict{{Claim: "key Secret a/k", Winner: "x", Others: []string{"x"}}, {Claim: "namespace r", Winner: "z", Others: []string{"z"}}}, nil,
			"False", "True", "False", []string{"budget z wins"}},
		{"unlisted model", budget("x", 0, []string{"a/k"}, nil), nil,
			[]Ingestion{{Namespace: "a", Name: "big", Secret: "k", Model: "text-embedding-3-large"}},
			"True", "False", "True", []string{"a/big (text-embedding-3-large)", "add the model to spec.models"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := Status(&c.b, nil, c.conflicts, c.unlisted)
			var msgs []string
			for typ, want := range map[string]metav1.ConditionStatus{ConditionReady: c.ready, ConditionConflicting: c.conflict, ConditionUnlistedModels: c.unlistd} {
				cond := meta.FindStatusCondition(st.Conditions, typ)
				if cond == nil || cond.Status != want {
					t.Errorf("%s: %+v, want %s", typ, cond, want)
					continue
				}
				msgs = append(msgs, cond.Message)
			}
			all := strings.Join(msgs, "\n")
			for _, m := range c.msg {
				if !strings.Contains(all, m) {
					t.Errorf("no condition message contains %q:\n%s", m, all)
				}
			}
		})
	}
}

func TestEvents(t *testing.T) {
	b := budget("x", 0, []string{"a/k"}, nil)
	b.Spec.Models[0] = v1alpha1.BudgetModel{Name: "m", RequestsPerMinute: 100, TokensPerMinute: 1000}
	plain := Status(&b, []ratelease.Snapshot{snap(Key("x", "m"), ratebudget.Rates{RPM: 100, TPM: 1000}, 0, nil)}, nil, nil)
	conflict := []Conflict{{Claim: "key Secret a/k", Winner: "y", Others: []string{"y"}}}
	withConflict := Status(&b, nil, conflict, nil)
	backedOffSnap := snapDeclared(Key("x", "m"), ratebudget.Rates{RPM: 100, TPM: 1000}, ratebudget.Rates{RPM: 50, TPM: 500})
	backedOffSnap.RateLimited = 9
	backedOff := Status(&b, []ratelease.Snapshot{backedOffSnap}, nil, nil)
	unl := []Ingestion{{Namespace: "tenant-a", Name: "quarterly-report", Secret: "k", Model: "other"},
		{Namespace: "tenant-b", Name: "payroll", Secret: "k", Model: "big"}, {Namespace: "tenant-b", Name: "hr", Secret: "k", Model: "big"}}
	unlisted := Status(&b, nil, nil, unl)
	empty := v1alpha1.EmbeddingBudgetStatus{}
	cases := []struct {
		name     string
		old, cur v1alpha1.EmbeddingBudgetStatus
		want     []string // reasons
	}{
		{"first status, nothing to say", empty, plain, nil},
		{"unchanged", plain, plain, nil},
		{"conflict appears", plain, withConflict, []string{ReasonSharedClaim}},
		{"conflict stays", withConflict, withConflict, nil},
		{"conflict resolved", withConflict, plain, []string{ReasonConflictResolved}},
		{"backed off", plain, backedOff, []string{ReasonBackedOff}},
		{"still backed off", backedOff, backedOff, nil},
		{"recovered", backedOff, plain, []string{ReasonRecovered}},
		{"budget forgotten (no holders): no recovery claimed", backedOff, empty, nil},
		{"unlisted model appears", plain, unlisted, []string{ReasonModelNotListed}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, e := range Events(&b, c.old, c.cur, unl) {
				got = append(got, e.Reason)
				if e.Message == "" {
					t.Errorf("%s: empty message", e.Reason)
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("events %v, want %v", got, c.want)
			}
		})
	}
	if e := Events(&b, plain, backedOff, nil); len(e) != 1 || !strings.Contains(e[0].Message, "backed off to 50 requests and 500 tokens per minute (declared 100 and 1000)") {
		t.Fatalf("backoff event %+v", e)
	}
	// The limit raised: the lease server applies the smaller declaration until every pod has
	// renewed. Nothing backed off, so neither BackedOff meanwhile nor Recovered after.
	raised := b.DeepCopy()
	raised.Spec.Models[0] = v1alpha1.BudgetModel{Name: "m", RequestsPerMinute: 200, TokensPerMinute: 2000}
	pending := Status(raised, []ratelease.Snapshot{snap(Key("x", "m"), ratebudget.Rates{RPM: 100, TPM: 1000}, 0, nil)}, nil, nil)
	applied := Status(raised, []ratelease.Snapshot{snap(Key("x", "m"), ratebudget.Rates{RPM: 200, TPM: 2000}, 0, nil)}, nil, nil)
	if e := Events(raised, plain, pending, nil); len(e) != 0 {
		t.Errorf("limit raised, pods not all renewed: events %+v, want none", e)
	}
	if e := Events(raised, pending, applied, nil); len(e) != 0 {
		t.Errorf("limit raised and applied: events %+v, want none (nothing had backed off)", e)
	}
	// Lowered, and backed off below the new limit: BackedOff names the limit applied.
	lowered := b.DeepCopy()
	lowered.Spec.Models[0] = v1alpha1.BudgetModel{Name: "m", RequestsPerMinute: 80, TokensPerMinute: 800}
	loweredBackedOff := Status(lowered, []ratelease.Snapshot{snapDeclared(Key("x", "m"), ratebudget.Rates{RPM: 80, TPM: 800}, ratebudget.Rates{RPM: 40, TPM: 400})}, nil, nil)
	if e := Events(lowered, plain, loweredBackedOff, nil); len(e) != 1 || e[0].Reason != ReasonBackedOff ||
		!strings.Contains(e[0].Message, "backed off to 40 requests and 400 tokens per minute (declared 80 and 800)") {
		t.Errorf("lowered and backed off: events %+v", e)
	}

	// Events about a cluster-scoped budget land in the namespace default, readable by far more
	// people than the budget: they name no tenant's namespace or ingestion (the condition does).
	e := Events(&b, plain, unlisted, unl)
	if len(e) != 1 || !strings.Contains(e[0].Message, "3 ingestion(s)") || !strings.Contains(e[0].Message, "(big, other)") {
		t.Fatalf("unlisted model event %+v: want the count and the models", e)
	}
	for _, leak := range []string{"tenant-a", "tenant-b", "quarterly-report", "payroll", "hr"} {
		if strings.Contains(e[0].Message, leak) {
			t.Errorf("unlisted model event %q names %q", e[0].Message, leak)
		}
	}
	if c := meta.FindStatusCondition(unlisted.Conditions, ConditionUnlistedModels); c == nil || !strings.Contains(c.Message, "tenant-a/quarterly-report (other)") {
		t.Errorf("UnlistedModels condition %+v: want the ingestions named", c)
	}
}

func TestUnlisted(t *testing.T) {
	bs := []v1alpha1.EmbeddingBudget{budget("x", 0, []string{"a/k"}, map[string]int32{"r": 1}, "m")}
	got := Unlisted(bs, []Ingestion{
		{Namespace: "r", Name: "z", Secret: "any", Model: "big"},
		{Namespace: "a", Name: "listed", Secret: "k", Model: "m"},
		{Namespace: "a", Name: "b", Secret: "k", Model: "big"},
		{Namespace: "q", Name: "unclaimed", Secret: "k", Model: "big"},
	})
	want := map[string][]Ingestion{"x": {{Namespace: "a", Name: "b", Secret: "k", Model: "big"}, {Namespace: "r", Name: "z", Secret: "any", Model: "big"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("unlisted %+v, want %+v", got, want)
	}
}

// An ingestion's own factor shows in whole percent, and a cut one never reads as uncut: rounded
// to 100 it would claim no cut (omitempty keeps 100), rounded to 0 omitempty would drop it.
func TestStatusHolderBackoffPercent(t *testing.T) {
	for _, c := range []struct {
		factor float64
		set    bool // the snapshot lists the ingestion's factor
		want   int32
	}{
		{set: false, want: 0},
		{factor: 1, set: true, want: 0},
		{factor: 0.5, set: true, want: 50},
		{factor: 0.125, set: true, want: 13},
		{factor: 0.1, set: true, want: 10},
		{factor: 0.996, set: true, want: 99},
		{factor: 0.004, set: true, want: 1},
	} {
		t.Run(fmt.Sprint(c.factor, c.set), func(t *testing.T) {
			b := budget("prod", 0, []string{"a/key"}, nil, "m")
			s := snap(Key("prod", "m"), ratebudget.Rates{RPM: 100, TPM: 1000}, 0, map[string][3]float64{
				"a/ing/job-0/pod-0": {300, 0, 0}, "a/ing/job-1/pod-1": {300, 0, 0}})
			if c.set {
				s.GroupFactors = map[string]float64{"a/ing": c.factor}
			}
			st := Status(&b, []ratelease.Snapshot{s}, nil, nil)
			if len(st.Holders) != 1 {
				t.Fatalf("holders %+v, want the ingestion's two pods merged into one", st.Holders)
			}
			if got := st.Holders[0].BackoffPercent; got != c.want {
				t.Errorf("backoffPercent %d, want %d", got, c.want)
			}
		})
	}
}
