package ratelease

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"

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

// TestClientFirstRefused: whatever the manager refuses the first lease with (a wrong
// credential, an ingestion it does not know, its own failure, too many holders, a garbled
// answer), First returns the refusal and leaves the pod on its fallback share, applied once.
func TestClientFirstRefused(t *testing.T) {
	frozen := ratebudget.Rates{RPM: 60, TPM: 100_000}
	for _, c := range []struct {
		code int
		body string
	}{
		{http.StatusForbidden, `{"error":"the credential is not valid"}`},
		{http.StatusNotFound, `{"error":"ingestion ns/a not found"}`},
		{http.StatusInternalServerError, `oops`},
		{http.StatusTooManyRequests, `{"error":"too many holders"}`},
		{http.StatusOK, `{"rpm":`},
		{http.StatusOK, `{"rpm":-1,"tpm":5}`},
	} {
		t.Run(fmt.Sprintf("%d %s", c.code, c.body), func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(c.code)
				_, _ = w.Write([]byte(c.body))
			}))
			t.Cleanup(hs.Close)
			lim := &fakeLimiter{u: Usage{RemainingRequests: -1, RemainingTokens: -1}}
			cl := NewClient(ClientOptions{URL: hs.URL + Path, Credential: "x", Namespace: "ns", Ingestion: "a",
				Job: "a-0", Holder: "a-0-pod", Fallback: frozen, Log: logr.Discard()}, lim)
			err := cl.First(context.Background(), time.Second)
			if err == nil {
				t.Fatal("First succeeded")
			}
			var se *StatusError
			if c.code != http.StatusOK && (!errors.As(err, &se) || se.Code != c.code) {
				t.Errorf("error %v, want a StatusError %d", err, c.code)
			}
			if rpm, tpm := lim.rates(); rpm != frozen.RPM || tpm != frozen.TPM || lim.set != 1 {
				t.Errorf("after a refused first lease: %g/%g (%d applied), want the fallback share once", rpm, tpm, lim.set)
			}
			// Renewing again while still refused does not re-apply (or log) the fallback.
			_ = cl.RenewOnce(context.Background())
			if lim.set != 1 {
				t.Errorf("%d rate changes after a second refusal, want 1", lim.set)
			}
		})
	}
}
