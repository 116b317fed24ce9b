package ratelease

import (
	"fmt"
	"testing"
	"time"
)

// TestReportsAreClamped: a renewal's counts are bounded by what the pod's grant allowed since
// its last renewal (plus one renewal period and its burst), 429s by its requests; clamps are
// counted by ingestion. key grants one pod 300 RPM; renewals are 5 s apart, so the bound is
// 300 × 10 s + 1 = 51 requests (a first renewal: the whole budget over TTL + renew, 101).
func TestReportsAreClamped(t *testing.T) {
	for _, c := range []struct {
		name                string
		first               bool // the counts come with the pod's first renewal
		requests, limited   int64
		wantLimited         int64
		wantClampedReports  float64
		wantRequestsCounted float64
	}{
		{name: "within the grant", requests: 40, limited: 10, wantLimited: 10, wantRequestsCounted: 40},
		{name: "at the bound", requests: 51, limited: 51, wantLimited: 51, wantRequestsCounted: 51},
		{name: "above the grant", requests: 10_000, limited: 10_000, wantLimited: 51, wantClampedReports: 1, wantRequestsCounted: 51},
		{name: "above the grant, 429s keep their share", requests: 10_000, limited: 1_000, wantLimited: 5, wantClampedReports: 1, wantRequestsCounted: 51},
		{name: "more 429s than requests", requests: 20, limited: 30, wantLimited: 20, wantClampedReports: 1, wantRequestsCounted: 20},
		{name: "a first renewal", first: true, requests: 1 << 40, limited: 1 << 40, wantLimited: 101, wantClampedReports: 1, wantRequestsCounted: 101},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.res.set("ns/a", key)
			use := func(r *RenewRequest) { r.UsedRequests, r.RateLimited = c.requests, c.limited }
			if !c.first {
				e.renew("a", "a-0", nil)
				e.clk.Add(5 * time.Second)
			}
			e.renew("a", "a-0", use)
			s := e.srv.Snapshot()
			if len(s) != 1 || s[0].RateLimited != c.wantLimited {
				t.Fatalf("snapshot %+v: want %d 429s counted", s, c.wantLimited)
			}
			if n := value(t, e.srv.opts.Metrics.used.WithLabelValues(key.Key, "requests")); n != c.wantRequestsCounted {
				t.Errorf("requests counted %g, want %g", n, c.wantRequestsCounted)
			}
			if n := value(t, e.srv.opts.Metrics.clampedReports.WithLabelValues(key.Key, "ns/a")); n != c.wantClampedReports {
				t.Errorf("clamped reports %g, want %g", n, c.wantClampedReports)
			}
		})
	}
}

// TestTenantsShareABudget: ingestions sharing a budget, each renewing every 5 s with what its
// pod reports (within its grant). One tenant reporting nothing but 429s only loses its own
// grant; 429s two tenants see, or the only tenant sees, back the budget off.
func TestTenantsShareABudget(t *testing.T) {
	for _, c := range []struct {
		name     string
		tenants  []string           // ingestion names
		share429 map[string]float64 // each pod sends at its grant; this share comes back 429
		// want: the budget's factor cut; the TPM of each tenant's pod at the end.
		budgetCut bool
		want      map[string]func(tpm float64) bool
		// cutAlone: the ingestion whose own factor is cut ("": none).
		cutAlone string
		// wantFallback: the TPM of each tenant's static share at the end (nil: not checked).
		wantFallback map[string]func(tpm float64) bool
	}{
		{
			name:     "a liar among three: the others keep their thirds",
			tenants:  []string{"a", "b", "c"},
			share429: map[string]float64{"a": 1},
			cutAlone: "a",
			want: map[string]func(float64) bool{
				"a": func(x float64) bool { return x <= 200_000*0.25 },
				"b": func(x float64) bool { return near(x, 200_000) },
				"c": func(x float64) bool { return near(x, 200_000) },
			},
			// Its static share is cut like its grant: losing the manager must not give it back.
			wantFallback: map[string]func(float64) bool{
				"a": func(x float64) bool { return x <= 200_000*0.25 },
				"b": func(x float64) bool { return near(x, 200_000) },
			},
		},
		{
			name:      "two honest tenants seeing 429s: the budget backs off",
			tenants:   []string{"a", "b"},
			share429:  map[string]float64{"a": 0.35, "b": 0.35},
			budgetCut: true,
			want: map[string]func(float64) bool{
				"a": func(x float64) bool { return x < 300_000*0.5 },
				"b": func(x float64) bool { return x < 300_000*0.5 },
			},
		},
		{
			name:      "a single tenant seeing 429s: the budget backs off",
			tenants:   []string{"a"},
			share429:  map[string]float64{"a": 0.35},
			budgetCut: true,
			want:      map[string]func(float64) bool{"a": func(x float64) bool { return x < 600_000*0.5 }},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			for _, ing := range c.tenants {
				e.res.set("ns/"+ing, key)
				e.renew(ing, ing+"-0", nil)
			}
			got, rpm, fallback := map[string]float64{}, map[string]float64{}, map[string]float64{}
			for range 12 {
				e.clk.Add(5 * time.Second)
				for _, ing := range c.tenants {
					sent := int64(rpm[ing] * 5 / 60)
					l := e.renew(ing, ing+"-0", func(q *RenewRequest) {
						q.UsedRequests, q.RateLimited = sent, int64(float64(sent)*c.share429[ing])
					})
					got[ing], rpm[ing], fallback[ing] = l.TPM, l.RPM, l.Fallback.TPM
				}
			}
			s := e.srv.Snapshot()
			if len(s) != 1 {
				t.Fatalf("%d budgets", len(s))
			}
			// An ingestion cut alone shows in the snapshot (the budget's status lists it), and only
			// that one. (Not checked where every tenant sees 429s: here their pods' counts are
			// truncated to whole requests, so at the floor's few requests a round one tenant's
			// rounds come out without a 429 while another's have one, which is what a liar looks
			// like.)
			if c.cutAlone != "" {
				for ing, f := range s[0].GroupFactors {
					if ing != "ns/"+c.cutAlone || f > 0.25 {
						t.Errorf("snapshot: %s's own factor %g, want only %q's, a quarter or less", ing, f, c.cutAlone)
					}
				}
				if _, ok := s[0].GroupFactors["ns/"+c.cutAlone]; !ok {
					t.Errorf("snapshot: %s not cut alone (%v)", c.cutAlone, s[0].GroupFactors)
				}
			}
			if cut := s[0].Factor < 1; cut != c.budgetCut {
				t.Errorf("budget factor %g: cut %v, want %v", s[0].Factor, cut, c.budgetCut)
			}
			for ing, ok := range c.want {
				if !ok(got[ing]) {
					t.Errorf("%s's pod holds %s TPM", ing, fmt.Sprint(got[ing]))
				}
			}
			for ing, ok := range c.wantFallback {
				if !ok(fallback[ing]) {
					t.Errorf("%s's pod falls back to %s TPM", ing, fmt.Sprint(fallback[ing]))
				}
			}
			if n := testutilSum(t, e, "ns/"); n != 0 {
				t.Errorf("%g reports clamped: the pods here send within their grants", n)
			}
		})
	}
}

// testutilSum adds up the clamped-report counters of the ingestions under prefix.
func testutilSum(t *testing.T, e *env, prefix string) float64 {
	t.Helper()
	var n float64
	for _, ing := range []string{"a", "b", "c"} {
		n += value(t, e.srv.opts.Metrics.clampedReports.WithLabelValues(key.Key, prefix+ing))
	}
	return n
}
