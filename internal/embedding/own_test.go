package embedding

import (
	"context"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// TestOwnWindow: under a lease a pod's sends in any sliding window stay within its grant per
// minute, whatever its token bucket holds; a refused (429) send is given back; an empty window
// admits one request even above a tiny grant.
func TestOwnWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	type send struct {
		at       time.Duration // from t0
		tokens   int
		refunded bool
	}
	cases := []struct {
		name     string
		rpm, tpm float64
		before   []send
		at       time.Duration
		n        int
		lone     bool // a request fits an empty window whatever its size
		ok       bool
		wait     time.Duration // when !ok
	}{
		{"empty window", 6, 1000, nil, 0, 100, false, true, 0},
		{"empty window, above the limit: waits for it to grow", 6, 1000, nil, 0, 1001, false, false, 0},
		{"requests full", 2, 0, []send{{0, 1, false}, {10 * time.Second, 1, false}}, 20 * time.Second, 1, true, false, 41 * time.Second},
		{"tokens full", 0, 1000, []send{{0, 600, false}}, 5 * time.Second, 500, true, false, 56 * time.Second},
		{"tokens fit exactly", 0, 1000, []send{{0, 600, false}}, 5 * time.Second, 400, false, true, 0},
		{"the oldest left", 2, 0, []send{{0, 1, false}, {10 * time.Second, 1, false}}, ownWindowSize, 1, false, true, 0},
		{"still inside until the window's end", 2, 0, []send{{0, 1, false}, {10 * time.Second, 1, false}}, ownWindowSize - time.Millisecond, 1, true, false, time.Millisecond},
		{"a refused send counts for nothing", 1, 0, []send{{0, 1, true}}, time.Second, 1, false, true, 0},
		{"a settled tiny grant still sends into an empty window", 0.001, 0.001, nil, 0, 5000, true, true, 0},
		{"a tiny grant not yet settled waits", 0.001, 0.001, nil, 0, 5000, false, false, 0},
		{"a tiny grant: one at a time", 0.001, 0.001, []send{{0, 10, false}}, 30 * time.Second, 1, true, false, 31 * time.Second},
		{"unlimited", 0, 0, []send{{0, 1 << 20, false}, {0, 1 << 20, false}}, time.Second, 1 << 20, false, true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var w ownWindow
			for _, b := range c.before {
				s, _ := w.admit(t0.Add(b.at), b.tokens, 0, 0, true)
				w.refund(map[bool]*ownSend{true: s}[b.refunded])
			}
			s, wait := w.admit(t0.Add(c.at), c.n, c.rpm, c.tpm, c.lone)
			if (s != nil) != c.ok || !c.ok && wait != c.wait {
				t.Fatalf("admitted %v, wait %s; want %v, %s", s != nil, wait, c.ok, c.wait)
			}
		})
	}
}

// TestLeaseSizesBatches: a grant packs the batches that follow for it (as a static budget's are
// packed, batchTokensFor), never larger than the embedder's own cap, so a request is a small part
// of the pod's minute; an unlimited grant lifts the cap.
func TestLeaseSizesBatches(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 600, TokensPerMinute: 2_000_000, MaxInputsPerRequest: 2048})
	full := e.MaxBatchTokens()   // 100,000: a twentieth of the static budget
	texts := make([]Input, 4000) // about 100 tokens each: the token cap binds, not the 2,048 inputs
	for i := range texts {
		texts[i] = Input{ID: int64(i), Text: strings.Repeat("word ", 100)}
	}
	largest := func() int {
		batches, _ := e.Split(texts)
		m := 0
		for _, b := range batches {
			m = max(m, b.Tokens)
		}
		return m
	}
	if got := largest(); got > full || got < full/2 {
		t.Fatalf("before a lease: largest batch %d tokens, want about %d", got, full)
	}
	e.SetRates(60, 200_000, 0) // a tenth of the budget: batches of 10,000 tokens
	if got, want := largest(), batchTokensFor(200_000, 60); got > want || got < want/2 {
		t.Fatalf("under a 200,000 TPM grant: largest batch %d tokens, want about %d", got, want)
	}
	e.SetRates(0, 0, 0)
	if got := largest(); got > full || got < full/2 {
		t.Fatalf("after an unlimited grant: largest batch %d tokens, want about %d again", got, full)
	}
	if _, _, err := e.Embed(context.Background(), texts[:10]); err != nil {
		t.Fatal(err)
	}
}

