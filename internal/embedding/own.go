package embedding

import (
	"context"
	"math"
	"sync"
	"time"
)

// ownWindowSize is the sliding window a pod under a lease keeps its own sends in. The provider
// meters a sliding minute; a token bucket paced at the grant can still put its grant plus one
// request into some minute (the bucket's content at the minute's start), and the pods of a budget
// each doing so at once went over the key's limit. The extra second covers the requests' varying
// latency between this pod's clock and the provider's.
const ownWindowSize = 61 * time.Second

// ownWindow is what one pod sent in the last ownWindowSize: under a lease its requests and tokens
// there stay within its limits (ownLimit: its grant per minute, grown into after a raise), so the
// grants adding up to the budget keep the key's minute within it whatever the buckets hold.
type ownWindow struct {
	mu     sync.Mutex
	events []*ownSend // oldest first
	// rpm and tpm are the window's limits per minute, following the grant (see setGrant).
	rpm, tpm ownLimit
}

// ownLimit is one of the window's limits: the grant's mean over the last window (no grant counting
// as zero), up and down alike. The provider meters a sliding minute, and what a pod sent under
// its old grant stays in it for a minute: a finished or lowered pod's sends age out over that
// minute, so the capacity a raise (or a newcomer's first grant) hands over frees up at that pace,
// and a lowered pod's own past sends fill its part of the minute the same way. The means of all
// holders' grants (the finished ones' included) add up to the mean of their sum, within the
// budget whenever the grants are; a lowered pod's token bucket still takes the lower grant at
// once, so it sends at the lower rate while its mean comes down, instead of stopping until its
// window has drained below the new grant (which left a minute's capacity unsent at every
// arrival). A ramp restarted at each raise would ratchet down a grant that goes up and down
// with its holders' demand; the mean does not.
type ownLimit struct {
	// grants are the grants set (per minute; +Inf: unlimited) since the window before the
	// latest, oldest first, each from its at until the next one's.
	grants []ownGrant
}

type ownGrant struct {
	at time.Time
	v  float64
}

// value is the limit at now: +Inf (unlimited) before any grant or under an unlimited one.
func (l ownLimit) value(now time.Time) float64 {
	if len(l.grants) == 0 {
		return math.Inf(1)
	}
	cur := l.grants[len(l.grants)-1].v
	if math.IsInf(cur, 1) {
		return cur
	}
	from := now.Add(-ownWindowSize)
	var sum float64 // grant × seconds over (from, now]; before the first grant: zero
	for i, g := range l.grants {
		end := now
		if i+1 < len(l.grants) {
			end = l.grants[i+1].at
		}
		start := g.at
		if start.Before(from) {
			start = from
		}
		if !end.After(start) {
			continue
		}
		v := g.v
		if math.IsInf(v, 1) {
			v = cur // an unlimited stretch says nothing of the others' minutes: the grant holds
		}
		sum += v * end.Sub(start).Seconds()
	}
	return sum / ownWindowSize.Seconds()
}

// settled reports whether the pod has held grants for a whole window (or has none, or an
// unlimited one): its limit no longer counts the time before its first grant as zero, so it is no
// newcomer whose share the others may still hold. Not "the latest grant was set a window ago":
// every renewal sets the grant again (the same, or a little different as holders come and go),
// so a renewed pod never settled, and one granted less than one request or input a minute never
// sent at all.
func (l ownLimit) settled(now time.Time) bool {
	if len(l.grants) == 0 {
		return true
	}
	return math.IsInf(l.grants[len(l.grants)-1].v, 1) || !l.grants[0].at.After(now.Add(-ownWindowSize))
}

// set changes the limit at now to perMinute (≤ 0: unlimited).
func (l *ownLimit) set(now time.Time, perMinute float64) {
	if perMinute <= 0 {
		perMinute = math.Inf(1)
	}
	// Keep the grants still inside the window, and the one in effect at its start.
	from := now.Add(-ownWindowSize)
	i := 0
	for i+1 < len(l.grants) && !l.grants[i+1].at.After(from) {
		i++
	}
	l.grants = append(l.grants[i:], ownGrant{at: now, v: perMinute})
}

// setGrant makes rpm and tpm (per minute, ≤ 0: unlimited) the window's grants from now: lower
// ones hold at once, higher ones as the mean over the window grows (ownLimit).
func (w *ownWindow) setGrant(now time.Time, rpm, tpm float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rpm.set(now, rpm)
	w.tpm.set(now, tpm)
}

// limits are the window's limits at now, 0 meaning unlimited (admit's convention), and whether a
// request of any size may go into an empty window (lone: see admit).
func (w *ownWindow) limits(now time.Time) (rpm, tpm float64, lone bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	unl := func(v float64) float64 {
		switch {
		case math.IsInf(v, 1):
			return 0
		case v <= 0:
			// A grant grown from zero to zero (the instant of the first grant) is the tightest
			// limit, not admit's "no limit".
			return math.SmallestNonzeroFloat64
		}
		return v
	}
	return unl(w.rpm.value(now)), unl(w.tpm.value(now)), w.rpm.settled(now) && w.tpm.settled(now)
}

// ownGrowSlice is how often a request waiting for the own window checks again: the limit grows
// (a raise, a newcomer) between sends leaving the window, and a request should follow it closely.
const ownGrowSlice = 200 * time.Millisecond

type ownSend struct {
	at     time.Time
	tokens int
	// refunded: the provider refused it (429), so it counts for nothing.
	refunded bool
}

