package embeddingbudget

import (
	"fmt"
	"math"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// Condition types and reasons of an EmbeddingBudget.
const (
	ConditionReady          = "Ready"
	ConditionConflicting    = "Conflicting"
	ConditionUnlistedModels = "UnlistedModels"

	ReasonApplied         = "Applied"
	ReasonSuperseded      = "Superseded"
	ReasonSharedClaim     = "SharedClaim"
	ReasonNoSharedClaim   = "NoSharedClaim"
	ReasonModelNotListed  = "ModelNotListed"
	ReasonAllModelsListed = "AllModelsListed"

	// Event reasons (besides the condition reasons).
	ReasonConflictResolved = "ConflictResolved"
	ReasonBackedOff        = "BackedOff"
	ReasonRecovered        = "Recovered"
)

// MaxHolders is the most holders a status lists (the rest are counted in holdersOmitted), so a
// budget with thousands of pods stays far below an object's size limit.
const MaxHolders = 100

// maxMessage bounds a condition message built from lists.
const maxMessage = 2000

// maxNote is the longest event note the API server accepts (events.k8s.io/v1); a longer one is
// refused and the recorder drops the event.
const maxNote = 1024

// Ingestion is an ingestion as the status writer sees it: where it is, its key Secret and model.
type Ingestion struct {
	Namespace, Name, Secret, Model string
}

// Unlisted returns, by budget name, the ingestions that budget claims but whose model it does
// not list (they keep their implicit budgets), sorted.
func Unlisted(budgets []v1alpha1.EmbeddingBudget, ings []Ingestion) map[string][]Ingestion {
	out := map[string][]Ingestion{}
	for _, ing := range ings {
		m := Find(budgets, ing.Namespace, ing.Secret, ing.Model)
		if m.Budget != nil && m.Model == nil {
			out[m.Budget.Name] = append(out[m.Budget.Name], ing)
		}
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool {
			return l[i].Namespace+"/"+l[i].Name+"/"+l[i].Model < l[j].Namespace+"/"+l[j].Name+"/"+l[j].Model
		})
	}
	return out
}

