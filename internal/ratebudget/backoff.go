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
}

const (
	// BackoffFloor: a budget never drops below this share of its declaration.
	BackoffFloor = 0.1
	// backoffCut is the multiplicative decrease on sustained 429s.
	backoffCut = 0.5
	// backoffStep is the additive increase per quiet round.
	backoffStep = 0.05
	// sustained429Share: a round whose 429s are above this share of its requests counts as
	// rate limited; a stray 429 at a window's edge does not.
	sustained429Share = 0.02
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
	limited := rateLimited > 0 && float64(rateLimited) > sustained429Share*float64(max(requests, 1))
	switch {
	case limited && b.cooldown == 0:
		b.Factor = max(BackoffFloor, b.Factor*backoffCut)
		b.cooldown = cutCooldown
	case limited:
		b.cooldown--
	default:
		if b.cooldown > 0 {
			b.cooldown--
		}
		b.Factor = min(1, b.Factor+backoffStep)
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
