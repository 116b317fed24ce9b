package ratelease

import (
	"math"
	"testing"
	"time"
)

// TestSnapshotUse: a holder's use in the snapshot is its last renewal's counts over the time
// since its previous renewal, its 429s add up, and the budget's 429s count released holders too
// (EmbeddingBudget status shows them).
func TestSnapshotUse(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests, r.UsedTokens, r.RateLimited = 7, 700, 1 })
	e.renew("b", "b-0", nil)
	e.clk.Add(5 * time.Second)
	e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests, r.UsedTokens, r.RateLimited = 10, 20_000, 2 })
	// b's first grant was capped (a held the budget): it renews for its share before it sends
	// (counts above what a grant allows are clamped).
	e.renew("b", "b-0", nil)
	e.clk.Add(2 * time.Second)
	e.renew("b", "b-0", func(r *RenewRequest) { r.UsedRequests, r.UsedTokens, r.RateLimited, r.Release = 4, 400, 4, true })

	snaps := e.srv.Snapshot()
	if len(snaps) != 1 {
		t.Fatalf("%d budgets", len(snaps))
	}
	s := snaps[0]
	u, ok := s.Use["ns/a/a-0/a-0-pod"]
	if !ok || len(s.Use) != 1 {
		t.Fatalf("use %+v: want a's pod only (b released)", s.Use)
	}
	// 10 requests and 20,000 tokens in 5 s: 120 RPM, 240,000 TPM.
	if math.Abs(u.Used.RPM-120) > 1e-9 || math.Abs(u.Used.TPM-240_000) > 1e-6 || u.RateLimited != 3 {
		t.Fatalf("a's use %+v, want 120 RPM, 240000 TPM, 3 429s", u)
	}
	if s.RateLimited != 7 {
		t.Fatalf("budget 429s %d, want 7 (a's 3 and the released b's 4)", s.RateLimited)
	}
}
