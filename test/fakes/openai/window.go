package openai

import "time"

// window enforces RPM and TPM as a sliding window: a request arriving at t is accepted when the
// requests and tokens accepted in (t-size, t], counting itself, stay within the limits. Refused
// requests are not counted. Because the check runs on every accepted request in arrival order, the
// busiest window of accepted traffic is always one ending at an accepted request, and its load is
// known at that moment: the peaks below are exact, not sampled.
//
// Times are offsets from the server's start on the monotonic clock. Not safe for concurrent use;
// the Server holds its mutex.
type window struct {
	size     time.Duration
	rpm, tpm int // 0 means unlimited

	events []event // accepted requests still inside the window, oldest first, from head
	head   int
	tokens int // sum of tokens of events[head:]

	peakRequests, peakTokens int
}

type event struct {
	at     time.Duration
	tokens int
}

// verdict says why a request was refused and when it could next succeed.
type verdict struct {
	ok       bool
	limit    string        // "requests" or "tokens" when refused
	wait     time.Duration // time until the request would fit; 0 if it never can
	tooLarge bool          // the request alone exceeds TPM
}

func (w *window) prune(now time.Duration) {
	cut := now - w.size
	for w.head < len(w.events) && w.events[w.head].at <= cut {
		w.tokens -= w.events[w.head].tokens
		w.head++
	}
	// Compact once the dead prefix dominates, so memory stays proportional to the window.
	if w.head > 1024 && w.head*2 > len(w.events) {
		n := copy(w.events, w.events[w.head:])
		w.events = w.events[:n]
		w.head = 0
	}
}

func (w *window) count() int { return len(w.events) - w.head }

// admit decides on a request of tok tokens arriving at now and, if it fits, records it.
// now must not go backwards between calls.
func (w *window) admit(now time.Duration, tok int) verdict {
	w.prune(now)
	if w.tpm > 0 && tok > w.tpm {
		return verdict{limit: "tokens", tooLarge: true}
	}
	var v verdict
	if n := w.count(); w.rpm > 0 && n+1 > w.rpm {
		// The (n-rpm)th oldest must leave before one more fits.
		e := w.events[w.head+n-w.rpm]
		v = verdict{limit: "requests", wait: e.at + w.size - now}
	}
	if w.tpm > 0 && w.tokens+tok > w.tpm {
		// The oldest requests must leave until enough tokens are freed; tok <= tpm, so
		// freeing all of them is always enough.
		need, freed := w.tokens+tok-w.tpm, 0
		for i := w.head; i < len(w.events); i++ {
			freed += w.events[i].tokens
			if freed >= need {
				if wait := w.events[i].at + w.size - now; wait > v.wait {
					v = verdict{limit: "tokens", wait: wait}
				}
				break
			}
		}
	}
	if v.limit != "" {
		return v
	}
	w.events = append(w.events, event{at: now, tokens: tok})
	w.tokens += tok
	if c := w.count(); c > w.peakRequests {
		w.peakRequests = c
	}
	if w.tokens > w.peakTokens {
		w.peakTokens = w.tokens
	}
	return verdict{ok: true}
}

// nextFree is how long until the oldest accepted request leaves the window, which is when the
// remaining budget next grows; 0 with an empty window.
func (w *window) nextFree(now time.Duration) time.Duration {
	w.prune(now)
	if w.count() == 0 {
		return 0
	}
	return w.events[w.head].at + w.size - now
}
