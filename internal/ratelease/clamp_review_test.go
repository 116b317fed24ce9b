package ratelease

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// TestFirstRenewalClaimingAnUnlimitedGrantIsBounded: a pod the server has not heard from is
// bounded by the grant it says it holds; one saying it holds an unlimited grant (0) of a limited
// budget, or one above the budget, is bounded by the budget (no leader hands out more).
func TestFirstRenewalClaimingAnUnlimitedGrantIsBounded(t *testing.T) {
	for _, cur := range []ratebudget.Rates{{}, {RPM: 0, TPM: 1000}, {RPM: 30, TPM: 0}, {RPM: 1e300, TPM: 1e300}} {
		e := newEnv(t)
		e.res.set("ns/a", key)
		e.renew("a", "a-0", func(r *RenewRequest) {
			c := cur
			r.Current, r.UsedRequests, r.UsedTokens, r.RateLimited = &c, 1<<40, 1<<40, 1<<40
		})
		s := e.srv.Snapshot()
		if len(s) != 1 {
			t.Fatalf("%d budgets", len(s))
		}
		// The whole budget (300 RPM) over TTL + renew (20 s) + 1 is the most a first renewal can count.
		if s[0].RateLimited > 101 {
			t.Errorf("current %+v: %d 429s counted from one first renewal, want at most 101", cur, s[0].RateLimited)
		}
		if n := value(t, e.srv.opts.Metrics.used.WithLabelValues(key.Key, "tokens")); n > 600_000*20/60+1000 {
			t.Errorf("current %+v: %g tokens counted from one first renewal, want at most the budget over 20 s", cur, n)
		}
	}
}
