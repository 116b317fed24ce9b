package ratelease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// Budget is what a Resolver finds for an ingestion: the budget it draws from and its weight.
type Budget struct {
	// Key identifies the budget; every ingestion with the same key shares it.
	Key string
	// Declared is the budget per minute (a zero field: unlimited).
	Declared ratebudget.Rates
	// Weight of the ingestion within the budget (≤ 0: 1).
	Weight float64
	// MaxHolders is the most pods the ingestion runs at once (its parallelism). The server
	// admits twice as many holders for it (a replaced pod's lease lingers until it expires) and
	// refuses more, so a pod inventing Job or pod names can neither grow the leader's table
	// without end nor shrink the fallback share of the budget's other holders. ≤ 0: no bound.
	MaxHolders int
	// LastFactor is the backoff factor a previous leader left for the budget (a declared
	// budget's status: effective ÷ declared), in (0, 1) when it was backed off; anything else is
	// none. A new leader starts a budget it does not know yet from it instead of from the full
	// declaration, which the provider refused a moment ago. Once a budget is known it is ignored.
	LastFactor float64
}

// ErrNotFound: the ingestion is gone; its pods get a 404 and fall back.
var ErrNotFound = errors.New("ingestion not found")

// Resolver finds the budget of an ingestion (read from the API server's cache on each
// renewal, so budget edits reach pods at their next renewal).
type Resolver interface {
	Resolve(ctx context.Context, namespace, ingestion, model string) (Budget, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, namespace, ingestion, model string) (Budget, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, namespace, ingestion, model string) (Budget, error) {
	return f(ctx, namespace, ingestion, model)
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// Key signs and checks the per-Job credentials. Required.
	Key      []byte
	Resolver Resolver
	// Renew is how often pods renew (default 3 s); leases last TTL (default 3 × Renew).
	Renew, TTL time.Duration
	// Now is the clock (tests inject one); default time.Now.
	Now     func() time.Time
	Log     logr.Logger
	Metrics *Metrics // nil: none
}

// Server hands out leases. It is an http.Handler for Path. Its state is soft: a new leader
// starts empty and re-learns the holders from their renewals, and until one lease period has
// passed it never raises a pod's grant above the one the pod says it holds, so the grants of
// the old and the new leader together stay within the budget.
type Server struct {
	opts    ServerOptions
	started time.Time

	mu      sync.Mutex
	budgets map[string]*budgetState
	swept   time.Time
}

type budgetState struct {
	declared   ratebudget.Rates
	backoff    ratebudget.Shared
	holders    map[string]*holderState
	maxHolders int
	roundStart time.Time
	// round holds the counts reported since roundStart, by ingestion.
	round map[string]ratebudget.Counts
	// oldLeader: a pod came with a previous leader's grant (so this server is warming up).
	oldLeader bool
	// rateLimited counts the 429s reported since this server learned the budget (for status).
	rateLimited int64
	// idleSince: when its last holder went (zero while it has holders). A backed-off budget is
	// remembered for a newcomer, but not for ever: see idleForget.
	idleSince time.Time
}

// idleForget is how long a backed-off budget without holders is remembered. After it the
// provider's minute has long been clear; a budget still above the real limit is cut again by
// its next holders' 429s.
const idleForget = 10 * time.Minute

type holderState struct {
	group    string
	weight   float64
	demand   ratebudget.Rates
	maxReq   int
	grant    ratebudget.Rates
	declared ratebudget.Rates
	expires  time.Time
	// warmup: the pod came with an old leader's grant, which caps it until one TTL has passed
	// since this server started.
	warmup bool
	// reported is the grant it came with from the old leader (warmup only).
	reported ratebudget.Rates
	// use is what the pod reported, for status: its rate over its last renewal interval and
	// its 429s since this server first heard from it.
	use     HolderUse
	renewed time.Time
	// burst is the token burst of its last lease; clampLogged: a clamp of its reports was logged.
	burst       int
	clampLogged bool
}

// NewServer validates opts and returns a Server.
func NewServer(opts ServerOptions) (*Server, error) {
	if len(opts.Key) < 16 {
		return nil, errors.New("rate lease server: the credential key must be at least 16 bytes")
	}
	if opts.Resolver == nil {
		return nil, errors.New("rate lease server: no resolver")
	}
	if opts.Renew <= 0 {
		opts.Renew = 3 * time.Second
	}
	if opts.TTL <= 0 {
		opts.TTL = 3 * opts.Renew
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Server{opts: opts, started: opts.Now(), budgets: map[string]*budgetState{}}, nil
}

// readAuthenticated reads a POST body of at most limit bytes into v (unknown fields refused),
// validates it and checks the bearer credential against the ingestion it names: a credential is
// minted for one ingestion, and a pod may only act for that one. It answers a failure itself
// (401, 400, 413, 403) and reports whether to go on. what names the body in messages, act what
// the pod may only do for its own ingestion.
func readAuthenticated(w http.ResponseWriter, r *http.Request, key []byte, limit int64, what, act string,
	v any, validate func() error, owner func() (namespace, name string)) bool {
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || cred == "" {
		httpError(w, http.StatusUnauthorized, "missing credential: send the Job's "+EnvCredential+" as a bearer token")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("bad %s: the body exceeds %d bytes", what, limit))
			return false
		}
		httpError(w, http.StatusBadRequest, "bad "+what+": "+err.Error())
		return false
	}
	if err := validate(); err != nil {
		httpError(w, http.StatusBadRequest, "bad "+what+": "+err.Error())
		return false
	}
	if ns, name := owner(); !validCredential(key, cred, ns, name) {
		httpError(w, http.StatusForbidden, fmt.Sprintf(
			"the credential is not valid for ingestion %s/%s: a pod may only %s for the ingestion its Job belongs to", ns, name, act))
		return false
	}
	return true
}