// Status computes budget b's status from the lease server's snapshots (all budgets; those of
// b are picked by key), the conflicts of b (Conflicts) and the ingestions it claims with an
// unlisted model (Unlisted). Conditions keep their transition times when unchanged, so an
// unchanged budget gets an equal status and no write.
func Status(b *v1alpha1.EmbeddingBudget, snaps []ratelease.Snapshot, conflicts []Conflict, unlisted []Ingestion) v1alpha1.EmbeddingBudgetStatus {
	st := v1alpha1.EmbeddingBudgetStatus{ObservedGeneration: b.Generation}
	st.Conditions = append([]metav1.Condition(nil), b.Status.Conditions...)

	type holderKey struct{ ns, ing, model string }
	type holderSum struct {
		h             v1alpha1.BudgetHolder
		granted, used ratebudget.Rates
	}
	holders := map[holderKey]*holderSum{}
	for _, s := range snaps {
		name, model, ok := ParseKey(s.Key)
		if !ok || name != b.Name {
			continue
		}
		ms := v1alpha1.BudgetModelStatus{Name: model, Declared: rates(s.Declared), Effective: rates(s.Effective), Granted: rates(s.Granted),
			Holders: int32(len(s.Holders)), RateLimited: s.RateLimited}
		var used ratebudget.Rates
		for id, g := range s.Holders {
			u := s.Use[id]
			used.RPM += u.Used.RPM
			used.TPM += u.Used.TPM
			parts := strings.SplitN(id, "/", 3) // namespace/ingestion/job/pod
			if len(parts) < 3 {
				continue
			}
			k := holderKey{parts[0], parts[1], model}
			h := holders[k]
			if h == nil {
				h = &holderSum{h: v1alpha1.BudgetHolder{Namespace: k.ns, Ingestion: k.ing, Model: model}}
				holders[k] = h
			}
			h.h.Pods++
			h.granted.RPM, h.granted.TPM = h.granted.RPM+g.RPM, h.granted.TPM+g.TPM
			h.used.RPM, h.used.TPM = h.used.RPM+u.Used.RPM, h.used.TPM+u.Used.TPM
			h.h.RateLimited += u.RateLimited
			if f, ok := s.GroupFactors[k.ns+"/"+k.ing]; ok {
				h.h.BackoffPercent = backoffPercent(f)
			}
		}
		ms.Used = rates(used)
		st.Models = append(st.Models, ms)
	}
	sort.Slice(st.Models, func(i, j int) bool { return st.Models[i].Name < st.Models[j].Name })
	for _, h := range holders {
		h.h.Granted, h.h.Used = rates(h.granted), rates(h.used)
		st.Holders = append(st.Holders, h.h)
	}
	sort.Slice(st.Holders, func(i, j int) bool {
		a, c := st.Holders[i], st.Holders[j]
		if a.Granted.TokensPerMinute != c.Granted.TokensPerMinute {
			return a.Granted.TokensPerMinute > c.Granted.TokensPerMinute
		}
		return a.Namespace+"/"+a.Ingestion+"/"+a.Model < c.Namespace+"/"+c.Ingestion+"/"+c.Model
	})
	if len(st.Holders) > MaxHolders {
		st.HoldersOmitted = int32(len(st.Holders) - MaxHolders)
		st.Holders = st.Holders[:MaxHolders]
	}

	won := false
	var lost []string
	for _, c := range conflicts {
		if c.Winner == b.Name {
			won = true
		} else {
			lost = append(lost, c.Claim)
		}
	}
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonApplied,
		Message: "the rate lease service applies this budget to the ingestions it claims"}
	if claimCount(b) > 0 && len(lost) == claimCount(b) && !won {
		ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonSuperseded,
			Message: "every key Secret and namespace this budget lists is claimed by an older budget (see Conflicting): no ingestion draws from it"}
	}
	ready.ObservedGeneration = b.Generation
	meta.SetStatusCondition(&st.Conditions, ready)

	conflicting := metav1.Condition{Type: ConditionConflicting, Status: metav1.ConditionFalse, Reason: ReasonNoSharedClaim,
		Message: "no other budget lists the same key Secret or namespace", ObservedGeneration: b.Generation}
	if len(conflicts) > 0 {
		parts := make([]string, 0, len(conflicts))
		for _, c := range conflicts {
			who := "this budget wins (the oldest)"
			if c.Winner != b.Name {
				who = "budget " + c.Winner + " wins (older), so its ingestions do not draw from this one"
			}
			parts = append(parts, fmt.Sprintf("%s is also listed by %s: %s", c.Claim, strings.Join(c.Others, ", "), who))
		}
		conflicting = metav1.Condition{Type: ConditionConflicting, Status: metav1.ConditionTrue, Reason: ReasonSharedClaim,
			ObservedGeneration: b.Generation, Message: clip(strings.Join(parts, "; ") +
				". A key has one provider limit: list each key Secret and namespace in one budget only")}
	}
	meta.SetStatusCondition(&st.Conditions, conflicting)

	unl := metav1.Condition{Type: ConditionUnlistedModels, Status: metav1.ConditionFalse, Reason: ReasonAllModelsListed,
		Message: "every ingestion drawing from this budget uses a listed model", ObservedGeneration: b.Generation}
	if len(unlisted) > 0 {
		parts := make([]string, 0, len(unlisted))
		for _, u := range unlisted {
			parts = append(parts, fmt.Sprintf("%s/%s (%s)", u.Namespace, u.Name, u.Model))
		}
		unl = metav1.Condition{Type: ConditionUnlistedModels, Status: metav1.ConditionTrue, Reason: ReasonModelNotListed,
			ObservedGeneration: b.Generation, Message: clip("ingestions this budget claims use a model it does not list and keep " +
				"their own spec.embedding budget: " + strings.Join(parts, ", ") + "; add the model to spec.models to include them")}
	}
	meta.SetStatusCondition(&st.Conditions, unl)
	return st
}

// Event is one event to record about a budget after its status was written.
type Event struct {
	Type, Reason, Message string
}

// Events are the events a status change calls for: a conflict or unlisted model appearing or
// going, and a model backing off below (or recovering to) its declared limit. unlisted are the
// ingestions cur's UnlistedModels condition names (as passed to Status).
func Events(b *v1alpha1.EmbeddingBudget, old, cur v1alpha1.EmbeddingBudgetStatus, unlisted []Ingestion) []Event {
	var out []Event
	was := func(t string) bool { return meta.IsStatusConditionTrue(old.Conditions, t) }
	is := func(t string) *metav1.Condition { return meta.FindStatusCondition(cur.Conditions, t) }
	if c := is(ConditionConflicting); c != nil {
		switch {
		case c.Status == metav1.ConditionTrue && (!was(ConditionConflicting) || conditionMessage(old, ConditionConflicting) != c.Message):
			out = append(out, Event{corev1.EventTypeWarning, ReasonSharedClaim, c.Message})
		case c.Status == metav1.ConditionFalse && was(ConditionConflicting):
			out = append(out, Event{corev1.EventTypeNormal, ReasonConflictResolved, "no other budget lists the same key Secret or namespace any more"})
		}
	}
	if c := is(ConditionUnlistedModels); c != nil && c.Status == metav1.ConditionTrue &&
		(!was(ConditionUnlistedModels) || conditionMessage(old, ConditionUnlistedModels) != c.Message) {
		out = append(out, Event{corev1.EventTypeWarning, ReasonModelNotListed, unlistedEvent(b.Name, unlisted)})
	}
	// Backed off is below the limit the leader applies (status declared), not below spec: after
	// an edit the leader applies the smaller of the old and new limits until every pod has
	// renewed, which is no backoff.
	backedOff := func(s v1alpha1.EmbeddingBudgetStatus, model string) (v1alpha1.BudgetModelStatus, bool) {
		for _, m := range s.Models {
			if m.Name == model {
				return m, m.Effective.TokensPerMinute < m.Declared.TokensPerMinute || m.Effective.RequestsPerMinute < m.Declared.RequestsPerMinute
			}
		}
		return v1alpha1.BudgetModelStatus{}, false
	}
	for _, m := range b.Spec.Models {
		ms, now := backedOff(cur, m.Name)
		_, before := backedOff(old, m.Name)
		switch {
		case now && !before:
			out = append(out, Event{corev1.EventTypeWarning, ReasonBackedOff, fmt.Sprintf(
				"model %s: the provider answered 429s, so the budget is backed off to %d requests and %d tokens per minute (declared %d and %d); it recovers step by step once they stop",
				m.Name, ms.Effective.RequestsPerMinute, ms.Effective.TokensPerMinute, ms.Declared.RequestsPerMinute, ms.Declared.TokensPerMinute)})
		case before && !now && hasModel(cur, m.Name):
			out = append(out, Event{corev1.EventTypeNormal, ReasonRecovered, fmt.Sprintf(
				"model %s: back at the declared %d requests and %d tokens per minute", m.Name, ms.Declared.RequestsPerMinute, ms.Declared.TokensPerMinute)})
		}
	}
	for i := range out {
		out[i].Message = clipTo(out[i].Message, maxNote)
	}
	return out
}

