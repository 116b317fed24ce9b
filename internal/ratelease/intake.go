package ratelease

import (
	"math"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// A pod's counts are its word, and its credential names its ingestion, not its honesty: one
// tenant reporting nothing but 429s must not throttle a budget it shares. Two defences: each
// report is bounded by what the pod's grant let it send (clampUse), and the budget backs off
// only on corroborated 429s (ratebudget.Shared; its pods' grants are scaled by their
// ingestion's own factor here).

// usageBound is the most a holder can have sent since its last renewal: its grant over the
// elapsed time, plus one renewal period's worth (a request waited for before the last renewal
// may be counted after it) and its burst. A holder the server has not heard from yet is bounded
// by the grant it says it holds (at most the whole effective budget; else all of it) over one TTL. A zero rate
// (unlimited) bounds nothing: -1.
func (s *Server) usageBound(h *holderState, req RenewRequest, eff ratebudget.Rates, now time.Time) (reqs, toks float64) {
	grant, elapsed, burst := eff, s.opts.TTL, float64(req.MaxRequestTokens)
	if req.Current != nil {
		// No leader hands out more than the budget: a claimed grant above it, or unlimited (0)
		// on a limited budget, is bounded by the budget.
		grant = ratebudget.Rates{RPM: minLimit(req.Current.RPM, eff.RPM), TPM: minLimit(req.Current.TPM, eff.TPM)}
	}
	if h != nil && !h.renewed.IsZero() {
		grant, elapsed = h.grant, now.Sub(h.renewed)
		burst = float64(max(h.burst, h.maxReq, req.MaxRequestTokens))
	}
	minutes := (max(elapsed, 0) + s.opts.Renew).Minutes()
	reqs, toks = -1, -1
	if grant.RPM > 0 {
		reqs = math.Ceil(grant.RPM*minutes) + 1
	}
	if grant.TPM > 0 {
		toks = math.Ceil(grant.TPM*minutes + burst)
	}
	return reqs, toks
}

// clampUse bounds req's counts (usageBound; 429s at most the requests, scaled with them). The first clamp of a
// holder is logged (names and counts only); every clamp is counted in the metric.
func (s *Server) clampUse(key string, h *holderState, req *RenewRequest, eff ratebudget.Rates, now time.Time) {
	req.UsedRequests, req.UsedTokens = min(req.UsedRequests, maxCount), min(req.UsedTokens, maxCount)
	maxReqs, maxToks := s.usageBound(h, *req, eff, now)
	reported := *req
	if maxReqs >= 0 && float64(req.UsedRequests) > maxReqs {
		// The 429s keep their share of the requests: an honest pod back from a long outage
		// (its counts since its last renewal above one interval's bound) must not look like
		// one seeing nothing but 429s.
		if req.RateLimited > 0 {
			req.RateLimited = int64(math.Round(float64(min(req.RateLimited, req.UsedRequests)) * maxReqs / float64(req.UsedRequests)))
		}
		req.UsedRequests = int64(maxReqs)
	}
	if maxToks >= 0 && float64(req.UsedTokens) > maxToks {
		req.UsedTokens = int64(maxToks)
	}
	req.RateLimited = min(req.RateLimited, req.UsedRequests)
	if reported.UsedRequests == req.UsedRequests && reported.UsedTokens == req.UsedTokens && reported.RateLimited == req.RateLimited {
		return
	}
	s.opts.Metrics.clamped(key, req.Namespace+"/"+req.Ingestion)
	if h == nil || !h.clampLogged {
		if h != nil {
			h.clampLogged = true
		}
		s.opts.Log.Info("rate lease report above what the pod's grant allows: clamped (logged once per pod)",
			"budget", key, "namespace", req.Namespace, "ingestion", req.Ingestion, "job", req.Job, "holder", req.Holder,
			"reportedRequests", reported.UsedRequests, "reportedTokens", reported.UsedTokens, "reportedRateLimited", reported.RateLimited,
			"requests", req.UsedRequests, "tokens", req.UsedTokens, "rateLimited", req.RateLimited)
	}
}

// observeRound feeds the round to the budget's backoff and logs an ingestion singled out (its
// own factor cut on 429s no other ingestion saw): nothing about it is silent.
func (s *Server) observeRound(key string, st *budgetState, active int) {
	before := st.backoff.GroupFactors()
	st.backoff.Observe(st.round, active)
	for ing, f := range st.backoff.GroupFactors() {
		if was, ok := before[ing]; !ok || f < was {
			s.opts.Log.Info("rate lease: 429s only this ingestion reports on a shared budget cut its own grants, not the budget's",
				"budget", key, "ingestion", ing, "factor", f, "activeIngestions", active)
		}
	}
}

// activeGroups counts the ingestions holding leases of a budget, with group if renewing (a
// first renewal is not among the holders yet).
func activeGroups(holders map[string]*holderState, group string, renewing bool) int {
	seen := map[string]bool{}
	if renewing {
		seen[group] = true
	}
	for _, h := range holders {
		seen[h.group] = true
	}
	return len(seen)
}

// scaled is r times f (a zero rate, unlimited, stays so).
func scaled(r ratebudget.Rates, f float64) ratebudget.Rates {
	return ratebudget.Rates{RPM: r.RPM * f, TPM: r.TPM * f}
}
