package embedding

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ownWindowSize is the sliding window a pod under a lease keeps its own sends in. The provider
// meters a sliding minute; a token bucket paced at the grant can still put its grant plus one
// request into some minute (the bucket's content at the minute's start), and the pods of a budget
// each doing so at once went over the key's limit. The extra second covers the requests' varying
// latency between this pod's clock and the provider's.
const ownWindowSize = 61 * time.Second

// ownWindow is what one pod sent in the last ownWindowSize: under a lease its requests and tokens
// there stay within its grant per minute, so the grants adding up to the budget keep the key's
// minute within it whatever the buckets hold.
type ownWindow struct {
	mu     sync.Mutex
	events []*ownSend // oldest first
}

type ownSend struct {
	at     time.Time
	tokens int
	// refunded: the provider refused it (429), so it counts for nothing.
	refunded bool
}

// admit records a request of n tokens at now when it fits rpm and tpm per minute (≤ 0: no limit)
// with what the window holds, and returns it; otherwise it returns how long until the oldest
// send leaves the window. A request always fits an empty window (a grant below one request or
// one batch per minute then sends one at a time, paced by the buckets).
func (w *ownWindow) admit(now time.Time, n int, rpm, tpm float64) (*ownSend, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := 0
	for i < len(w.events) && !w.events[i].at.After(now.Add(-ownWindowSize)) {
		i++
	}
	w.events = w.events[i:]
	reqs, toks := 0, 0
	for _, e := range w.events {
		if !e.refunded {
			reqs++
			toks += e.tokens
		}
	}
	if reqs == 0 || (rpm <= 0 || float64(reqs+1) <= rpm) && (tpm <= 0 || float64(toks+n) <= tpm) {
		s := &ownSend{at: now, tokens: n}
		w.events = append(w.events, s)
		return s, 0
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

// waitOwn waits until a request of n tokens fits the pod's own window (under a lease only; nil
// otherwise). It checks again at least every leaseWaitSlice, so a raised grant takes effect.
func (e *Embedder) waitOwn(ctx context.Context, n int) (*ownSend, error) {
	if !e.leased.Load() {
		return nil, nil
	}
	perMinute := func(l rate.Limit) float64 {
		if l == rate.Inf {
			return 0
		}
		return float64(l) * 60
	}
	var done func()
	defer func() {
		if done != nil {
			done()
		}
	}()
	for {
		s, wait := e.own.admit(time.Now(), n, perMinute(e.requests.Limit()), perMinute(e.tokens.Limit()))
		if s != nil {
			return s, nil
		}
		if done == nil {
			done = e.startWait()
		}
		if err := sleep(ctx, min(leaseWaitSlice, max(time.Millisecond, wait))); err != nil {
			return nil, err
		}
	}
}