// unlistedEvent says how many ingestions use which unlisted models, without naming them: events
// about a cluster-scoped budget land in the namespace default, which far more people can read
// than the budget (cluster admins); the condition on the budget names the ingestions.
func unlistedEvent(budget string, unlisted []Ingestion) string {
	seen := map[string]bool{}
	var models []string
	for _, u := range unlisted {
		if !seen[u.Model] {
			seen[u.Model] = true
			models = append(models, u.Model)
		}
	}
	sort.Strings(models)
	return clip(fmt.Sprintf("%d ingestion(s) this budget claims use a model it does not list (%s) and keep their own "+
		"spec.embedding budget; the UnlistedModels condition of EmbeddingBudget %s names them; add the model to spec.models to include them",
		len(unlisted), strings.Join(models, ", "), budget))
}

func hasModel(s v1alpha1.EmbeddingBudgetStatus, model string) bool {
	for _, m := range s.Models {
		if m.Name == model {
			return true
		}
	}
	return false
}

func conditionMessage(s v1alpha1.EmbeddingBudgetStatus, t string) string {
	if c := meta.FindStatusCondition(s.Conditions, t); c != nil {
		return c.Message
	}
	return ""
}

func claimCount(b *v1alpha1.EmbeddingBudget) int { return len(b.Spec.Secrets) + len(b.Spec.Namespaces) }

func clip(s string) string { return clipTo(s, maxMessage) }

// clipTo cuts s to at most n bytes of valid UTF-8, ending in "..." when cut.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

func rates(r ratebudget.Rates) v1alpha1.BudgetRates {
	return v1alpha1.BudgetRates{RequestsPerMinute: round(r.RPM), TokensPerMinute: round(r.TPM)}
}

func round(f float64) int64 {
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	return int64(math.Round(min(f, math.MaxInt64/2)))
}

// CarryBackoff keeps in st (b's status computed from this leader's state) the models of b the
// status before (the last leader's word) showed backed off and this leader has not known yet
// (known false), with no holders. A leader keeps a backed-off budget while no pod holds a lease
// of it, so that the next pod does not storm the key again; a new leader that no pod of the
// budget has renewed with yet would otherwise write that away after its warmup, and the next pod
// would start at the full declaration (ratelease.Budget.LastFactor reads it from here). Once
// this leader has known a model, its own state is the status (a budget it forgot had recovered).
func CarryBackoff(b *v1alpha1.EmbeddingBudget, st *v1alpha1.EmbeddingBudgetStatus, known func(model string) bool) {
	carried := false
	for _, m := range b.Spec.Models {
		if known(m.Name) || hasModel(*st, m.Name) || LastFactor(b, m.Name) <= 0 {
			continue
		}
		for _, old := range b.Status.Models {
			if old.Name == m.Name {
				st.Models = append(st.Models, v1alpha1.BudgetModelStatus{Name: old.Name, Declared: old.Declared, Effective: old.Effective})
				carried = true
			}
		}
	}
	if carried {
		sort.Slice(st.Models, func(i, j int) bool { return st.Models[i].Name < st.Models[j].Name })
	}
}

// backoffPercent is an ingestion's own factor in whole percent for holders[].backoffPercent: 0
// (omitted) only when it is not cut; a cut one shows 1..99, never 100 (which would read as not
// cut, though omitempty keeps it) nor 0 (which omitempty drops, hiding the cut).
func backoffPercent(f float64) int32 {
	if !(f < 1) { // NaN too: nothing to show
		return 0
	}
	return int32(min(99, max(1, math.Round(100*f))))
}