// simulateFleet runs pods that share a token budget equally, each paced by a token bucket at its
// grant (as SetRates sets it) and, with own, by its own window too, on a synthetic clock: every
// pod sends requests of 20,000–30,000 tokens as fast as its limits allow, and after every few
// requests pauses as a chunk pod does between reading and upserting, so its bucket fills. It
// returns the most tokens sent in any 60 s (the provider's sliding minute, (t-60 s, t]).
func simulateFleet(pods int, budget float64, own bool, seed uint64) int {
	rng := rand.New(rand.NewPCG(seed, 1))
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	grant := budget / float64(pods)
	type pod struct {
		bucket   *rate.Limiter
		own      ownWindow
		n        int       // the pending request's tokens
		paid     bool      // its bucket tokens are taken; it waits for its own window
		idleTill time.Time // pausing
		sent     int
	}
	ps := make([]*pod, pods)
	for i := range ps {
		b := rate.NewLimiter(rate.Limit(grant/60), max(30_000, int(grant*3/60)))
		b.AllowN(t0, b.Burst()) // empty, as at the first grant
		ps[i] = &pod{bucket: b, n: 20_000 + rng.IntN(10_000)}
	}
	type sent struct {
		at     time.Time
		tokens int
	}
	var log []sent
	peak, inWindow, head := 0, 0, 0
	for t := t0; t.Before(t0.Add(10 * time.Minute)); t = t.Add(10 * time.Millisecond) {
		for _, p := range ps {
			if t.Before(p.idleTill) {
				continue
			}
			if !p.paid {
				if !p.bucket.AllowN(t, p.n) {
					continue
				}
				p.paid = true
			}
			if own {
				if s, _ := p.own.admit(t, p.n, 0, grant, true); s == nil {
					continue
				}
			}
			log = append(log, sent{t, p.n})
			inWindow += p.n
			for !log[head].at.After(t.Add(-time.Minute)) {
				inWindow -= log[head].tokens
				head++
			}
			peak = max(peak, inWindow)
			p.sent++
			p.n, p.paid = 20_000+rng.IntN(10_000), false
			if p.sent%4 == 0 {
				p.idleTill = t.Add(time.Duration(rng.IntN(15_000)) * time.Millisecond)
			}
		}
	}
	return peak
}

// TestOwnWindowKeepsTheFleetWithinBudget confirms why leased pods went over the key's minute and
// that their own window fixes it: eight pods paced by token buckets at an eighth of the budget
// each put more than the budget into some minute (each bucket's content at the minute's start
// comes on top of its grant); with their own windows no minute exceeds it.
func TestOwnWindowKeepsTheFleetWithinBudget(t *testing.T) {
	const budget = 1_000_000
	for seed := range uint64(3) {
		if peak := simulateFleet(8, budget, false, seed); peak <= budget {
			t.Errorf("seed %d: token buckets alone peaked at %d tokens a minute, within the budget %d: the cause is elsewhere", seed, peak, budget)
		}
		peak := simulateFleet(8, budget, true, seed)
		if peak > budget {
			t.Errorf("seed %d: with their own windows the pods peaked at %d tokens a minute, above the budget %d", seed, peak, budget)
		}
		if peak < budget*8/10 {
			t.Errorf("seed %d: with their own windows the pods peaked at only %d tokens a minute (budget %d): the window starves them", seed, peak, budget)
		}
	}
}

