package ratebudget

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(1, math.Abs(a), math.Abs(b)) }

func TestAllocate(t *testing.T) {
	budget := Rates{RPM: 300, TPM: 600_000}
	pod := func(id, group string, weight, demandTPM float64) Holder {
		return Holder{ID: id, Group: group, Weight: weight, Demand: Rates{TPM: demandTPM}, MaxRequestTokens: 8000}
	}
	cases := []struct {
		name    string
		budget  Rates
		holders []Holder
		wantTPM []float64
		wantRPM []float64 // nil: not checked
	}{
		{name: "no holders", budget: budget},
		{name: "one holder takes the whole budget", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 0)},
			wantTPM: []float64{600_000}, wantRPM: []float64{300}},
		{name: "two ingestions split evenly", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 0), pod("b-0", "b", 1, 0)},
			wantTPM: []float64{300_000, 300_000}},
		{name: "an ingestion's pods share its part: more pods do not take more", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 0), pod("a-1", "a", 1, 0), pod("a-2", "a", 1, 0), pod("b-0", "b", 1, 0)},
			wantTPM: []float64{100_000, 100_000, 100_000, 300_000}},
		{name: "weights", budget: budget,
			holders: []Holder{pod("a-0", "a", 3, 0), pod("b-0", "b", 1, 0)},
			wantTPM: []float64{450_000, 150_000}},
		{name: "demand below share: gets it, the rest goes to the others", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 60_000), pod("b-0", "b", 1, 0), pod("c-0", "c", 1, 0)},
			wantTPM: []float64{60_000, 270_000, 270_000}},
		{name: "every demand below share: the spare is spread by weight", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 60_000), pod("b-0", "b", 2, 120_000)},
			wantTPM: []float64{60_000 + 140_000, 120_000 + 280_000}},
		{name: "within an ingestion an idle pod frees its part for its siblings", budget: budget,
			holders: []Holder{pod("a-0", "a", 1, 10_000), pod("a-1", "a", 1, 0), pod("b-0", "b", 1, 0)},
			wantTPM: []float64{10_000, 290_000, 300_000}},
		{name: "weight zero counts as one", budget: budget,
			holders: []Holder{pod("a-0", "a", 0, 0), pod("b-0", "b", -2, 0)},
			wantTPM: []float64{300_000, 300_000}},
		{name: "unlimited dimension stays unlimited", budget: Rates{RPM: 300},
			holders: []Holder{pod("a-0", "a", 1, 0), pod("b-0", "b", 1, 0)},
			wantTPM: []float64{0, 0}, wantRPM: []float64{150, 150}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Allocate(c.budget, c.holders)
			if len(got) != len(c.holders) {
				t.Fatalf("%d grants for %d holders", len(got), len(c.holders))
			}
			for i, g := range got {
				if g.ID != c.holders[i].ID {
					t.Errorf("grant %d is for %q, want %q", i, g.ID, c.holders[i].ID)
				}
				if !near(g.Rates.TPM, c.wantTPM[i]) {
					t.Errorf("%s: TPM %g, want %g", g.ID, g.Rates.TPM, c.wantTPM[i])
				}
				if c.wantRPM != nil && !near(g.Rates.RPM, c.wantRPM[i]) {
					t.Errorf("%s: RPM %g, want %g", g.ID, g.Rates.RPM, c.wantRPM[i])
				}
				if g.Rates.TPM > 0 && g.BurstTokens < c.holders[i].MaxRequestTokens {
					t.Errorf("%s: burst %d below the largest request %d", g.ID, g.BurstTokens, c.holders[i].MaxRequestTokens)
				}
			}
		})
	}
}

// TestAllocateArrivalsAndDepartures follows one budget as ingestions come and go: each arrival
// takes its share from the others at once, and a departure gives it back.
func TestAllocateArrivalsAndDepartures(t *testing.T) {
	budget := Rates{RPM: 300, TPM: 900_000}
	var holders []Holder
	steps := []struct {
		change string
		want   map[string]float64 // group -> its TPM
	}{
		{"+a", map[string]float64{"a": 900_000}},
		{"+b", map[string]float64{"a": 450_000, "b": 450_000}},
		{"+c", map[string]float64{"a": 300_000, "b": 300_000, "c": 300_000}},
		{"-a", map[string]float64{"b": 450_000, "c": 450_000}},
		{"-b", map[string]float64{"c": 900_000}},
		{"-c", map[string]float64{}},
	}
	for _, s := range steps {
		g := s.change[1:]
		if s.change[0] == '+' {
			// two pods each: the split within a group must not change the group's total
			holders = append(holders, Holder{ID: g + "-0", Group: g}, Holder{ID: g + "-1", Group: g})
		} else {
			kept := holders[:0]
			for _, h := range holders {
				if h.Group != g {
					kept = append(kept, h)
				}
			}
			holders = kept
		}
		got := map[string]float64{}
		for i, gr := range Allocate(budget, holders) {
			got[holders[i].Group] += gr.Rates.TPM
		}
		if len(got) != len(s.want) {
			t.Fatalf("after %s: groups %v, want %v", s.change, got, s.want)
		}
		for g, w := range s.want {
			if !near(got[g], w) {
				t.Errorf("after %s: %s has %g, want %g", s.change, g, got[g], w)
			}
		}
	}
}

