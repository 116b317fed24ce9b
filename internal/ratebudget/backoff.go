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
	b.observe(requests, rateLimited, nil)
	return b.Factor
}

// limitedCounts: the 429s of a window are sustained (both thresholds above).
func limitedCounts(requests, limited int64) bool {
	return limited >= sustained429s && float64(limited) >= sustained429Share*float64(max(requests, 1))
}

// observe is Observe; a cut also needs corroborated (nil: always) to agree. It reports whether
// the factor was cut and whether the window counted as rate limited (cut or not).
func (b *Backoff) observe(requests, rateLimited int64, corroborated func() bool) (cut, limited bool) {
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
	limited = limitedCounts(reqs, lim) && (corroborated == nil || corroborated())
	switch {
	case limited && b.cooldown == 0:
		b.Factor = max(BackoffFloor, b.Factor*backoffCut)
		b.cooldown = cutCooldown
		// The 429s counted were answers to the old budget: the next cut needs new ones.
		b.recent = [sustainedRounds]struct{ requests, limited int64 }{}
		return true, true
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
	return false, limited
}

// Counts are what one ingestion's pods reported in a round.
type Counts struct{ Requests, RateLimited int64 }

// Shared is the backoff of a budget that several ingestions (tenants) may draw from. Their
// pods' reports are their word: one tenant reporting nothing but 429s must not throttle the
// others. So the budget's factor is cut only on corroborated 429s: while more than one
// ingestion is active, the window must count as rate limited with any single ingestion's 429s
// left out (whatever one tenant says, the others' own 429s must carry the cut). When all pods
// of an over-limit budget see 429s, each one's are enough and the budget converges as a
// single Backoff does. 429s only one ingestion sees (a liar, or a tenant whose large requests
// alone hit the provider's limit) cut that ingestion's own factor, which scales only its
// pods' grants (GroupFactor). With one active ingestion its share is the whole budget, and the
// budget's factor is cut as before. The zero value is not usable; start from NewShared.
type Shared struct {
	// Budget is the budget's factor, as for a single Backoff.
	Budget Backoff
	// rounds holds the last sustainedRounds rounds' counts by ingestion (a ring, next at pos),
	// for the leave-one-out check.
	rounds [sustainedRounds]map[string]Counts
	pos    int
	// groups are the ingestions' own factors; an ingestion back at 1 is forgotten.
	groups map[string]*Backoff
}

// NewShared returns a factor of 1 for the budget and every ingestion.
func NewShared() Shared { return Shared{Budget: NewBackoff(), groups: map[string]*Backoff{}} }

// GroupFactor is the factor of one ingestion's grants, in [BackoffFloor, 1], on top of the
// budget's.
func (s *Shared) GroupFactor(group string) float64 {
	if g := s.groups[group]; g != nil && g.Factor > 0 {
		return g.Factor
	}
	return 1
}

// Observe records one round: each ingestion's counts, and how many ingestions hold leases of
// the budget now. It returns the budget's factor.
func (s *Shared) Observe(round map[string]Counts, active int) float64 {
	if s.groups == nil {
		s.groups = map[string]*Backoff{}
	}
	s.rounds[s.pos] = round
	s.pos = (s.pos + 1) % sustainedRounds
	var reqs, lim int64
	for _, c := range round {
		reqs += c.Requests
		lim += c.RateLimited
	}
	cut, limited := s.Budget.observe(reqs, lim, func() bool { return active <= 1 || s.corroborated() })
	if cut {
		// The ingestions' 429s were answers to the old budget as well.
		s.rounds = [sustainedRounds]map[string]Counts{}
		for _, g := range s.groups {
			g.recent = [sustainedRounds]struct{ requests, limited int64 }{}
		}
	}
	for name, g := range s.groups {
		c := round[name]
		if limited {
			// The budget counts as rate limited (or was just cut): that is the remedy, and the
			// same 429s must not cut an ingestion on top, now or later. Its factor holds.
			g.cooldown = max(0, g.cooldown-1)
			continue
		}
		g.observe(c.Requests, c.RateLimited, nil)
		if g.Factor >= 1 && g.cooldown == 0 && g.quiet() {
			delete(s.groups, name)
		}
	}
	for name, c := range round {
		if s.groups[name] == nil && !limited && c.RateLimited > 0 {
			b := NewBackoff()
			b.observe(c.Requests, c.RateLimited, nil)
			s.groups[name] = &b
		}
	}
	return s.Budget.Factor
}

// quiet: no 429 in the window.
func (b *Backoff) quiet() bool {
	for _, r := range b.recent {
		if r.limited > 0 {
			return false
		}
	}
	return true
}

// corroborated: the window counts as rate limited whichever single ingestion's reports are
// left out (its requests as well as its 429s, so a tenant can neither carry a cut alone nor
// dilute the others' 429s away).
func (s *Shared) corroborated() bool {
	by := map[string]Counts{}
	var reqs, lim int64
	for _, r := range s.rounds {
		for name, c := range r {
			x := by[name]
			by[name] = Counts{Requests: x.Requests + c.Requests, RateLimited: x.RateLimited + c.RateLimited}
			reqs += c.Requests
			lim += c.RateLimited
		}
	}
	for _, c := range by {
		if c.RateLimited > 0 && !limitedCounts(reqs-c.Requests, lim-c.RateLimited) {
			return false
		}
	}
	return true
}

// Effective is the declared budget times the factor.
func (b Backoff) Effective(declared Rates) Rates {
	f := b.Factor
	if f <= 0 {
		f = 1
	}
	return Rates{RPM: declared.RPM * f, TPM: declared.TPM * f}
}
