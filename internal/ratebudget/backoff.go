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
	// recover429Share: a round whose 429s are at most this share of its requests is quiet and
	// raises the factor. In a large fleet a round without a single 429 may never come, and a
	// factor held by 1 % of 429s stayed cut for good (a review probe: 0.25 for 200 rounds).
	// Between this share and sustained429Share the factor holds.
	recover429Share = 0.01
)

// quietCounts: a round that raises a factor (no 429, or at most recover429Share of them).
func quietCounts(requests, limited int64) bool {
	return limited <= 0 || float64(limited) <= recover429Share*float64(requests)
}

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
	if b.step(limitedCounts(reqs, lim), quietCounts(requests, rateLimited)) {
		// The 429s counted were answers to the old budget: the next cut needs new ones.
		b.recent = [sustainedRounds]struct{ requests, limited int64 }{}
	}
	return b.Factor
}

// limitedCounts: the 429s of a window are sustained (both thresholds above).
func limitedCounts(requests, limited int64) bool {
	return limited >= sustained429s && float64(limited) >= sustained429Share*float64(max(requests, 1))
}

// step moves the factor for one round: cut when limited (unless cooling down), else up by a
// step when the round was quiet. It reports a cut.
func (b *Backoff) step(limited, quietRound bool) bool {
	switch {
	case limited && b.cooldown == 0:
		b.Factor = max(BackoffFloor, b.Factor*backoffCut)
		b.cooldown = cutCooldown
		return true
	case limited:
		b.cooldown--
	default:
		if b.cooldown > 0 {
			b.cooldown--
		}
		// A round with more than a stray 429 holds the factor; only a quiet one raises it.
		if quietRound {
			b.Factor = min(1, b.Factor+backoffStep)
		}
	}
	return false
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

// GroupFactors are the ingestions' own factors below 1.
func (s *Shared) GroupFactors() map[string]float64 {
	out := map[string]float64{}
	for name, g := range s.groups {
		if g.Factor < 1 {
			out[name] = g.Factor
		}
	}
	return out
}

// Observe records one round: each ingestion's counts, and how many ingestions hold leases of
// the budget now. It returns the budget's factor.
func (s *Shared) Observe(round map[string]Counts, active int) float64 {
	if s.groups == nil {
		s.groups = map[string]*Backoff{}
	}
	// A round is quiet for the budget when the ingestions not singled out (own factor cut)
	// report at most a stray share of 429s: a liar must not hold a backed-off budget down either.
	kept := make(map[string]Counts, len(round))
	var qreqs, qlim int64
	for name, c := range round {
		kept[name] = c
		if s.GroupFactor(name) >= 1 {
			qreqs += c.Requests
			qlim += c.RateLimited
		}
	}
	quiet := quietCounts(qreqs, qlim)
	s.rounds[s.pos] = kept
	s.pos = (s.pos + 1) % sustainedRounds
	if s.Budget.Factor <= 0 {
		s.Budget.Factor = 1
	}
	// The budget's window is s.rounds (not s.Budget's own ring): an ingestion's 429s that cut
	// its own factor are dropped from it, and must not cut the budget afterwards either.
	by := s.byGroup()
	var wreqs, wlim int64
	for _, c := range by {
		wreqs += c.Requests
		wlim += c.RateLimited
	}
	limited := limitedCounts(wreqs, wlim) && (active <= 1 || corroborated(by, wreqs, wlim))
	cut := s.Budget.step(limited, quiet)
	if cut {
		// The ingestions' 429s were answers to the old budget as well.
		s.rounds = [sustainedRounds]map[string]Counts{}
	}
	// An ingestion is cut on its own 429s over the same window, only while the budget is not
	// rate limited: when it is (or was just cut), that is the remedy, and the same 429s must
	// not cut an ingestion on top.
	by = s.byGroup()
	for name, c := range by {
		if s.groups[name] == nil && c.RateLimited > 0 && !limited {
			b := NewBackoff()
			s.groups[name] = &b
		}
	}
	for name, g := range s.groups {
		c := by[name]
		if g.step(!limited && limitedCounts(c.Requests, c.RateLimited), quietCounts(round[name].Requests, round[name].RateLimited)) {
			// The next cut of this ingestion needs new 429s.
			for _, r := range s.rounds {
				delete(r, name)
			}
		}
		if g.Factor >= 1 && g.cooldown == 0 && by[name].RateLimited == 0 {
			delete(s.groups, name)
		}
	}
	return s.Budget.Factor
}

// byGroup sums the window by ingestion.
func (s *Shared) byGroup() map[string]Counts {
	by := map[string]Counts{}
	for _, r := range s.rounds {
		for name, c := range r {
			x := by[name]
			by[name] = Counts{Requests: x.Requests + c.Requests, RateLimited: x.RateLimited + c.RateLimited}
		}
	}
	return by
}

// corroborated: the window counts as rate limited whichever single ingestion's reports are
// left out (its requests as well as its 429s, so a tenant can neither carry a cut alone nor
// dilute the others' 429s away).
func corroborated(by map[string]Counts, reqs, lim int64) bool {
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