// maxBody bounds a renewal's body.
const maxBody = 16 << 10

// ServeHTTP answers POST Path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "rate leases are renewed with POST")
		return
	}
	var req RenewRequest
	if !readAuthenticated(w, r, s.opts.Key, maxBody, "renewal", "lease", &req, req.validate, func() (string, string) { return req.Namespace, req.Ingestion }) {
		return
	}
	b, err := s.opts.Resolver.Resolve(r.Context(), req.Namespace, req.Ingestion, req.Model)
	switch {
	case errors.Is(err, ErrNotFound):
		httpError(w, http.StatusNotFound, fmt.Sprintf("ingestion %s/%s not found", req.Namespace, req.Ingestion))
		return
	case err != nil:
		s.opts.Log.Error(err, "resolve rate budget", "namespace", req.Namespace, "ingestion", req.Ingestion)
		httpError(w, http.StatusServiceUnavailable, "resolve the budget: "+err.Error())
		return
	}
	lease, err := s.Renew(req, b)
	if err != nil {
		httpError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(lease)
}

func (q *RenewRequest) validate() error {
	switch {
	case q.Namespace == "" || q.Ingestion == "" || q.Job == "" || q.Holder == "":
		return errors.New("namespace, ingestion, job and holder are required")
	case len(q.Namespace) > maxName || len(q.Ingestion) > maxName || len(q.Job) > maxName || len(q.Holder) > maxName || len(q.Model) > maxName:
		return fmt.Errorf("namespace, ingestion, job, holder and model are Kubernetes names: at most %d characters", maxName)
	case q.UsedRequests < 0 || q.UsedTokens < 0 || q.RateLimited < 0 || q.MaxRequestTokens < 0:
		return errors.New("usage counts must not be negative")
	case q.Demand.RPM < 0 || q.Demand.TPM < 0 || bad(q.Demand.RPM) || bad(q.Demand.TPM):
		return errors.New("demand must be a finite, non-negative rate")
	case q.Current != nil && (q.Current.RPM < 0 || q.Current.TPM < 0 || bad(q.Current.RPM) || bad(q.Current.TPM)):
		return errors.New("current must be a finite, non-negative rate")
	}
	return nil
}

// maxCount bounds a renewal's usage counts (far above what a pod sends between two renewals).
const maxCount = 1 << 32

// maxName is the longest Kubernetes object name.
const maxName = 253