// TestAllocateNeverAboveBudget: whatever the holders ask, the grants add up to at most the
// budget, nobody gets more than its demand unless everyone's demand is met, and everyone's burst
// admits its largest request.
func TestAllocateNeverAboveBudget(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 26))
	for round := range 2000 {
		budget := Rates{RPM: float64(r.IntN(10_000)), TPM: float64(r.IntN(10_000_000))}
		n := r.IntN(12)
		holders := make([]Holder, n)
		for i := range holders {
			holders[i] = Holder{ID: fmt.Sprint(i), Group: fmt.Sprint(r.IntN(4)), Weight: float64(r.IntN(4)),
				MaxRequestTokens: r.IntN(300_000)}
			if r.IntN(3) > 0 {
				holders[i].Demand = Rates{RPM: r.Float64() * budget.RPM / 2, TPM: r.Float64() * budget.TPM / 2}
			}
		}
		grants := Allocate(budget, holders)
		var sum Rates
		for i, g := range grants {
			if g.Rates.RPM < 0 || g.Rates.TPM < 0 {
				t.Fatalf("round %d: negative grant %+v", round, g)
			}
			if g.Rates.TPM > 0 && g.BurstTokens < holders[i].MaxRequestTokens {
				t.Fatalf("round %d: burst %d below the largest request %d", round, g.BurstTokens, holders[i].MaxRequestTokens)
			}
			sum.RPM += g.Rates.RPM
			sum.TPM += g.Rates.TPM
		}
		if sum.RPM > budget.RPM*(1+1e-9) || sum.TPM > budget.TPM*(1+1e-9) {
			t.Fatalf("round %d: grants add up to %+v, budget %+v", round, sum, budget)
		}
		if n > 0 && (!near(sum.RPM, budget.RPM) || !near(sum.TPM, budget.TPM)) {
			t.Fatalf("round %d: grants add up to %+v, leaving part of the budget %+v unused", round, sum, budget)
		}
	}
}