// admit records a request of n tokens at now when it fits rpm and tpm per minute (≤ 0: no limit)
// with what the window holds, and returns it; otherwise it returns how long until the oldest
// send leaves the window (0 when it is empty: only the limit's growth can admit it). With lone,
// a request fits an empty window whatever its size: a pod that has held grants for a whole window
// but is granted less than one request or one batch per minute then sends one at a time, paced by
// the buckets.
// Not before: a newcomer's limit grows from zero, and a newcomer whose grant is still capped at
// almost nothing (the others have not renewed yet) must wait for its share, or every pod start
// would put one request above the budget into the provider's minute.
func (w *ownWindow) admit(now time.Time, n int, rpm, tpm float64, lone bool) (*ownSend, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := 0
	for i < len(w.events) && !w.events[i].at.After(now.Add(-ownWindowSize)) {
		i++
	}
	w.events = w.events[i:]
	reqs, toks := w.live(now)
	if reqs == 0 && lone || (rpm <= 0 || float64(reqs+1) <= rpm) && (tpm <= 0 || float64(toks+n) <= tpm) {
		s := &ownSend{at: now, tokens: n}
		w.events = append(w.events, s)
		return s, 0
	}
	if len(w.events) == 0 {
		return nil, 0
	}
	return nil, w.events[0].at.Add(ownWindowSize).Sub(now)
}

func (w *ownWindow) refund(s *ownSend) {
	if s == nil {
		return
	}
	w.mu.Lock()
	s.refunded = true
	w.mu.Unlock()
}

// waitOwnFit waits until b fits the pod's own window (under a lease only; nil otherwise) and
// returns its place and len(b.Inputs); or, when the window has room for b's first inputs but not
// for all of them, at least a quarter of b's tokens (and b was made by a Batcher, so its inputs'
// counts are known), admits those and returns their number; or, when the pod is settled and its
// window empty, admits what admitLone takes.
func (e *Embedder) waitOwnFit(ctx context.Context, b Batch) (*ownSend, int, error) {
	if !e.leased.Load() {
		return nil, len(b.Inputs), nil
	}
	var done func()
	defer func() {
		if done != nil {
			done()
		}
	}()
	for {
		now := time.Now()
		rpm, tpm, lone := e.own.limits(now)
		s, wait := e.own.admit(now, b.Tokens, rpm, tpm, false)
		if s != nil {
			return s, len(b.Inputs), nil
		}
		if k, n := e.own.fitting(now, b, rpm, tpm); k > 0 {
			if s, _ := e.own.admit(now, n, rpm, tpm, false); s != nil {
				return s, k, nil
			}
		}
		if lone {
			if s, k := e.own.admitLone(now, b, tpm); s != nil {
				return s, k, nil
			}
		}
		if done == nil {
			done = e.startWait()
		}
		if wait <= 0 || wait > ownGrowSlice {
			wait = ownGrowSlice // the limit grows meanwhile
		}
		if err := sleep(ctx, max(time.Millisecond, wait)); err != nil {
			return nil, 0, err
		}
	}
}

// admitLone admits into an empty window (lone: see admit) b's first inputs, as many as fit tpm (≤ 0:
// no limit) and at least one, and returns their number; all of b when its inputs' counts are
// unknown. Only what nothing smaller can avoid goes above the limit: a batch packed for a higher
// grant before it was lowered sends a part, and a grant below one input sends one input.
func (w *ownWindow) admitLone(now time.Time, b Batch, tpm float64) (*ownSend, int) {
	k, n := len(b.Inputs), b.Tokens
	if tpm > 0 && float64(n) > tpm && len(b.counts) == len(b.Inputs) && len(b.counts) > 1 {
		if k, n = prefix(b.counts, tpm); k == 0 {
			k, n = 1, b.counts[0]
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if reqs, _ := w.live(now); reqs > 0 {
		return nil, 0
	}
	s := &ownSend{at: now, tokens: n}
	w.events = append(w.events, s)
	return s, k
}

// fitting is how many of b's first inputs (k, n tokens) fit the room the window has at now under
// tpm, when that is not all of them and at least a quarter of b's tokens; 0 otherwise (also when
// another request does not fit rpm, or b's inputs' counts are unknown).
func (w *ownWindow) fitting(now time.Time, b Batch, rpm, tpm float64) (k, n int) {
	if tpm <= 0 || len(b.Inputs) < 2 || len(b.counts) != len(b.Inputs) {
		return 0, 0
	}
	w.mu.Lock()
	reqs, toks := w.live(now)
	w.mu.Unlock()
	if rpm > 0 && float64(reqs+1) > rpm {
		return 0, 0
	}
	if k, n = prefix(b.counts, tpm-float64(toks)); k == len(b.counts) || 4*n < b.Tokens {
		return 0, 0
	}
	return k, n
}

// live counts the sends in the window at now that the provider counts (a refused one does not).
// Called with w.mu held.
func (w *ownWindow) live(now time.Time) (reqs, toks int) {
	for _, e := range w.events {
		if !e.refunded && e.at.After(now.Add(-ownWindowSize)) {
			reqs++
			toks += e.tokens
		}
	}
	return reqs, toks
}

// prefix is how many of counts' first entries add up to at most limit, and their sum.
func prefix(counts []int, limit float64) (k, n int) {
	for k < len(counts) && float64(n+counts[k]) <= limit {
		n += counts[k]
		k++
	}
	return k, n
}

// waitOwn waits until a request of n tokens fits the pod's own window (under a lease only; nil
// otherwise): waitOwnFit for a request whose inputs' counts are unknown, so it goes whole.
func (e *Embedder) waitOwn(ctx context.Context, n int) (*ownSend, error) {
	s, _, err := e.waitOwnFit(ctx, Batch{Tokens: n})
	return s, err
}