func bad(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ErrTooManyHolders refuses a new holder beyond its ingestion's bound (Budget.MaxHolders).
var ErrTooManyHolders = errors.New("too many holders")

// Renew records one (authenticated) renewal against budget b and returns the holder's lease.
func (s *Server) Renew(req RenewRequest, b Budget) (Lease, error) {
	now := s.opts.Now()
	id := req.Namespace + "/" + req.Ingestion + "/" + req.Job + "/" + req.Holder
	s.mu.Lock()
	defer s.mu.Unlock()

	if now.Sub(s.swept) >= s.opts.Renew {
		s.sweep(now)
	}
	st := s.budgets[b.Key]
	if st == nil {
		st = &budgetState{backoff: ratebudget.NewShared(), holders: map[string]*holderState{}, roundStart: now}
		if f := b.LastFactor; f > 0 && f < 1 && !math.IsNaN(f) {
			st.backoff.Budget.Factor = max(ratebudget.BackoffFloor, f)
			s.opts.Log.Info("rate budget resumed backed off, as the last leader left it", "budget", b.Key, "factor", st.backoff.Budget.Factor)
		}
		s.budgets[b.Key] = st
	}
	for hid, h := range st.holders {
		if !now.Before(h.expires) {
			delete(st.holders, hid)
		}
	}
	group := req.Namespace + "/" + req.Ingestion
	if _, known := st.holders[id]; !known && !req.Release && b.MaxHolders > 0 {
		n := 0
		for _, x := range st.holders {
			if x.group == group {
				n++
			}
		}
		if n >= 2*b.MaxHolders {
			return Lease{}, fmt.Errorf("%w: ingestion %s holds leases for at most %d pods (twice its parallelism) and has %d; "+
				"a new pod gets one when an old one's is released or expires", ErrTooManyHolders, group, 2*b.MaxHolders, n)
		}
	}
	// Counts are the pod's word: bounded by what its grant allowed (intake.go), no more 429s
	// than requests, and kept by ingestion so that the backoff can tell one tenant's 429s
	// from a budget's.
	s.clampUse(b.Key, st.holders[id], &req, st.backoff.Budget.Effective(declared(st.holders, b.Declared)), now)
	if st.round == nil {
		st.round = map[string]ratebudget.Counts{}
	}
	c := st.round[group]
	st.round[group] = ratebudget.Counts{Requests: c.Requests + req.UsedRequests, RateLimited: c.RateLimited + req.RateLimited}
	st.rateLimited += req.RateLimited
	if now.Sub(st.roundStart) >= s.opts.Renew {
		s.observeRound(b.Key, st, activeGroups(st.holders, group, !req.Release))
		st.roundStart, st.round = now, nil
	}
	s.opts.Metrics.observeUse(b.Key, req)

	if req.Release {
		delete(st.holders, id)
		st.declared = declared(st.holders, ratebudget.Rates{})
		eff := st.backoff.Budget.Effective(st.declared)
		s.report(b.Key, st, eff)
		// The last holder gone: forget the budget, unless it is backed off. Chunk pods come and go
		// (one after another at parallelism 1), and the next must not start at the full
		// declaration again while the provider refuses it.
		if len(st.holders) == 0 && st.backoff.Budget.Factor >= 1 {
			delete(s.budgets, b.Key)
			s.opts.Metrics.forget(b.Key)
		}
		return Lease{Budget: b.Key, TTLSeconds: 0, RenewSeconds: s.opts.Renew.Seconds()}, nil
	}

	h := st.holders[id]
	fromOldLeader := false
	if h == nil {
		h = &holderState{}
		st.holders[id] = h
		// A pod this server never granted anything that holds a grant got it from a previous
		// leader.
		fromOldLeader = req.Current != nil && now.Sub(s.started) < s.opts.TTL
	}
	h.group = group
	h.recordUse(req, now)
	h.weight, h.demand, h.maxReq, h.declared = b.Weight, req.Demand, req.MaxRequestTokens, b.Declared
	h.expires = now.Add(s.opts.TTL)
	// Edits reach every pod at its next renewal. Ingestions sharing an implicit budget may
	// declare different ones: the smallest holds, since they all draw from the same key.
	st.declared = declared(st.holders, b.Declared)
	eff := st.backoff.Budget.Effective(st.declared)
	st.maxHolders = max(st.maxHolders, len(st.holders))

	ids := make([]string, 0, len(st.holders))
	for hid := range st.holders {
		ids = append(ids, hid)
	}
	sort.Strings(ids)
	holders := make([]ratebudget.Holder, len(ids))
	mine := 0
	for i, hid := range ids {
		x := st.holders[hid]
		holders[i] = ratebudget.Holder{ID: hid, Group: x.group, Weight: x.weight, Demand: x.demand, MaxRequestTokens: x.maxReq}
		if hid == id {
			mine = i
		}
	}
	target := ratebudget.Allocate(eff, holders)[mine]
	// An ingestion whose 429s nobody else sees has its own factor (1 otherwise).
	target.Rates = scaled(target.Rates, st.backoff.GroupFactor(group))

	// Never hand out more than the others leave free: they keep their grants until they renew,
	// so a newcomer grows into its share as they shrink (within one renewal).
	var others ratebudget.Rates
	for hid, x := range st.holders {
		if hid != id {
			others.RPM += x.grant.RPM
			others.TPM += x.grant.TPM
		}
	}
	g := ratebudget.Rates{
		RPM: capFree(target.Rates.RPM, eff.RPM, others.RPM),
		TPM: capFree(target.Rates.TPM, eff.TPM, others.TPM),
	}
	// A new leader does not know the grants the old one handed out: until they have all expired
	// or been renewed, nobody gets more than it already holds.
	warming := now.Sub(s.started) < s.opts.TTL
	if fromOldLeader {
		h.reported = *req.Current
		st.oldLeader = true
	}
	if (fromOldLeader || h.warmup && warming) && req.Current != nil {
		h.warmup = true
		g.RPM = capCurrent(g.RPM, req.Current.RPM)
		g.TPM = capCurrent(g.TPM, req.Current.TPM)
	} else if warming && req.Current == nil && st.oldLeader {
		// A pod without a grant, after a pod brought an old leader's grant: those add up to the
		// budget, and the pods not heard from yet still hold theirs. Only what the re-learned
		// pods gave up is free.
		var known ratebudget.Rates
		for hid, x := range st.holders {
			if hid != id && x.warmup {
				known.RPM += max(0, x.reported.RPM)
				known.TPM += max(0, x.reported.TPM)
			}
		}
		g.RPM = capKnown(g.RPM, known.RPM, others.RPM)
		g.TPM = capKnown(g.TPM, known.TPM, others.TPM)
	}
	h.grant = g
	s.report(b.Key, st, eff)

	lease := Lease{
		Budget: b.Key, RPM: g.RPM, TPM: g.TPM,
		TTLSeconds: s.opts.TTL.Seconds(), RenewSeconds: s.opts.Renew.Seconds(),
		Holders: len(st.holders), MaxHolders: st.maxHolders,
		// The static share, scaled like the grant by the ingestion's own factor: a tenant cut for
		// 429s only it sees must not get its cut back by losing the manager.
		Fallback: scaled(ratebudget.Rates{RPM: eff.RPM / float64(st.maxHolders), TPM: eff.TPM / float64(st.maxHolders)},
			st.backoff.GroupFactor(group)),
	}
	if g.RPM < target.Rates.RPM || g.TPM < target.Rates.TPM {
		// Held below its share until the others renew: come back soon for the rest.
		lease.RenewSeconds = min(lease.RenewSeconds, CatchUp.Seconds())
		lease.Capped = true
	}
	if g.TPM > 0 {
		lease.BurstTokens = max(target.BurstTokens, req.MaxRequestTokens, 1)
	}
	h.burst = lease.BurstTokens
	return lease, nil
}

// sweep drops the expired holders of every budget (pods that died without releasing, on a key
// no one renews any more): an empty budget is forgotten unless it is backed off, and the gauges
// follow. Called with s.mu held.
func (s *Server) sweep(now time.Time) {
	s.swept = now
	for key, st := range s.budgets {
		n := len(st.holders)
		for hid, h := range st.holders {
			if !now.Before(h.expires) {
				delete(st.holders, hid)
			}
		}
		if len(st.holders) > 0 {
			st.idleSince = time.Time{}
		} else if st.idleSince.IsZero() {
			st.idleSince = now
		}
		switch {
		case len(st.holders) == 0 && (st.backoff.Budget.Factor >= 1 || now.Sub(st.idleSince) >= idleForget):
			delete(s.budgets, key)
			s.opts.Metrics.forget(key)
		case len(st.holders) < n:
			s.report(key, st, st.backoff.Budget.Effective(st.declared))
		}
	}
}

// declared is the smallest declaration among the holders (a zero field: unlimited), or def when
// there are none.
func declared(holders map[string]*holderState, def ratebudget.Rates) ratebudget.Rates {
	first := true
	out := def
	for _, h := range holders {
		if first {
			out, first = h.declared, false
			continue
		}
		out.RPM = minLimit(out.RPM, h.declared.RPM)
		out.TPM = minLimit(out.TPM, h.declared.TPM)
	}
	return out
}

// minLimit is the smaller of two limits, 0 meaning unlimited.
func minLimit(a, b float64) float64 {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

// CatchUp is how soon a pod held below its share renews again (a newcomer, until the others
// have renewed and left it its share).
const CatchUp = time.Second

// minGrant keeps a grant that has nothing free positive: zero would mean unlimited.
const minGrant = 1e-3

// capFree limits a grant to what the others leave free of total (0: unlimited).
func capFree(want, total, others float64) float64 {
	if total <= 0 {
		return 0
	}
	return max(minGrant, min(want, total-others))
}

// capKnown limits a grant g (0: unlimited, which stays so) to what the others leave free of
// known.
func capKnown(g, known, others float64) float64 {
	if g <= 0 {
		return g
	}
	return max(minGrant, min(g, known-others))
}

// capCurrent limits a grant to the one the pod holds (0: it holds an unlimited one).
func capCurrent(g, current float64) float64 {
	if g <= 0 || current <= 0 {
		return g
	}
	return min(g, current)
}

// report updates the budget's gauges.
func (s *Server) report(key string, st *budgetState, eff ratebudget.Rates) {
	var granted ratebudget.Rates
	byIngestion := map[string]ratebudget.Rates{}
	for _, h := range st.holders {
		granted.RPM += h.grant.RPM
		granted.TPM += h.grant.TPM
		g := byIngestion[h.group]
		byIngestion[h.group] = ratebudget.Rates{RPM: g.RPM + h.grant.RPM, TPM: g.TPM + h.grant.TPM}
	}
	s.opts.Metrics.setBudget(key, st.declared, eff, granted, len(st.holders), st.backoff.Budget.Factor)
	s.opts.Metrics.setIngestions(key, byIngestion)
}

// HolderUse is what one holder reported.
type HolderUse struct {
	// Used is its rate per minute over its last renewal interval.
	Used ratebudget.Rates
	// RateLimited counts its 429s since the server first heard from it.
	RateLimited int64
}

// recordUse turns a renewal's counts into a rate over the time since the previous renewal (the
// first renewal has no interval: its counts only add to the 429s).
func (h *holderState) recordUse(req RenewRequest, now time.Time) {
	if !h.renewed.IsZero() {
		if dt := now.Sub(h.renewed).Minutes(); dt > 0 {
			h.use.Used = ratebudget.Rates{RPM: float64(req.UsedRequests) / dt, TPM: float64(req.UsedTokens) / dt}
		}
	}
	h.renewed = now
	h.use.RateLimited += req.RateLimited
}

// Snapshot is one budget's state, for status and tests.
type Snapshot struct {
	Key      string
	Declared ratebudget.Rates
	// Effective is the declared budget after backoff.
	Effective ratebudget.Rates
	Factor    float64
	// Granted is the sum of the live holders' grants.
	Granted ratebudget.Rates
	// Holders maps holder ID (namespace/ingestion/job/pod) to its grant.
	Holders map[string]ratebudget.Rates
	// Use maps holder ID to what it reported.
	Use map[string]HolderUse
	// RateLimited counts the 429s reported since the server learned the budget (it forgets a
	// budget once no one holds it and it is not backed off).
	RateLimited int64
	// GroupFactors are the ingestions' (namespace/name) own backoff factors below 1.
	GroupFactors map[string]float64
}

// Snapshot returns every budget's state, live holders only.
func (s *Server) Snapshot() []Snapshot {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Snapshot, 0, len(s.budgets))
	for key, st := range s.budgets {
		sn := Snapshot{Key: key, Declared: st.declared, Effective: st.backoff.Budget.Effective(st.declared),
			Factor: st.backoff.Budget.Factor, Holders: map[string]ratebudget.Rates{},
			Use: map[string]HolderUse{}, RateLimited: st.rateLimited, GroupFactors: st.backoff.GroupFactors()}
		for id, h := range st.holders {
			if now.Before(h.expires) {
				sn.Holders[id] = h.grant
				sn.Use[id] = h.use
				sn.Granted.RPM += h.grant.RPM
				sn.Granted.TPM += h.grant.TPM
			}
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
