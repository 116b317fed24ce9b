package ratelease

import (
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// TestAllocationRules: the server's rules, one scenario each, on one key with a 600,000 TPM
// budget, renewal 5 s and TTL 15 s. Each step renews (or releases) one pod, or moves the clock, or
// edits the budget; a step with want checks the TPM the pod was granted (and whether it was
// capped below its share until the others renew). After every renewal env.renew checks that the
// live grants add up to no more than the budget (except after a budget was lowered, until its
// holders renewed).
func TestAllocationRules(t *testing.T) {
	type step struct {
		advance time.Duration
		budget  float64 // > 0: the declared TPM from now on
		ing     string  // "a" or "b": renew pod <ing>-0 (pod <ing>-1 with second)
		second  bool
		release bool
		want    float64 // -1: not checked
		capped  bool
	}
	renew := func(ing string, want float64, capped bool) step {
		return step{ing: ing, want: want, capped: capped}
	}
	wait := func(d time.Duration) step { return step{advance: d} }
	const full, half = 600_000.0, 300_000.0
	cases := []struct {
		name  string
		steps []step
	}{
		{"arrival with no headroom: the newcomer gets nothing until the holder renews, then half", []step{
			renew("a", full, false),
			renew("b", minGrant, true),
			wait(time.Second), renew("b", minGrant, true), // a has not renewed: still nothing free
			wait(4 * time.Second), renew("a", half, false),
			renew("b", half, false),
		}},
		{"arrival with some headroom: the newcomer takes what is free", []step{
			renew("a", full, false),
			renew("b", minGrant, true),
			wait(5 * time.Second), renew("a", half, false),
			// a's second pod: its quarter is free (b holds nothing yet)
			{ing: "a", second: true, want: half / 2},
			renew("b", half/2, true), // only a quarter is free until a-0 renews
			wait(5 * time.Second), renew("a", half/2, false),
			renew("b", half, false),
		}},
		{"release: the freed share goes to the next renewal at once", []step{
			renew("a", full, false),
			renew("b", minGrant, true),
			wait(5 * time.Second), renew("a", half, false), renew("b", half, false),
			{ing: "b", release: true, want: -1},
			renew("a", full, false),
		}},
		{"expiry: a holder that never renews keeps its grant until its TTL, then loses it", []step{
			renew("a", full, false),
			renew("b", minGrant, true),
			wait(5 * time.Second), renew("a", half, false), renew("b", half, false),
			// b dies without releasing: a's share stays half while b's lease is valid...
			wait(14 * time.Second), renew("a", half, false),
			// ...and is the whole budget once it has expired.
			wait(time.Second + time.Millisecond), renew("a", full, false),
		}},
		{"budget lowered mid-lease: the old grants stand until renewed, nobody gets more meanwhile", []step{
			renew("a", full, false),
			renew("b", minGrant, true),
			wait(5 * time.Second), renew("a", half, false), renew("b", half, false),
			{budget: 200_000},
			renew("a", minGrant, true), // b still holds 300,000 of the new 200,000
			renew("b", 100_000, false),
			renew("a", 100_000, false),
		}},
		{"budget raised: the holders grow at their renewals", []step{
			renew("a", full, false),
			{budget: 1_200_000},
			renew("a", 1_200_000, false),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			b := key
			e.res.set("ns/a", b)
			e.res.set("ns/b", b)
			for i, s := range c.steps {
				switch {
				case s.advance > 0:
					e.clk.Add(s.advance)
					continue
				case s.budget > 0:
					b.Declared = ratebudget.Rates{RPM: key.Declared.RPM, TPM: s.budget}
					e.res.set("ns/a", b)
					e.res.set("ns/b", b)
					e.budgetLowered = s.budget < key.Declared.TPM
					continue
				}
				job := s.ing + "-0"
				if s.second {
					job = s.ing + "-1"
				}
				l := e.renew(s.ing, job, func(r *RenewRequest) { r.Release = s.release })
				if s.want < 0 {
					continue
				}
				if !near(l.TPM, s.want) || l.Capped != s.capped {
					t.Fatalf("step %d (%s): %g TPM, capped %v; want %g, capped %v", i, job, l.TPM, l.Capped, s.want, s.capped)
				}
				if s.capped && l.RenewSeconds != CatchUp.Seconds() {
					t.Fatalf("step %d (%s): capped but renews in %gs, want %s", i, job, l.RenewSeconds, CatchUp)
				}
			}
		})
	}
}
