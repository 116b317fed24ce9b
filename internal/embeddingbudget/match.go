// Package embeddingbudget decides which declared EmbeddingBudget an ingestion draws from, which
// budgets conflict, and what each budget's status says. It holds no state and reads nothing:
// the manager's resolver (internal/manager) and the status writer (controllers) call it with
// what they read from the cache and the lease server.
//
// Precedence, when several budgets claim an ingestion (namespace ns, key Secret s):
//  1. a budget listing the Secret ns/s in spec.secrets beats one listing the namespace ns in
//     spec.namespaces (the more specific claim wins);
//  2. among budgets claiming it the same way, the oldest (creationTimestamp) wins, then the
//     smallest name. The others are Conflicting: they claim it, but it does not draw from them.
package embeddingbudget

import (
	"sort"
	"strings"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// keyPrefix starts a declared budget's key. An implicit key starts with a namespace, which
// cannot hold ':', so the two never collide.
const keyPrefix = "embeddingbudget:"

// Key is the lease server's key of a declared budget's model.
func Key(budget, model string) string { return keyPrefix + budget + "/" + model }

// ParseKey returns the budget and model of a declared budget's key; ok is false for any other
// key (an implicit budget).
func ParseKey(key string) (budget, model string, ok bool) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return "", "", false
	}
	// A budget's name (a DNS subdomain) holds no '/'; a model name may.
	budget, model, ok = strings.Cut(rest, "/")
	if !ok || budget == "" || model == "" {
		return "", "", false
	}
	return budget, model, true
}

// Via is how a budget claims an ingestion.
type Via int

const (
	ViaNone Via = iota
	// ViaNamespace: the ingestion's namespace is in spec.namespaces.
	ViaNamespace
	// ViaSecret: its key Secret is in spec.secrets (more specific, so it wins).
	ViaSecret
)

func (v Via) String() string {
	switch v {
	case ViaSecret:
		return "key Secret"
	case ViaNamespace:
		return "namespace"
	}
	return "none"
}

// Match is the budget an ingestion draws from.
type Match struct {
	// Budget is the winning budget; nil: no budget claims the ingestion (its implicit budget).
	Budget *v1alpha1.EmbeddingBudget
	Via    Via
	// Model is the budget's entry for the ingestion's model; nil: the budget does not list it,
	// and the ingestion keeps its implicit budget.
	Model *v1alpha1.BudgetModel
	// Weight of the ingestion: its namespace's weight in the budget, 1 when not listed.
	Weight float64
}

// claims reports how b claims the key Secret ns/secret.
func claims(b *v1alpha1.EmbeddingBudget, ns, secret string) Via {
	for _, s := range b.Spec.Secrets {
		if s.Namespace == ns && s.Name == secret {
			return ViaSecret
		}
	}
	for _, n := range b.Spec.Namespaces {
		if n.Name == ns {
			return ViaNamespace
		}
	}
	return ViaNone
}

// older orders budgets by precedence among equal claims: oldest first, then by name.
func older(a, b *v1alpha1.EmbeddingBudget) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Find returns the budget an ingestion in ns, with key Secret secret and model, draws from.
// Budgets being deleted are ignored.
func Find(budgets []v1alpha1.EmbeddingBudget, ns, secret, model string) Match {
	var m Match
	for i := range budgets {
		b := &budgets[i]
		if b.DeletionTimestamp != nil {
			continue
		}
		via := claims(b, ns, secret)
		if via == ViaNone || via < m.Via || via == m.Via && !older(b, m.Budget) {
			continue
		}
		m.Budget, m.Via = b, via
	}
	if m.Budget == nil {
		return Match{}
	}
	m.Weight = 1
	for _, n := range m.Budget.Spec.Namespaces {
		if n.Name == ns && n.Weight > 0 {
			m.Weight = float64(n.Weight)
		}
	}
	for i := range m.Budget.Spec.Models {
		if m.Budget.Spec.Models[i].Name == model {
			m.Model = &m.Budget.Spec.Models[i]
		}
	}
	return m
}

// Conflict is one claim a budget shares with other budgets.
type Conflict struct {
	// Claim is what they both claim: "key Secret ns/name" or "namespace ns".
	Claim string
	// Winner is the budget the claimed ingestions draw from.
	Winner string
	// Others are the other budgets that claim it, by precedence.
	Others []string
}

// Conflicts returns, by budget name, the claims each budget shares with another budget the same
// way (two budgets listing the same Secret, or the same namespace). A Secret listed by one
// budget in a namespace another lists is no conflict: the Secret's budget wins (Find).
func Conflicts(budgets []v1alpha1.EmbeddingBudget) map[string][]Conflict {
	byClaim := map[string][]*v1alpha1.EmbeddingBudget{}
	for i := range budgets {
		b := &budgets[i]
		if b.DeletionTimestamp != nil {
			continue
		}
		for _, s := range b.Spec.Secrets {
			c := "key Secret " + s.Namespace + "/" + s.Name
			byClaim[c] = append(byClaim[c], b)
		}
		for _, n := range b.Spec.Namespaces {
			c := "namespace " + n.Name
			byClaim[c] = append(byClaim[c], b)
		}
	}
	claimsSorted := make([]string, 0, len(byClaim))
	for c, bs := range byClaim {
		if len(bs) > 1 {
			claimsSorted = append(claimsSorted, c)
		}
	}
	sort.Strings(claimsSorted)
	out := map[string][]Conflict{}
	for _, c := range claimsSorted {
		bs := byClaim[c]
		sort.Slice(bs, func(i, j int) bool { return older(bs[i], bs[j]) })
		for _, b := range bs {
			var others []string
			for _, o := range bs {
				if o != b {
					others = append(others, o.Name)
				}
			}
			out[b.Name] = append(out[b.Name], Conflict{Claim: c, Winner: bs[0].Name, Others: others})
		}
	}
	return out
}

// LastFactor is the backoff factor the leader last wrote for model in b's status (effective ÷
// declared, the smaller of requests and tokens), or 0 when the status does not show the model
// backed off. A new leader resumes the budget from it (ratelease.Budget.LastFactor).
func LastFactor(b *v1alpha1.EmbeddingBudget, model string) float64 {
	for _, m := range b.Status.Models {
		if m.Name != model {
			continue
		}
		f := 1.0
		ratio := func(e, d int64) {
			switch {
			case d <= 0 || e < 0: // nothing declared, or not a rate the leader writes
			case e > 0:
				f = min(f, float64(e)/float64(d))
			default:
				// The status holds whole numbers: a small declaration backed off far (3 requests
				// a minute at the floor) shows 0, which is below half of one, not "no backoff".
				f = min(f, 0.5/float64(d))
			}
		}
		ratio(m.Effective.RequestsPerMinute, m.Declared.RequestsPerMinute)
		ratio(m.Effective.TokensPerMinute, m.Declared.TokensPerMinute)
		if f > 0 && f < 1 {
			return f
		}
		return 0
	}
	return 0
}
