package ratelease

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// simPod is a chunk pod that always has work: it uses all it is granted and waits on its
// limiter the whole time (as a budget-bound embedder does).
type simPod struct {
	c   *Client
	lim *fakeLimiter
}

func (p *simPod) step(d time.Duration) {
	p.lim.mu.Lock()
	defer p.lim.mu.Unlock()
	p.lim.u.Tokens += int64(p.lim.tpm * d.Minutes())
	p.lim.u.Requests += int64(p.lim.rpm*d.Minutes()) + 1
	p.lim.u.Waited += d
}

// TestSimulatedFleet drives clients against a server on one clock: two pods, then four more
// (parallelism raised), then a leader change, then two of them finish. After each change every
// busy pod holds about an equal share within a few renewals, and the grants never add up to
// more than the budget.
func TestSimulatedFleet(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", Budget{Key: key.Key, Declared: ratebudget.Rates{RPM: 6000, TPM: 20_000}})
	ctx := context.Background()
	var pods []*simPod
	add := func(n int) {
		for range n {
			i := len(pods)
			lim := &fakeLimiter{u: Usage{RemainingRequests: -1, RemainingTokens: -1}}
			job := fmt.Sprintf("a-chunk-%d", i)
			c := NewClient(ClientOptions{URL: e.url, Credential: Credential(testKey, "ns", "a"), Namespace: "ns", Ingestion: "a",
				Job: job, Holder: job, Fallback: ratebudget.Rates{RPM: 1000, TPM: 20_000 / 6}, Now: e.clk.Now, Log: logr.Discard()}, lim)
			lim.SetRates(1000, 20_000/6, 0) // the Job's frozen share until the first lease
			pods = append(pods, &simPod{c: c, lim: lim})
		}
	}
	// run advances the clock in steps of tick; each pod renews when its renewal is due.
	next := map[*simPod]time.Time{}
	run := func(d time.Duration) {
		const tick = 250 * time.Millisecond
		for end := e.clk.Now().Add(d); e.clk.Now().Before(end); {
			for _, p := range pods {
				if p.c == nil {
					continue
				}
				if due, ok := next[p]; !ok || !e.clk.Now().Before(due) {
					_ = p.c.RenewOnce(ctx)
					next[p] = e.clk.Now().Add(p.c.renew)
				}
				p.step(tick)
			}
			e.clk.Add(tick)
		}
	}
	checkEqual := func(when string) {
		t.Helper()
		var live []*simPod
		var sum float64
		for _, p := range pods {
			if p.c != nil {
				live = append(live, p)
				_, tpm := p.lim.rates()
				sum += tpm
			}
		}
		want := 20_000.0 / float64(len(live))
		for i, p := range live {
			if _, tpm := p.lim.rates(); tpm < 0.9*want || tpm > 1.1*want {
				t.Errorf("%s: pod %d has %g TPM, want about %g (sum %g)", when, i, tpm, want, sum)
			}
		}
		if sum > 20_000*1.0001 {
			t.Errorf("%s: pods hold %g TPM, budget 20000", when, sum)
		}
	}
	add(2)
	run(10 * time.Second)
	checkEqual("two pods")
	add(4)
	run(10 * time.Second)
	checkEqual("six pods")

	// Leader change: a new server with an empty table at the same URL.
	e.srv = e.newServer(nil)
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	for _, p := range pods {
		p.c.opts.URL = hs.URL + Path
	}
	run(20 * time.Second)
	checkEqual("after a leader change")

	for _, p := range pods[:2] {
		_ = p.c.release(ctx)
		p.c = nil
	}
	run(10 * time.Second)
	checkEqual("two finished")
}
