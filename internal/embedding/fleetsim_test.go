package embedding

import (
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// benchFleet is the bench's fleet phase (bench.go, `go run ./bench -fleet-only`) reduced to its
// rates: four ingestions of 4, 3, 2 and 1 chunks of ≈ 501,000 tokens each (2,000 rows), started at
// +0 s, +0 s, +10 s and +20 s, parallelism 2, under a key of 1,003,584 tokens a minute.
type benchFleet struct {
	chunks []int
	starts []time.Duration
	tokens int // per chunk
	budget float64
	// startup is how long a chunk pod takes from its Job's creation (its predecessor's end, or
	// the ingestion's start) to its first lease.
	startup time.Duration
	// inherit: a pod that replaces a finished one of its ingestion takes over the predecessor's
	// own window (its sends and grant history) instead of starting empty.
	inherit bool
	// noBucket: the own window alone paces the pod (no token bucket under a lease).
	noBucket bool
	// noRaise: a departure leaves the others' grants as they are (its share idles until the
	// next arrival's regrant).
	noRaise bool
	// burst: the token bucket's burst in seconds of the grant (0: one batch, as SetRates sizes it).
	burst float64
	// noSplit: a batch that does not fit the own window's room waits until all of it fits (before
	// waitOwnFit sent the inputs that fit and kept the rest for the next request).
	noSplit bool
}

// fleetRun is what simulate measured.
type fleetRun struct {
	wall     time.Duration // first start → last chunk's last send
	floor    time.Duration // all tokens at the budget
	peak     int           // most tokens in any 60 s (the provider's sliding minute)
	peakAt   time.Duration
	idleFrac float64 // share of the budget×wall not sent
	bins     []int   // tokens sent in each 10 s
	holders  []int   // active pods at each 10 s bin's start
	sent     int     // tokens sent, of total
	total    int
	sends    []int // each request's tokens
}

// simulate runs the fleet on a synthetic clock in steps of 10 ms with an ideal lease server
// (every active pod gets budget ÷ holders at once on each arrival and departure): each pod packs
// rows of 150–350 tokens into batches for its grant and is paced by its token bucket (burst: one
// batch, as SetRates sizes it) and its own window, as an embedder under a lease is (waitOwnFit:
// a batch in parts when only its first rows fit). The request budget is not modelled: the
// requests reported say what a variant would need of it.
func (f benchFleet) simulate() fleetRun {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	type pod struct {
		ing    int
		left   int
		bucket *rate.Limiter
		own    *ownWindow
		// cur is the batch being sent (the rest of one sent in parts), paid: its tokens were
		// drawn from the bucket.
		cur   Batch
		paid  bool
		owed  int // of cur's tokens, still to draw from the bucket
		grant float64
		since time.Time
	}
	rows := rand.New(rand.NewPCG(26, 7)) // row sizes: 150–350 tokens, as the bench's varied rows
	var active []*pod
	pending := make([]int, len(f.chunks)) // chunks not started
	running := make([]int, len(f.chunks))
	var starts []struct {
		at  time.Time
		ing int
	}
	copy(pending, f.chunks)
	total := 0
	for i, n := range f.chunks {
		total += n * f.tokens
		for range min(n, 2) {
			starts = append(starts, struct {
				at  time.Time
				ing int
			}{t0.Add(f.starts[i] + f.startup), i})
			pending[i]--
			running[i]++
		}
	}
	released := map[int][]*ownWindow{} // windows left by finished pods, per ingestion
	regrant := func(now time.Time) {
		g := f.budget / float64(len(active))
		for _, p := range active {
			batch := max(MaxInputTokens, int(g/20))
			if f.burst > 0 {
				batch = max(batch, int(g*f.burst/60))
			}
			p.bucket = grantBucket(p.bucket, now, g, batch)
			p.grant = g
			p.own.setGrant(now, 0, g)
		}
	}
	type sent struct {
		at     time.Time
		tokens int
	}
	var log []sent
	peak, inWindow, head, sentTotal := 0, 0, 0, 0
	var last time.Time
	var peakAtT time.Duration
	var bins, holders []int
	for t := t0; ; t = t.Add(10 * time.Millisecond) {
		if b := int(t.Sub(t0) / (10 * time.Second)); b >= len(bins) {
			bins = append(bins, 0)
			holders = append(holders, len(active))
		}
		changed := false
		for i := 0; i < len(starts); i++ {
			if !starts[i].at.After(t) {
				p := &pod{ing: starts[i].ing, left: f.tokens, own: &ownWindow{}, since: t}
				if ws := released[p.ing]; f.inherit && len(ws) > 0 {
					p.own, released[p.ing] = ws[0], ws[1:]
				}
				active = append(active, p)
				starts = append(starts[:i], starts[i+1:]...)
				i--
				changed = true
			}
		}
		if changed {
			regrant(t)
		}
		if len(active) == 0 && len(starts) == 0 {
			break
		}
		for i := 0; i < len(active); i++ {
			p := active[i]
			if len(p.cur.Inputs) == 0 {
				// A new batch of rows, packed for the grant as the Batcher packs it.
				limit := min(25_000, max(MaxInputTokens, int(p.grant/20)))
				p.cur, p.paid = Batch{}, false
				for p.cur.Tokens < p.left {
					n := min(150+rows.IntN(201), p.left-p.cur.Tokens)
					if len(p.cur.Inputs) > 0 && p.cur.Tokens+n > limit {
						break
					}
					p.cur.Inputs = append(p.cur.Inputs, Input{})
					p.cur.counts = append(p.cur.counts, n)
					p.cur.Tokens += n
				}
			}
			if !f.noBucket && !p.paid {
				// Drawn in pieces of the burst as it is now, as waitN does (a batch packed for a
				// higher grant can be larger than a lowered burst).
				if p.owed == 0 {
					p.owed = p.cur.Tokens
				}
				take := min(p.owed, p.bucket.Burst())
				if !p.bucket.AllowN(t, take) {
					continue
				}
				if p.owed -= take; p.owed > 0 {
					continue
				}
				p.paid = true
			}
			// As waitOwnFit: all of it within the limit, else the first inputs that fit (a quarter of
			// it at least), else, settled into an empty window, what admitLone takes.
			lim := p.own.tpm.value(t)
			part := p.cur
			s, _ := p.own.admit(t, part.Tokens, 0, lim, false)
			if s == nil && !f.noSplit {
				if k, n := p.own.fitting(t, p.cur, 0, lim); k > 0 {
					if s, _ = p.own.admit(t, n, 0, lim, false); s != nil {
						part, _ = p.cur.cut(k)
					}
				}
			}
			if s == nil && p.own.tpm.settled(t) {
				var k int
				if s, k = p.own.admitLone(t, p.cur, lim); s != nil {
					part, _ = p.cur.cut(k)
				}
			}
			if s == nil {
				continue
			}
			_, p.cur = p.cur.cut(len(part.Inputs))
			size := part.Tokens
			p.left -= size
			sentTotal += size
			bins[len(bins)-1] += size
			log = append(log, sent{t, size})
			inWindow += size
			for !log[head].at.After(t.Add(-time.Minute)) {
				inWindow -= log[head].tokens
				head++
			}
			if inWindow > peak {
				peak, peakAtT = inWindow, t.Sub(t0)
			}
			last = t
			if p.left == 0 {
				active = append(active[:i], active[i+1:]...)
				i--
				released[p.ing] = append(released[p.ing], p.own)
				running[p.ing]--
				if pending[p.ing] > 0 {
					pending[p.ing]--
					running[p.ing]++
					starts = append(starts, struct {
						at  time.Time
						ing int
					}{t.Add(f.startup), p.ing})
				}
				if len(active) > 0 && !f.noRaise {
					regrant(t)
				}
			}
		}
	}
	wall := last.Sub(t0)
	floor := time.Duration(float64(total) / f.budget * float64(time.Minute))
	sends := make([]int, len(log))
	for i, x := range log {
		sends[i] = x.tokens
	}
	return fleetRun{wall: wall, floor: floor, peak: peak, peakAt: peakAtT, sent: sentTotal, total: total, bins: bins, holders: holders, sends: sends,
		idleFrac: 1 - float64(sentTotal)/(f.budget*wall.Minutes())}
}

// BenchmarkSimulatedBenchFleet measures where the bench's fleet phase loses time against its
// floor (docs/benchmarks.md "Fleet" and the note below it), on a synthetic clock so each cause
// can be switched off alone. It reports wall ÷ floor, the busiest minute ÷ the budget (above 1:
// the provider would answer 429), the unsent share of budget × wall and the requests sent; -v
// logs each variant's tokens per 10 s against the budget's. Figures, not pass/fail; the note in
// docs/benchmarks.md says what they showed.
//
//	go test -run '^$' -bench SimulatedBenchFleet -benchtime 1x -v ./internal/embedding/
func BenchmarkSimulatedBenchFleet(b *testing.B) {
	base := benchFleet{chunks: []int{4, 3, 2, 1}, starts: []time.Duration{0, 0, 10 * time.Second, 20 * time.Second},
		tokens: 501_000, budget: 1_003_584, startup: 5 * time.Second}
	for _, c := range []struct {
		name string
		f    func(benchFleet) benchFleet
	}{
		{"as-on-main", func(f benchFleet) benchFleet { return f }},
		{"no-pod-start-up", func(f benchFleet) benchFleet { f.startup = 0; return f }},
		{"own-window-alone", func(f benchFleet) benchFleet { f.noBucket = true; return f }},
		{"bucket-burst-10s", func(f benchFleet) benchFleet { f.burst = 10; return f }},
		{"no-raise-on-departure", func(f benchFleet) benchFleet { f.noRaise = true; return f }},
		{"all-start-at-once", func(f benchFleet) benchFleet { f.starts = []time.Duration{0, 0, 0, 0}; return f }},
		{"all-at-once-no-start-up", func(f benchFleet) benchFleet {
			f.starts, f.startup = []time.Duration{0, 0, 0, 0}, 0
			return f
		}},
		{"no-split-to-fit", func(f benchFleet) benchFleet { f.noSplit = true; return f }},
		{"inherit-predecessor-window", func(f benchFleet) benchFleet { f.inherit = true; return f }},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := c.f(base)
			var r fleetRun
			for range b.N {
				r = f.simulate()
			}
			if r.sent != r.total {
				b.Fatalf("sent %d of %d tokens", r.sent, r.total)
			}
			b.ReportMetric(r.wall.Seconds()/r.floor.Seconds(), "wall/floor")
			b.ReportMetric(float64(r.peak)/f.budget, "peak/budget")
			b.ReportMetric(100*r.idleFrac, "%unsent")
			b.ReportMetric(float64(len(r.sends)), "requests")
			b.Logf("wall %v, floor %v, busiest minute %d tokens ending at +%v, budget %.0f",
				r.wall.Round(time.Second), r.floor.Round(time.Second), r.peak, r.peakAt.Round(10*time.Millisecond), f.budget)
			for i, sent := range r.bins {
				b.Logf("  +%3ds %d holders: %5.1f %% of the budget's 10 s", i*10, r.holders[i], 100*float64(sent)/(f.budget/6))
			}
		})
	}
}

// grantBucket sets a simulated pod's token bucket to a grant of g tokens a minute with a burst
// of batch, as SetRates does: a new one (b nil) starts empty at its first grant.
func grantBucket(b *rate.Limiter, now time.Time, g float64, batch int) *rate.Limiter {
	if b == nil {
		b = rate.NewLimiter(rate.Limit(g/60), batch)
		b.AllowN(now, batch) // empty at the first grant
		return b
	}
	b.SetLimitAt(now, rate.Limit(g/60))
	b.SetBurstAt(now, batch)
	return b
}