func TestWaterFill(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		total            float64
		weights, demands []float64
		want             []float64
	}{
		{100, nil, nil, []float64{}},
		{100, []float64{1}, []float64{inf}, []float64{100}},
		{100, []float64{1, 1, 1}, []float64{10, inf, inf}, []float64{10, 45, 45}},
		{100, []float64{1, 1, 1}, []float64{10, 20, inf}, []float64{10, 20, 70}},
		{100, []float64{1, 3}, []float64{inf, inf}, []float64{25, 75}},
		// b asks for less than its weighted share (75) and gets it; a takes the rest
		{100, []float64{1, 3}, []float64{inf, 30}, []float64{70, 30}},
		// all satisfied: the 40 left is spread 1:3
		{100, []float64{1, 3}, []float64{20, 40}, []float64{30, 70}},
		{0, []float64{1, 1}, []float64{inf, inf}, []float64{0, 0}},
	}
	for _, c := range cases {
		got := WaterFill(c.total, c.weights, c.demands)
		if len(got) != len(c.want) {
			t.Fatalf("WaterFill(%g, %v, %v) = %v, want %v", c.total, c.weights, c.demands, got, c.want)
		}
		for i := range got {
			if !near(got[i], c.want[i]) {
				t.Errorf("WaterFill(%g, %v, %v) = %v, want %v", c.total, c.weights, c.demands, got, c.want)
				break
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	type round struct{ requests, limited int64 }
	cases := []struct {
		name   string
		rounds []round
		want   float64
	}{
		{"quiet stays at the declaration", []round{{100, 0}, {100, 0}}, 1},
		{"a stray 429 is not sustained", []round{{100, 1}}, 1},
		{"sustained 429s halve it", []round{{100, 10}}, 0.5},
		{"no second cut before the first reached the pods", []round{{100, 10}, {100, 10}}, 0.5},
		{"still limited after the cooldown: cut again", []round{{100, 10}, {100, 10}, {100, 10}, {100, 10}}, 0.25},
		{"never below the floor", []round{
			{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}}, BackoffFloor},
		{"recovers additively", []round{{100, 10}, {100, 0}, {100, 0}}, 0.6},
		{"recovery stops at the declaration", []round{{100, 10},
			{1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}}, 1},
		{"429s with no requests counted are still 429s", []round{{0, 3}}, 0.5},
		// A few large paced requests a round: one 429 at a window's edge is a third of its round
		// but not a storm (the fleet bench's budget was halved for each such one).
		{"one 429 in a small round is not sustained", []round{{3, 1}}, 1},
		{"stray 429s in small rounds hold the factor", []round{{3, 1}, {3, 0}, {3, 0}, {3, 0}, {3, 0}, {3, 0}, {3, 1}}, 1},
		{"429s spread over recent rounds add up", []round{{20, 1}, {20, 1}, {20, 1}}, 0.5},
		{"old 429s leave the window", []round{{20, 1}, {20, 1}, {20, 0}, {20, 0}, {20, 0}, {20, 0}, {20, 0}, {20, 0}, {20, 1}}, 1},
		{"many requests dilute a few 429s", []round{{1000, 3}, {1000, 3}}, 1},
		{"a cut forgets the 429s that caused it", []round{{100, 10}, {100, 0}, {100, 0}, {100, 2}}, 0.6},
		{"recovery is held by a round with more than 1 % 429s", []round{{100, 10}, {100, 0}, {100, 2}}, 0.55},
		// In a large fleet a round without any 429 may never come: a stray 1 % does not hold it.
		{"1 % of 429s does not hold recovery", []round{{100, 10}, {100, 1}, {100, 1}, {100, 1}}, 0.65},
		{"3 % holds the factor without cutting it", []round{{100, 10}, {100, 3}, {100, 3}}, 0.5},
		// Grant changes leave a few 429s behind (the provider's minute still holds the old
		// grants' sends): below 5 % of the requests they are retried, not answered with a cut.
		{"429s below 5 % of the requests are not sustained", []round{{100, 4}}, 1},
		{"4 % over six rounds is not sustained", []round{{50, 2}, {50, 2}, {50, 2}, {50, 2}, {50, 2}, {50, 2}}, 1},
		{"5 % of the requests is sustained", []round{{100, 5}}, 0.5},
		{"5 % spread over rounds is sustained", []round{{40, 2}, {40, 2}, {40, 2}}, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := NewBackoff()
			for _, r := range c.rounds {
				b.Observe(r.requests, r.limited)
			}
			if !near(b.Factor, c.want) {
				t.Fatalf("factor %g, want %g", b.Factor, c.want)
			}
			eff := b.Effective(Rates{RPM: 300, TPM: 1000})
			if !near(eff.RPM, 300*c.want) || !near(eff.TPM, 1000*c.want) {
				t.Fatalf("effective %+v for factor %g", eff, c.want)
			}
		})
	}
}

// TestBackoffConverges: a budget declared above what the provider really allows converges on
// the real limit instead of storming. Each round the holders send at the effective budget and
// the provider refuses what is above its limit; after a few rounds the 429s are a small share
// of the requests (below the 5 % that counts as sustained) and the budget used is most of the
// real limit (not cut to the floor). A budget declared within 5 % of the limit is never cut:
// its 429s stay below that share.
func TestBackoffConverges(t *testing.T) {
	const limit = 1000.0 // requests a round the provider accepts
	for _, c := range []struct {
		declared     float64 // × limit
		maxShare     float64 // 429s ÷ requests over the settled rounds
		minUsed      float64 // accepted ÷ limit over the settled rounds
		wantCutFirst bool
	}{
		{1.04, 0.04, 0.99, false},
		{1.2, 0.05, 0.9, true},
		{2, 0.05, 0.9, true},
		{5, 0.05, 0.9, true},
	} {
		t.Run(fmt.Sprintf("declared %g× the limit", c.declared), func(t *testing.T) {
			b := NewBackoff()
			var sent, refused, accepted float64
			cut := false
			for round := range 300 {
				eff := b.Effective(Rates{RPM: c.declared * limit}).RPM
				over := math.Max(0, eff-limit)
				if round >= 30 {
					sent += eff
					refused += over
					accepted += eff - over
				}
				b.Observe(int64(math.Round(eff)), int64(math.Round(over)))
				cut = cut || b.Factor < 1
			}
			if cut != c.wantCutFirst {
				t.Errorf("cut %v, want %v", cut, c.wantCutFirst)
			}
			if share := refused / sent; share > c.maxShare {
				t.Errorf("429s are %.1f %% of the requests once settled, want ≤ %.1f %% (used %.2f)", 100*share, 100*c.maxShare, accepted/(270*limit))
			}
			if used := accepted / (270 * limit); used < c.minUsed {
				t.Errorf("the holders used %.2f of the real limit once settled, want ≥ %.2f", used, c.minUsed)
			}
		})
	}
}
