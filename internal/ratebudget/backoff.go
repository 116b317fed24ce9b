package ratebudget

// Backoff is the AIMD factor applied to a declared budget: a budget declared above what the
// provider really allows makes its holders collect 429s, so the effective budget is halved while
// 429s keep coming and recovers step by step when they stop. The zero value is not usable; start
// from NewBackoff.
type Backoff struct {
	// Factor multiplies the declared budget, in [Floor, 1].
	Factor float64
	// cooldown counts the rounds left before another cut: a cut needs a round of renewals to
	// reach the pods, and 429s still in flight must not cut again.
	cooldown int
	// recent holds the last sustainedRounds rounds' requests and 429s (a ring, next at pos).
	recent [sustainedRounds]struct{ requests, limited int64 }
	pos    int
}

const (
	// BackoffFloor: a budget never drops below this share of its declaration.
	BackoffFloor = 0.1
	// backoffCut is the multiplicative decrease on sustained 429s.
	backoffCut = 0.5
	// backoffStep is the additive increase per quiet round.
	backoffStep = 0.05
	// sustained429Share: the recent rounds count as rate limited when their 429s are at least
	// this share of their requests... Holders paced within their grants still see a few 429s
	// when grants change (arrivals, departures: the provider's minute holds the old grants'
	// sends for a while); at 2 % those halved the fleet bench's budget for 1 m 34 s, down to a
	// quarter, which cost more than the 429s, each retried after its Retry-After. A budget
	// declared above the provider's limit by more than this share still collects enough to be
	// cut (TestBackoffConverges); one declared within it costs at most this share in retries.
	sustained429Share = 0.05
	// ...and at least sustained429s of them. A budget split among pods that each pace a few large
	// requests a minute sees a stray 429 at a sliding window's edge now and then; one such 429 in
	// a round of three requests is a third of the round, and halving the whole key's budget for it
	// cost the fleet bench a fifth of its wall time. A budget declared above the provider's limit
	// collects several within the rounds below.
	sustained429s = 3
	// sustainedRounds rounds (renewal periods) are looked at together: 429s spread over them
	// add up, older ones are forgotten.
	sustainedRounds = 6
	// cutCooldown rounds pass between two cuts.
	cutCooldown = 2
)

// NewBackoff returns a factor of 1: the declared budget.
func NewBackoff() Backoff { return Backoff{Factor: 1} }

// Observe records one round (the renewals since the last round): requests sent and how many of
// them the provider answered with 429. It returns the new factor.
func (b *Backoff) Observe(requests, rateLimited int64) float64 {
	if b.Factor <= 0 {
		b.Factor = 1
	}
	b.recent[b.pos] = struct{ requests, limited int64 }{requests, rateLimited}
	b.pos = (b.pos + 1) % sustainedRounds
	var reqs, lim int64
	for _, r := range b.recent {
		reqs += r.requests
		lim += r.limited
	}
	limited := lim >= sustained429s && float64(lim) >= sustained429Share*float64(max(reqs, 1))
	switch {
	case limited && b.cooldown == 0:
		b.Factor = max(BackoffFloor, b.Factor*backoffCut)
		b.cooldown = cutCooldown
		// The 429s counted were answers to the old budget: the next cut needs new ones.
		b.recent = [sustainedRounds]struct{ requests, limited int64 }{}
	case limited:
		b.cooldown--
	default:
		if b.cooldown > 0 {
			b.cooldown--
		}
		// A round with a stray 429 holds the factor; only a quiet one raises it.
		if rateLimited == 0 {
			b.Factor = min(1, b.Factor+backoffStep)
		}
	}
	return b.Factor
}

// Effective is the declared budget times the factor.
func (b Backoff) Effective(declared Rates) Rates {
	f := b.Factor
	if f <= 0 {
		f = 1
	}
	return Rates{RPM: declared.RPM * f, TPM: declared.TPM * f}
}