// TestOwnLimitFollowsTheGrant: the own window's limit is the grant's mean over the window: a
// raised grant grows in over one window (the others' sends under their old grants leave the
// provider's minute at that pace), a lowered one comes down the same way (the pod's own sends
// under its old grant fill its part of the minute as they leave it, while its bucket sends at the
// lower grant at once), a grant going up and down keeps its mean (no ratchet), the first grant
// grows from zero; an unlimited grant holds at once, and a grant after it too.
func TestOwnLimitFollowsTheGrant(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	inf := math.Inf(1)
	type set struct {
		at    time.Duration // from t0
		grant float64       // ≤ 0: unlimited
	}
	cases := []struct {
		name string
		sets []set
		at   time.Duration
		want float64
	}{
		{"first grant: from zero", []set{{0, 6000}}, 0, 0},
		{"first grant: half way after half a window", []set{{0, 6000}}, ownWindowSize / 2, 3000},
		{"first grant: all of it after a window", []set{{0, 6000}}, ownWindowSize, 6000},
		{"lowered: from the old grant", []set{{-2 * ownWindowSize, 6000}, {0, 2000}}, 0, 6000},
		{"lowered: a quarter of the way", []set{{-2 * ownWindowSize, 6000}, {0, 2000}}, ownWindowSize / 4, 5000},
		{"lowered: all of it after a window", []set{{-2 * ownWindowSize, 6000}, {0, 2000}}, ownWindowSize, 2000},
		{"raised: from the old grant", []set{{-2 * ownWindowSize, 2000}, {0, 6000}}, 0, 2000},
		{"raised: a quarter of the way", []set{{-2 * ownWindowSize, 2000}, {0, 6000}}, ownWindowSize / 4, 3000},
		{"raised: all of it after a window", []set{{-2 * ownWindowSize, 2000}, {0, 6000}}, 2 * ownWindowSize, 6000},
		{"raised mid-way: from where it stood", []set{{-2 * ownWindowSize, 2000}, {0, 6000}, {ownWindowSize / 2, 10000}}, ownWindowSize / 2, 4000},
		{"lowered mid-way: from where it stood", []set{{-2 * ownWindowSize, 2000}, {0, 6000}, {ownWindowSize / 2, 3000}}, ownWindowSize / 2, 4000},
		{"lowered mid-way: the mean a half window on", []set{{-2 * ownWindowSize, 2000}, {0, 6000}, {ownWindowSize / 2, 3000}}, ownWindowSize, 4500},
		{"a grant going up and down keeps its mean", []set{{-2 * ownWindowSize, 2000}, {0, 3000}, {ownWindowSize / 4, 2000}, {ownWindowSize / 2, 3000}, {3 * ownWindowSize / 4, 2000}}, ownWindowSize, 2500},
		{"a grant going up and down: up again, the mean", []set{{-2 * ownWindowSize, 2000}, {0, 3000}, {ownWindowSize / 4, 2000}, {ownWindowSize / 2, 3000}, {3 * ownWindowSize / 4, 2000}, {ownWindowSize, 3000}}, ownWindowSize, 2500},
		{"before any grant: unlimited", nil, 0, inf},
		{"unlimited: at once", []set{{-2 * ownWindowSize, 2000}, {0, 0}}, 0, inf},
		{"a grant after unlimited holds at once", []set{{-2 * ownWindowSize, 0}, {0, 2000}}, 0, 2000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var l ownLimit
			for _, s := range c.sets {
				l.set(t0.Add(s.at), s.grant)
			}
			if got := l.value(t0.Add(c.at)); math.Abs(got-c.want) > 1e-6 && !(math.IsInf(got, 1) && math.IsInf(c.want, 1)) {
				t.Fatalf("limit %g, want %g", got, c.want)
			}
		})
	}
}

