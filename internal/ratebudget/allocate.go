// Package ratebudget divides one provider key's rate budget (requests and tokens per minute)
// among the pods that draw from it. It is pure: the lease service (internal/ratelease) feeds it
// the holders it has heard from and hands out what it returns.
//
// Division is weighted max-min fair in two levels: first among groups (ingestions), by the
// group's weight, so a group's share does not grow with its number of pods; then within a group
// among its holders (pods), equally. At each level a member whose demand is below its share
// gets its demand and the rest is shared by weight among the others (water-filling); what no
// one demands is then spread by weight over everyone, so a member whose use is growing has room
// at once and the grants always add up to the budget.
package ratebudget

import (
	"math"
	"sort"
)

// Rates is a pair of per-minute rates.
type Rates struct {
	RPM float64 `json:"rpm"`
	TPM float64 `json:"tpm"`
}

// Holder is one pod drawing from a budget.
type Holder struct {
	ID string
	// Group is the ingestion the pod belongs to; groups are what weights apply to.
	Group string
	// Weight of the group (the same for each of its holders); ≤ 0 counts as 1.
	Weight float64
	// Demand is the rate the holder could use; a zero or negative field means "as much as it
	// is given" (a pod that was held back by its limiter, or one that just started).
	Demand Rates
	// MaxRequestTokens is the largest single request the holder sends; its token burst is never
	// smaller, or the request could never be admitted.
	MaxRequestTokens int
}

// Grant is one holder's share.
type Grant struct {
	ID    string
	Rates Rates
	// BurstTokens is the token bucket's size: a few seconds of the grant, never below the
	// holder's largest request.
	BurstTokens int
}

// burstSeconds of a token grant make its bucket: small, because every holder can burst at once
// and the provider meters a sliding minute.
const burstSeconds = 3

// Allocate divides budget among holders. Grants come in the order of holders. A zero field of
// budget means that dimension is unlimited, and every grant's field is zero (unlimited) too.
func Allocate(budget Rates, holders []Holder) []Grant {
	grants := make([]Grant, len(holders))
	for i, h := range holders {
		grants[i].ID = h.ID
	}
	if len(holders) == 0 {
		return grants
	}
	rpm := allocate(budget.RPM, holders, func(r Rates) float64 { return r.RPM })
	tpm := allocate(budget.TPM, holders, func(r Rates) float64 { return r.TPM })
	for i, h := range holders {
		grants[i].Rates = Rates{RPM: rpm[i], TPM: tpm[i]}
		if tpm[i] > 0 {
			grants[i].BurstTokens = max(h.MaxRequestTokens, int(math.Ceil(tpm[i]*burstSeconds/60)), 1)
		}
	}
	return grants
}

// allocate divides one dimension: among groups by weight, then within each group equally.
func allocate(total float64, holders []Holder, dim func(Rates) float64) []float64 {
	out := make([]float64, len(holders))
	if total <= 0 {
		return out
	}
	type group struct {
		weight, demand float64
		members        []int
	}
	byName := map[string]*group{}
	var names []string
	for i, h := range holders {
		g := byName[h.Group]
		if g == nil {
			g = &group{weight: h.Weight}
			if g.weight <= 0 {
				g.weight = 1
			}
			byName[h.Group] = g
			names = append(names, h.Group)
		}
		g.members = append(g.members, i)
		if d := dim(h.Demand); d <= 0 || math.IsInf(g.demand, 1) {
			g.demand = math.Inf(1)
		} else {
			g.demand += d
		}
	}
	weights := make([]float64, len(names))
	demands := make([]float64, len(names))
	for i, n := range names {
		weights[i], demands[i] = byName[n].weight, byName[n].demand
	}
	shares := WaterFill(total, weights, demands)
	for gi, n := range names {
		g := byName[n]
		w := make([]float64, len(g.members))
		d := make([]float64, len(g.members))
		for j, hi := range g.members {
			w[j] = 1
			if d[j] = dim(holders[hi].Demand); d[j] <= 0 {
				d[j] = math.Inf(1)
			}
		}
		for j, s := range WaterFill(shares[gi], w, d) {
			out[g.members[j]] = s
		}
	}
	return out
}

// WaterFill divides total among members with the given weights (> 0) and demands (+Inf: no
// limit): weighted max-min fair, then what is left over (when every demand is met) spread by
// weight over all members. The result adds up to total (up to rounding) when there is at least
// one member.
func WaterFill(total float64, weights, demands []float64) []float64 {
	n := len(weights)
	out := make([]float64, n)
	if n == 0 || total <= 0 {
		return out
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	// Visit members by demand per weight: those below the water level are satisfied first.
	sort.SliceStable(order, func(a, b int) bool {
		return demands[order[a]]/weights[order[a]] < demands[order[b]]/weights[order[b]]
	})
	remaining := total
	var wsum float64
	for _, w := range weights {
		wsum += w
	}
	k := 0
	for ; k < n; k++ {
		i := order[k]
		level := remaining / wsum // share per unit of weight for everyone not yet satisfied
		if demands[i] > level*weights[i] {
			break
		}
		out[i] = demands[i]
		remaining -= demands[i]
		wsum -= weights[i]
	}
	if k < n {
		level := remaining / wsum
		for ; k < n; k++ {
			i := order[k]
			out[i] = level * weights[i]
		}
		return out
	}
	// Every demand is met: spread the rest by weight so growth needs no extra round trip.
	if remaining > 0 {
		var all float64
		for _, w := range weights {
			all += w
		}
		for i, w := range weights {
			out[i] += remaining * w / all
		}
	}
	return out
}