// TestSetRatesGrowsTheOwnWindow: through SetRates, a grant reaches the own window over a window
// (its mean) while the buckets take it at once: a raise is what the others' shrinking minutes free
// up, and a lowered pod's own past sends fill its part of the minute as they leave it.
func TestSetRatesGrowsTheOwnWindow(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 600, TokensPerMinute: 200_000})
	e.SetRates(60, 100_000, 0)
	e.own.mu.Lock()
	e.own.rpm.grants[0].at = e.own.rpm.grants[0].at.Add(-2 * ownWindowSize) // grown into
	e.own.tpm.grants[0].at = e.own.tpm.grants[0].at.Add(-2 * ownWindowSize)
	e.own.mu.Unlock()
	if rpm, tpm, _ := e.own.limits(time.Now()); rpm != 60 || tpm != 100_000 {
		t.Fatalf("own limits %g/%g after a window, want 60/100000", rpm, tpm)
	}
	// From 60/100000, raised and then lowered: the buckets take each grant at once, the own window
	// starts where it stood (about 60/100000) and holds the new grant a window later.
	for _, g := range []struct {
		what     string
		rpm, tpm float64
	}{{"raise", 120, 200_000}, {"lowering", 30, 50_000}} {
		e.SetRates(g.rpm, g.tpm, 0)
		if rpm, tpm, _ := e.Rates(); rpm != g.rpm || tpm != g.tpm {
			t.Fatalf("bucket rates %g/%g right after a %s, want %g/%g", rpm, tpm, g.what, g.rpm, g.tpm)
		}
		if rpm, tpm, _ := e.own.limits(time.Now()); rpm < 60 || rpm > 62 || tpm < 100_000 || tpm > 103_000 {
			t.Fatalf("own limits %g/%g right after a %s, want about 60/100000 (on the way)", rpm, tpm, g.what)
		}
		if rpm, tpm, _ := e.own.limits(time.Now().Add(ownWindowSize)); rpm != g.rpm || tpm != g.tpm {
			t.Fatalf("own limits %g/%g a window after a %s, want %g/%g", rpm, tpm, g.what, g.rpm, g.tpm)
		}
	}
}

// TestLeaseSizesTheBurst: under a lease the token bucket is sized by the grant's batch size (or
// the lease's burst when larger), not by the Job's static batch cap: every holder's bucket can be
// full at a minute's start, and static caps of 25,000 tokens at each were what went over the
// key's minute when grants changed. MaxBatchTokens (what a pod reports to the lease service)
// follows.
func TestLeaseSizesTheBurst(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 600, TokensPerMinute: 2_000_000})
	static := e.MaxBatchTokens() // 100,000
	for _, c := range []struct {
		name      string
		rpm, tpm  float64
		burst     int
		wantBurst int
	}{
		{"a tenth of the static budget", 60, 200_000, 0, 10_000},
		{"the lease's burst when larger", 60, 200_000, 15_000, 15_000},
		{"a small grant: one largest input", 600, 30_000, 1, MaxInputTokens},
		{"a grant above the static budget: the static cap", 600, 4_000_000, 0, static},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.SetRates(c.rpm, c.tpm, c.burst)
			if _, _, burst := e.Rates(); burst != c.wantBurst {
				t.Fatalf("burst %d, want %d (static cap %d)", burst, c.wantBurst, static)
			}
			if got, want := e.MaxBatchTokens(), min(static, batchTokensFor(c.tpm, c.rpm)); got != want {
				t.Fatalf("MaxBatchTokens %d, want %d", got, want)
			}
		})
	}
	e.SetRates(0, 0, 0)
	if got := e.MaxBatchTokens(); got != static {
		t.Fatalf("MaxBatchTokens %d under an unlimited grant, want the static %d", got, static)
	}
}

// TestBatchAboveALoweredBurstStillGoes: a batch packed for a larger grant is drawn from a
// smaller bucket in pieces instead of failing (a lowered grant lowers the burst under batches
// already packed).
func TestBatchAboveALoweredBurstStillGoes(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 6000, TokensPerMinute: 120_000_000})
	e.SetRates(6000, 120_000_000, 0) // a burst of 290,000 tokens refilled in 0.15 s
	_, _, burst := e.Rates()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.wait(ctx, 3*burst+1); err != nil {
		t.Fatalf("drawing %d tokens from a bucket of %d: %v", 3*burst+1, burst, err)
	}
}

// simulateGrantChange runs pods that share a token budget, each always busy, paced by a token
// bucket at its grant (burst: one batch, three seconds of the grant, as SetRates sizes it) and by
// its own window, on a synthetic clock, through one change of the holders at 3 minutes: with
// departure, pod 0 finishes and the others are raised to a third each; otherwise a fourth pod
// arrives and the first three are lowered to a fourth. With grow, the own windows follow the
// grants as SetRates makes them (ownLimit); without, they take every grant at once. It returns
// the most tokens sent in any 60 s (the provider's minute) from the change on.
func simulateGrantChange(departure, grow bool) int {
	const budget = 1_200_000.0
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	type pod struct {
		bucket *rate.Limiter
		own    ownWindow
		grant  float64
		active bool
		paid   bool
	}
	setGrant := func(p *pod, now time.Time, g float64) {
		p.bucket = grantBucket(p.bucket, now, g, max(MaxInputTokens, int(g/20)))
		p.grant = g
		if grow {
			p.own.setGrant(now, 0, g)
		} else {
			p.own.tpm = ownLimit{grants: []ownGrant{{at: now.Add(-time.Hour), v: g}}}
		}
	}
	n := 3
	if departure {
		n = 4
	}
	ps := make([]*pod, 4)
	for i := range ps {
		ps[i] = &pod{}
	}
	for i := range n {
		ps[i].active = true
		setGrant(ps[i], t0, budget/float64(n))
	}
	type sent struct {
		at     time.Time
		tokens int
	}
	var log []sent
	peak, inWindow, head := 0, 0, 0
	change := t0.Add(3 * time.Minute)
	changed := false
	for t := t0; t.Before(t0.Add(6 * time.Minute)); t = t.Add(10 * time.Millisecond) {
		if !changed && !t.Before(change) {
			changed = true
			if departure {
				ps[0].active = false
				for _, p := range ps[1:] {
					setGrant(p, t, budget/3)
				}
			} else {
				for _, p := range ps[:3] {
					setGrant(p, t, budget/4)
				}
				ps[3].active = true
				setGrant(ps[3], t, budget/4)
			}
		}
		for _, p := range ps {
			if !p.active {
				continue
			}
			size := p.bucket.Burst()
			if !p.paid {
				if !p.bucket.AllowN(t, size) {
					continue
				}
				p.paid = true
			}
			if s, _ := p.own.admit(t, size, 0, p.own.tpm.value(t), p.own.tpm.settled(t)); s == nil {
				continue
			}
			p.paid = false
			log = append(log, sent{t, size})
			inWindow += size
			for !log[head].at.After(t.Add(-time.Minute)) {
				inWindow -= log[head].tokens
				head++
			}
			if changed {
				peak = max(peak, inWindow)
			}
		}
	}
	return peak
}

// TestGrownGrantsKeepTheMinuteThroughChanges confirms where the fleet's 429s came from when
// holders change and that growing into raised grants fixes it: when a pod finishes, its last
// minute of sends stays in the provider's window for a minute, and the others taking their
// raised grants at once put more than the budget into it; growing over one window keeps every
// minute within the budget, departures and arrivals alike, while still using most of it.
func TestGrownGrantsKeepTheMinuteThroughChanges(t *testing.T) {
	const budget = 1_200_000
	if peak := simulateGrantChange(true, false); peak <= budget*102/100 {
		t.Errorf("a departure with grants taken at once peaked at %d tokens a minute, within 2 %% of the budget %d: the cause is elsewhere", peak, budget)
	}
	for _, departure := range []bool{true, false} {
		peak := simulateGrantChange(departure, true)
		if peak > budget {
			t.Errorf("departure %v: with grown grants the pods peaked at %d tokens a minute, above the budget %d", departure, peak, budget)
		}
		if peak < budget*9/10 {
			t.Errorf("departure %v: with grown grants the pods peaked at only %d tokens a minute (budget %d): growing starves them", departure, peak, budget)
		}
	}
}
