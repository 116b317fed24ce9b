package ratelease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

var testKey = []byte("0123456789abcdef-test-key")

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// budgets is a Resolver over a table the test edits: ingestion -> budget.
type budgets struct {
	mu sync.Mutex
	m  map[string]Budget
}

func (b *budgets) Resolve(_ context.Context, ns, name, _ string) (Budget, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	x, ok := b.m[ns+"/"+name]
	if !ok {
		return Budget{}, ErrNotFound
	}
	return x, nil
}

func (b *budgets) set(ing string, x Budget) { b.mu.Lock(); b.m[ing] = x; b.mu.Unlock() }

type env struct {
	t   *testing.T
	clk *clock
	res *budgets
	srv *Server
	url string
	reg *prometheus.Registry
	// budgetLowered: the budget was edited down, so grants handed out before stand until their
	// holders renew, and checkWithinBudget cannot hold in between.
	budgetLowered bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, clk: &clock{t: time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)}, res: &budgets{m: map[string]Budget{}}}
	e.reg = prometheus.NewRegistry()
	m, err := NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = e.newServer(m)
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL + Path
	return e
}

func (e *env) newServer(m *Metrics) *Server {
	s, err := NewServer(ServerOptions{Key: testKey, Resolver: e.res, Renew: 5 * time.Second, Now: e.clk.Now, Log: logr.Discard(), Metrics: m})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

var key = Budget{Key: "ns/openai-key//text-embedding-3-small", Declared: ratebudget.Rates{RPM: 300, TPM: 600_000}}

// renew posts a renewal for pod job-holder of ingestion ns/ing with its own credential.
func (e *env) renew(ing, job string, mod func(*RenewRequest)) Lease {
	e.t.Helper()
	req := RenewRequest{Namespace: "ns", Ingestion: ing, Job: job, Holder: job + "-pod", MaxRequestTokens: 1000,
		RemainingRequests: -1, RemainingTokens: -1}
	if mod != nil {
		mod(&req)
	}
	code, body := e.post(Credential(testKey, "ns", ing), req)
	if code != http.StatusOK {
		e.t.Fatalf("renew %s/%s: %d %s", ing, job, code, body)
	}
	var l Lease
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		e.t.Fatal(err)
	}
	e.checkWithinBudget()
	return l
}

func (e *env) post(cred string, req any) (int, string) {
	e.t.Helper()
	b, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, e.url, bytes.NewReader(b))
	if cred != "" {
		hr.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.String()
}

// checkWithinBudget: the live grants never add up to more than the effective budget.
func (e *env) checkWithinBudget() {
	e.t.Helper()
	if e.budgetLowered {
		return
	}
	for _, s := range e.srv.Snapshot() {
		if s.Granted.RPM > s.Effective.RPM*(1+1e-9)+float64(len(s.Holders))*minGrant ||
			s.Granted.TPM > s.Effective.TPM*(1+1e-9)+float64(len(s.Holders))*minGrant {
			e.t.Fatalf("budget %s: granted %+v above effective %+v (%v)", s.Key, s.Granted, s.Effective, s.Holders)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(1, math.Abs(b)) }

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	ok := RenewRequest{Namespace: "ns", Ingestion: "a", Job: "a-chunk-0", Holder: "p"}
	cases := []struct {
		name string
		cred string
		body any
		code int
		msg  string
	}{
		{"no credential", "", ok, http.StatusUnauthorized, "missing credential"},
		{"another ingestion's credential", Credential(testKey, "ns", "b"), ok, http.StatusForbidden,
			"a pod may only lease for the ingestion its Job belongs to"},
		{"another key's credential", Credential([]byte("some-other-key-0123456"), "ns", "a"), ok, http.StatusForbidden, "not valid"},
		{"same ingestion name elsewhere", Credential(testKey, "other", "a"), ok, http.StatusForbidden, "not valid"},
		{"missing fields", Credential(testKey, "ns", "a"), RenewRequest{Namespace: "ns", Ingestion: "a", Job: "a-chunk-0"},
			http.StatusBadRequest, "holder are required"},
		{"unknown field", Credential(testKey, "ns", "a"), map[string]any{"namespace": "ns", "bogus": 1}, http.StatusBadRequest, "unknown field"},
		{"negative usage", Credential(testKey, "ns", "a"),
			RenewRequest{Namespace: "ns", Ingestion: "a", Job: "a-chunk-0", Holder: "p", UsedTokens: -5}, http.StatusBadRequest, "must not be negative"},
		{"ingestion gone", Credential(testKey, "ns", "gone"),
			RenewRequest{Namespace: "ns", Ingestion: "gone", Job: "gone-chunk-0", Holder: "p"}, http.StatusNotFound, "ns/gone not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.post(c.cred, c.body)
			if code != c.code || !strings.Contains(body, c.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, c.code, c.msg)
			}
		})
	}
	resp, err := http.Get(e.url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d, want 405", resp.StatusCode)
	}
	if n := len(e.srv.Snapshot()); n != 0 {
		t.Fatalf("refused renewals left %d budgets", n)
	}
}

// TestArrivalWithinOneRenewal: a second ingestion on the key gets what the first leaves free at
// once and its full share as soon as the first has renewed; the grants never add up to more than
// the budget on the way; a release hands the share back.
func TestArrivalWithinOneRenewal(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	a := e.renew("a", "a-0", nil)
	if !near(a.TPM, 600_000) || !near(a.RPM, 300) || a.Holders != 1 {
		t.Fatalf("alone: %+v, want the whole budget", a)
	}
	b := e.renew("b", "b-0", nil)
	if b.TPM > 1 { // a still holds everything until it renews
		t.Fatalf("newcomer got %g TPM while the other still holds the whole budget", b.TPM)
	}
	if b.RenewSeconds != 1 {
		t.Fatalf("newcomer held below its share renews in %gs, want 1s", b.RenewSeconds)
	}
	e.clk.Add(5 * time.Second)
	a = e.renew("a", "a-0", func(r *RenewRequest) { r.Current = &ratebudget.Rates{RPM: 300, TPM: 600_000} })
	b = e.renew("b", "b-0", nil)
	if !near(a.TPM, 300_000) || !near(b.TPM, 300_000) || !near(b.RPM, 150) {
		t.Fatalf("after one renewal: a %+v, b %+v; want half each", a, b)
	}
	for _, ing := range []string{"ns/a", "ns/b"} {
		if got := value(t, e.srv.opts.Metrics.ingestionGranted.WithLabelValues(key.Key, ing, "requests")); !near(got, 150) {
			t.Fatalf("%s's granted requests metric %g, want half the budget", ing, got)
		}
	}
	if b.Holders != 2 || !near(b.Fallback.TPM, 300_000) {
		t.Fatalf("lease %+v: want 2 holders and a fallback of half the budget", b)
	}
	if b.BurstTokens < 1000 {
		t.Fatalf("burst %d below the largest request", b.BurstTokens)
	}
	// b finishes and releases: a gets everything at its next renewal.
	e.renew("b", "b-0", func(r *RenewRequest) { r.Release = true })
	a = e.renew("a", "a-0", nil)
	if !near(a.TPM, 600_000) || a.Holders != 1 {
		t.Fatalf("after the release: %+v, want the whole budget", a)
	}
	if got := value(t, e.srv.opts.Metrics.holders.WithLabelValues(key.Key)); got != 1 {
		t.Fatalf("holders metric %g, want 1", got)
	}
	// Each ingestion's part: a's is the whole budget again, b's series went with its release.
	if got := value(t, e.srv.opts.Metrics.ingestionGranted.WithLabelValues(key.Key, "ns/a", "tokens")); !near(got, 600_000) {
		t.Fatalf("a's granted tokens metric %g, want the whole budget", got)
	}
	if n := count(e.srv.opts.Metrics.ingestionGranted); n != 2 {
		t.Fatalf("%d ingestion series, want a's two (b released)", n)
	}
}

// TestMorePodsDoNotTakeMore: raising an ingestion's parallelism splits its share among more
// pods; the other ingestion keeps its half.
func TestMorePodsDoNotTakeMore(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	settle := func(jobs map[string][]string) map[string]float64 {
		got := map[string]float64{}
		for range 3 { // in the worst order a newcomer fills its share in the third round
			for ing, js := range jobs {
				for _, j := range js {
					got[j] = e.renew(ing, j, nil).TPM
				}
			}
			e.clk.Add(5 * time.Second)
		}
		return got
	}
	got := settle(map[string][]string{"a": {"a-0", "a-1"}, "b": {"b-0"}})
	if !near(got["a-0"], 150_000) || !near(got["a-1"], 150_000) || !near(got["b-0"], 300_000) {
		t.Fatalf("parallelism 2: %v", got)
	}
	got = settle(map[string][]string{"a": {"a-0", "a-1", "a-2", "a-3", "a-4", "a-5"}, "b": {"b-0"}})
	for j, g := range got {
		want := 50_000.0
		if j == "b-0" {
			want = 300_000
		}
		if !near(g, want) {
			t.Fatalf("parallelism 6: %s has %g, want %g (%v)", j, g, want, got)
		}
	}
}

// TestWeightsAndEdits: a weight edit and a budget edit reach the pods at their next renewal.
func TestWeightsAndEdits(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	round := func() (a, b Lease) {
		for range 2 {
			a, b = e.renew("a", "a-0", nil), e.renew("b", "b-0", nil)
			e.clk.Add(5 * time.Second)
		}
		return a, b
	}
	heavy := key
	heavy.Weight = 3
	e.res.set("ns/a", heavy)
	if a, b := round(); !near(a.TPM, 450_000) || !near(b.TPM, 150_000) {
		t.Fatalf("weights 3:1: a %g, b %g", a.TPM, b.TPM)
	}
	smaller := Budget{Key: key.Key, Declared: ratebudget.Rates{RPM: 100, TPM: 200_000}}
	e.res.set("ns/a", smaller)
	e.res.set("ns/b", smaller)
	if a, b := round(); !near(a.TPM, 100_000) || !near(b.TPM, 100_000) || !near(a.RPM, 50) {
		t.Fatalf("budget lowered to 200,000 TPM: a %+v, b %+v", a, b)
	}
}

// TestExpiry: a pod that stops renewing (killed) loses its share after the TTL.
func TestExpiry(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	e.renew("a", "a-0", nil)
	e.renew("b", "b-0", nil)
	e.clk.Add(5 * time.Second)
	e.renew("a", "a-0", nil)
	b := e.renew("b", "b-0", nil)
	if !near(b.TPM, 300_000) {
		t.Fatalf("b %g, want half", b.TPM)
	}
	e.clk.Add(14 * time.Second) // a's lease (TTL 15 s) is still valid
	if b = e.renew("b", "b-0", nil); !near(b.TPM, 300_000) {
		t.Fatalf("before a's lease expired: b %g, want half", b.TPM)
	}
	e.clk.Add(2 * time.Second)
	if b = e.renew("b", "b-0", nil); !near(b.TPM, 600_000) || b.Holders != 1 || b.MaxHolders != 2 {
		t.Fatalf("after a's lease expired: %+v, want the whole budget, max holders 2", b)
	}
}

// TestBackoffOnSustained429s: reported 429s halve the budget; quiet rounds bring it back.
func TestBackoffOnSustained429s(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.renew("a", "a-0", nil)
	e.clk.Add(5 * time.Second)
	l := e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests, r.RateLimited = 20, 10 })
	if !near(l.TPM, 300_000) {
		t.Fatalf("after sustained 429s: %g TPM, want half the budget", l.TPM)
	}
	if f := value(t, e.srv.opts.Metrics.factor.WithLabelValues(key.Key)); f != 0.5 {
		t.Fatalf("backoff factor metric %g, want 0.5", f)
	}
	if n := value(t, e.srv.opts.Metrics.rateLimited.WithLabelValues(key.Key)); n != 10 {
		t.Fatalf("429 metric %g, want 10", n)
	}
	for range 3 {
		e.clk.Add(5 * time.Second)
		l = e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests = 20 })
	}
	if !near(l.TPM, 600_000*0.65) {
		t.Fatalf("after three quiet rounds: %g TPM, want 65%% of the budget", l.TPM)
	}
}

// TestLeaderChange: a new leader knows nothing; until the old leases have expired it never
// raises a pod above the grant it reports, so old and new grants together stay in the budget;
// after one TTL it has re-learned every holder from their renewals.
func TestLeaderChange(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	for range 2 {
		e.renew("a", "a-0", nil)
		e.renew("b", "b-0", nil)
		e.clk.Add(5 * time.Second)
	}
	// The leader dies; a new one starts with an empty table.
	e.srv = e.newServer(nil)
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL + Path
	half := &ratebudget.Rates{RPM: 150, TPM: 300_000}
	a := e.renew("a", "a-0", func(r *RenewRequest) { r.Current = half })
	if a.TPM > half.TPM {
		t.Fatalf("new leader raised a to %g while b still holds its old lease", a.TPM)
	}
	b := e.renew("b", "b-0", func(r *RenewRequest) { r.Current = half })
	if !near(a.TPM+b.TPM, 600_000) && a.TPM+b.TPM > 600_000 {
		t.Fatalf("a %g + b %g above the budget", a.TPM, b.TPM)
	}
	if a.Holders != 1 || b.Holders != 2 {
		t.Fatalf("holders %d, %d: want the table re-learned from renewals", a.Holders, b.Holders)
	}
}

// fakeLimiter records what a client applies.
type fakeLimiter struct {
	mu       sync.Mutex
	rpm, tpm float64
	burst    int
	set      int
	u        Usage
}

func (f *fakeLimiter) SetRates(rpm, tpm float64, burst int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rpm, f.tpm, f.burst, f.set = rpm, tpm, burst, f.set+1
}

func (f *fakeLimiter) Usage() Usage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.u
}

func (f *fakeLimiter) MaxBatchTokens() int { return 2000 }

func (f *fakeLimiter) rates() (float64, float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rpm, f.tpm
}

// TestClientFallsBack: the client applies each grant; when the manager is gone it keeps the
// last lease until it expires, then uses budget ÷ the most holders seen; a refusal is reported.
func TestClientFallsBack(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	// b holds a lease too, so the most holders seen is 2.
	e.renew("b", "b-0", nil)
	lim := &fakeLimiter{u: Usage{RemainingRequests: -1, RemainingTokens: -1}}
	c := NewClient(ClientOptions{URL: e.url, Credential: Credential(testKey, "ns", "a"), Namespace: "ns", Ingestion: "a",
		Job: "a-0", Holder: "a-0-pod", Fallback: ratebudget.Rates{RPM: 300, TPM: 600_000}, Now: e.clk.Now, Log: logr.Discard()}, lim)
	ctx := context.Background()
	busy := func() { // a pod held back by its limiter: its requests waited the whole interval
		lim.mu.Lock()
		lim.u.Requests, lim.u.Tokens, lim.u.Waited = lim.u.Requests+10, lim.u.Tokens+10_000, lim.u.Waited+5*time.Second
		lim.mu.Unlock()
	}
	for range 3 {
		busy()
		if err := c.RenewOnce(ctx); err != nil {
			t.Fatal(err)
		}
		e.clk.Add(5 * time.Second)
		e.renew("b", "b-0", nil)
	}
	if rpm, tpm := lim.rates(); !near(rpm, 150) || !near(tpm, 300_000) {
		t.Fatalf("applied %g/%g, want half the budget", rpm, tpm)
	}
	before := value(t, e.srv.opts.Metrics.used.WithLabelValues(key.Key, "tokens"))
	lim.mu.Lock()
	lim.u.Requests, lim.u.Tokens, lim.u.RateLimited = lim.u.Requests+7, lim.u.Tokens+7000, 1
	lim.mu.Unlock()
	if err := c.RenewOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n := value(t, e.srv.opts.Metrics.used.WithLabelValues(key.Key, "tokens")) - before; n != 7000 {
		t.Fatalf("used tokens metric grew by %g, want the 7000 the client reported", n)
	}
	lastRPM, lastTPM := lim.rates()
	// The manager becomes unreachable.
	c.opts.URL = "http://127.0.0.1:1" + Path
	e.clk.Add(10 * time.Second)
	if err := c.RenewOnce(ctx); err == nil {
		t.Fatal("renewal against a closed port succeeded")
	}
	if rpm, tpm := lim.rates(); rpm != lastRPM || tpm != lastTPM {
		t.Fatalf("before the lease expired the client changed its rates to %g/%g", rpm, tpm)
	}
	e.clk.Add(6 * time.Second) // past the 15 s TTL
	if err := c.RenewOnce(ctx); err == nil {
		t.Fatal("renewal against a closed port succeeded")
	}
	if rpm, tpm := lim.rates(); !near(rpm, 150) || !near(tpm, 300_000) {
		t.Fatalf("fallback %g/%g, want budget ÷ 2 holders", rpm, tpm)
	}
	// A credential for another ingestion is refused with the reason.
	c.opts.URL = e.url
	c.opts.Ingestion = "b"
	var se *StatusError
	if err := c.RenewOnce(ctx); !errors.As(err, &se) || se.Code != http.StatusForbidden || !strings.Contains(se.Message, "may only lease") {
		t.Fatalf("renewal for another ingestion: %v, want a 403", err)
	}
}

// TestClientFirstLease: First applies the pod's first grant before it returns (so the pod's
// first provider request is already paced by it, not by the Job's frozen share), and Run then
// renews one period later; a manager that does not answer within the bound leaves the pod on its
// fallback share, and a later answer replaces it.
func TestClientFirstLease(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	e.renew("b", "b-0", nil) // b holds the whole budget: nothing is free for a newcomer yet
	frozen := ratebudget.Rates{RPM: 300, TPM: 600_000}
	newClient := func(url string) (*Client, *fakeLimiter) {
		lim := &fakeLimiter{u: Usage{RemainingRequests: -1, RemainingTokens: -1}}
		return NewClient(ClientOptions{URL: url, Credential: Credential(testKey, "ns", "a"), Namespace: "ns", Ingestion: "a",
			Job: "a-0", Holder: "a-0-pod", Fallback: frozen, Now: e.clk.Now, Log: logr.Discard()}, lim), lim
	}
	ctx := context.Background()

	c, lim := newClient(e.url)
	if err := c.First(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if rpm, tpm := lim.rates(); rpm >= 1 || tpm >= 1 || lim.set != 1 {
		t.Fatalf("after First: %g RPM, %g TPM (%d grants applied), want the newcomer's capped grant, not the frozen share", rpm, tpm, lim.set)
	}
	if s := e.srv.Snapshot(); len(s) != 1 || len(s[0].Holders) != 2 {
		t.Fatalf("the server does not count the newcomer: %+v", s)
	}

	// A manager that accepts the connection and never answers.
	hung := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(hung) })
	c2, lim2 := newClient(hs.URL + Path)
	if err := c2.First(ctx, 200*time.Millisecond); err == nil {
		t.Fatal("First against a manager that never answers succeeded")
	}
	if rpm, tpm := lim2.rates(); rpm != frozen.RPM || tpm != frozen.TPM || lim2.set != 1 {
		t.Fatalf("after the bound: %g/%g (%d applied), want the fallback share", rpm, tpm, lim2.set)
	}
	c2.opts.URL = e.url
	if err := c2.RenewOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if rpm, tpm := lim2.rates(); rpm >= frozen.RPM || tpm >= frozen.TPM {
		t.Fatalf("the lease after the fallback: %g/%g, want the server's grant", rpm, tpm)
	}
}

// count is the number of series c holds.
func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestDemand(t *testing.T) {
	cases := []struct {
		held              bool
		used, grant, want float64
	}{
		{true, 0, 100, 0},    // held back by its limiter: as much as it is given, whatever it used
		{true, 100, 100, 0},  //
		{false, 10, 100, 15}, // not held back: its use with headroom
		{false, 85, 100, 127.5},
		{false, 0, 100, 5}, // nothing at all: a small floor so it can start again
		{false, 50, 0, 0},  // unlimited grant: no demand to state
	}
	for _, c := range cases {
		if got := demand(c.held, c.used, c.grant, 0, 0).RPM; !near(got, c.want) {
			t.Errorf("demand(held %v, %g used of %g) = %g, want %g", c.held, c.used, c.grant, got, c.want)
		}
	}
}

func TestNewServerValidates(t *testing.T) {
	if _, err := NewServer(ServerOptions{Key: []byte("short"), Resolver: &budgets{}}); err == nil {
		t.Error("a short key was accepted")
	}
	if _, err := NewServer(ServerOptions{Key: testKey}); err == nil {
		t.Error("no resolver was accepted")
	}
}

// value reads one gauge or counter.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}

// TestSmallestDeclarationHolds: two ingestions on one key declaring different budgets share the
// smaller one (they draw from the same key); when the smaller one leaves, the other's holds.
func TestSmallestDeclarationHolds(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", Budget{Key: key.Key, Declared: ratebudget.Rates{RPM: 100, TPM: 0}})
	e.budgetLowered = true // by b's arrival
	var a, b Lease
	for range 3 {
		a, b = e.renew("a", "a-0", nil), e.renew("b", "b-0", nil)
		e.clk.Add(5 * time.Second)
	}
	if !near(a.RPM, 50) || !near(b.RPM, 50) || !near(a.TPM, 300_000) {
		t.Fatalf("a %+v, b %+v: want 100 RPM (b's) and 600,000 TPM (a's; b sets none) split", a, b)
	}
	e.renew("b", "b-0", func(r *RenewRequest) { r.Release = true })
	if a = e.renew("a", "a-0", nil); !near(a.RPM, 300) || !near(a.TPM, 600_000) {
		t.Fatalf("after b left: %+v, want a's own budget", a)
	}
}

// TestHolderFlood: a pod with its ingestion's credential invents Job and pod names. Each new
// name was a new holder with no bound: the leader's table (memory, an O(n log n) allocation per
// renewal) grew without end, and the budget's MaxHolders, hence the fallback share of every other
// ingestion on the key, shrank towards zero. Holders are bounded per ingestion by what its
// parallelism can run (twice: a replaced pod's lease lingers until it expires) and names by
// Kubernetes' name length.
func TestHolderFlood(t *testing.T) {
	e := newEnv(t)
	flooded := key
	flooded.MaxHolders = 2
	e.res.set("ns/a", flooded)
	e.res.set("ns/b", key)
	e.renew("b", "b-0", nil)
	cred := Credential(testKey, "ns", "a")
	refused := 0
	for i := range 50 {
		code, body := e.post(cred, RenewRequest{Namespace: "ns", Ingestion: "a", Job: "a-chunk-" + strconv.Itoa(i), Holder: "p"})
		switch code {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			if !strings.Contains(body, "at most 4 pods") {
				t.Fatalf("refusal %q does not say the bound", body)
			}
			refused++
		default:
			t.Fatalf("renewal %d: %d %s", i, code, body)
		}
	}
	if refused != 46 {
		t.Fatalf("%d of 50 invented holders refused, want 46 (bound 2 × parallelism 2)", refused)
	}
	if b := e.renew("b", "b-0", nil); b.Holders != 5 || b.MaxHolders != 5 || !near(b.Fallback.TPM, 600_000/5.0) {
		t.Fatalf("b after the flood: %+v, want 5 holders and a fallback of a fifth", b)
	}
	// A known holder still renews at the bound, and a released one frees its place.
	e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.Holder = "p" })
	e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.Holder = "p"; r.Release = true })
	e.renew("a", "a-chunk-9", func(r *RenewRequest) { r.Holder = "p" })
	long := strings.Repeat("x", 254)
	for _, r := range []RenewRequest{
		{Namespace: "ns", Ingestion: "a", Job: long, Holder: "p"},
		{Namespace: "ns", Ingestion: "a", Job: "j", Holder: long},
	} {
		if code, body := e.post(cred, r); code != http.StatusBadRequest || !strings.Contains(body, "at most 253") {
			t.Fatalf("a 254-character name: %d %s, want 400", code, body)
		}
	}
}

// TestLeaderChangeNewcomer: right after a leader change, a pod that holds no grant (a new pod)
// got everything the pods the new leader had heard from left free, while the pods it had not
// heard from yet still held the old leader's grants: together above the budget. During the
// warm-up a pod without a grant gets only what the re-learned pods gave up.
func TestLeaderChangeNewcomer(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.res.set("ns/b", key)
	e.res.set("ns/c", key)
	e.srv = e.newServer(nil)
	hs := httptest.NewServer(e.srv)
	t.Cleanup(hs.Close)
	e.url = hs.URL + Path
	// The old leader gave a and b half each; a renews first with the new one.
	half := &ratebudget.Rates{RPM: 150, TPM: 300_000}
	a := e.renew("a", "a-0", func(r *RenewRequest) { r.Current = half })
	c := e.renew("c", "c-0", nil)
	if held := a.TPM + half.TPM + c.TPM; held > 600_000*(1+1e-9)+2*minGrant {
		t.Fatalf("a %g + b's old %g + newcomer c %g = %g above the budget 600000", a.TPM, half.TPM, c.TPM, held)
	}
	if !c.Capped || c.RenewSeconds > 1 || c.TPM <= 0 || c.RPM <= 0 {
		t.Fatalf("newcomer held back: %+v, want a positive (not unlimited) grant, capped, renewing soon", c)
	}
	// b renews and gives up what is above its share; c grows into it.
	b := e.renew("b", "b-0", func(r *RenewRequest) { r.Current = half })
	c = e.renew("c", "c-0", nil)
	if sum := a.TPM + b.TPM + c.TPM; sum > 600_000*(1+1e-9)+3*minGrant || c.TPM < 1 {
		t.Fatalf("after b renewed: a %g + b %g + c %g", a.TPM, b.TPM, c.TPM)
	}
	// After one lease period every old grant has expired or been renewed: c gets its share.
	e.clk.Add(16 * time.Second)
	e.renew("a", "a-0", nil)
	e.renew("b", "b-0", nil)
	e.renew("c", "c-0", nil)
	e.renew("a", "a-0", nil)
	e.renew("b", "b-0", nil)
	if c = e.renew("c", "c-0", nil); !near(c.TPM, 200_000) {
		t.Fatalf("after the warm-up: c %g, want a third", c.TPM)
	}
}

// TestBackoffOutlivesTheLastHolder: chunk pods come and go (parallelism 1: one after another). When
// the last holder released, the budget's state went with it, its backoff included, so the next
// pod started at the full declaration and stormed again: a budget declared above the provider's
// limit never converged. The backoff stays until it has recovered.
func TestBackoffOutlivesTheLastHolder(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.renew("a", "a-chunk-0", nil)
	e.clk.Add(5 * time.Second)
	if l := e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.UsedRequests, r.RateLimited = 20, 10 }); !near(l.TPM, 300_000) {
		t.Fatalf("after sustained 429s: %g TPM, want half", l.TPM)
	}
	e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.Release = true })
	if l := e.renew("a", "a-chunk-1", nil); !near(l.TPM, 300_000) || l.Holders != 1 {
		t.Fatalf("the next chunk's pod: %+v, want half the budget still (backoff kept)", l)
	}
	if f := value(t, e.srv.opts.Metrics.factor.WithLabelValues(key.Key)); f != 0.5 {
		t.Fatalf("backoff factor metric %g, want 0.5", f)
	}
}

// TestIdleBackoffIsForgotten: a backed-off budget whose last holder went is remembered for the
// next pod, but not for ever (it was: a newcomer hours later started at the old factor).
func TestIdleBackoffIsForgotten(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	other := key
	other.Key = "another budget"
	e.res.set("ns/b-other", other)
	e.renew("a", "a-chunk-0", nil)
	e.clk.Add(5 * time.Second)
	e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.UsedRequests, r.RateLimited = 20, 10 })
	e.renew("a", "a-chunk-0", func(r *RenewRequest) { r.Release = true })
	// Just short of idleForget: still remembered.
	e.clk.Add(idleForget - 10*time.Second)
	e.renew("b-other", "x", nil) // any renewal sweeps; another ingestion on no budget of ours
	if l := e.renew("a", "a-chunk-1", nil); l.TPM > 400_000 {
		t.Fatalf("a pod %v after the last holder left: %g TPM, want the backed-off half (plus a quiet round's step)", idleForget-10*time.Second, l.TPM)
	}
	e.renew("a", "a-chunk-1", func(r *RenewRequest) { r.Release = true })
	e.clk.Add(idleForget + 10*time.Second)
	e.renew("b-other", "x", nil)
	if l := e.renew("a", "a-chunk-2", nil); !near(l.TPM, 600_000) {
		t.Fatalf("a pod %v after the last holder left: %g TPM, want the whole budget again", idleForget+10*time.Second, l.TPM)
	}
}

// TestHostileCounts: usage counts are summed per round; a renewal reporting MaxInt64 requests
// overflowed the round's sum, which then read as a round of almost nothing but 429s and halved
// the budget of every ingestion on the key. 429s beyond the requests reported are not counted
// either. Oversized bodies are refused.
func TestHostileCounts(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests = math.MaxInt64 })
	e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests, r.RateLimited = 2, 1 })
	e.clk.Add(5 * time.Second)
	if l := e.renew("a", "a-0", nil); !near(l.TPM, 600_000) {
		t.Fatalf("after 1 429 in 2^63 requests: %g TPM, want the whole budget", l.TPM)
	}
	e.clk.Add(5 * time.Second)
	e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests, r.RateLimited = 0, 50 })
	e.clk.Add(5 * time.Second)
	if l := e.renew("a", "a-0", func(r *RenewRequest) { r.UsedRequests = 1000 }); !near(l.TPM, 600_000) {
		t.Fatalf("after 50 429s reported with no requests: %g TPM, want the whole budget", l.TPM)
	}
	big := map[string]any{"namespace": "ns", "ingestion": "a", "job": "a-0", "holder": strings.Repeat("x", maxBody)}
	if code, body := e.post(Credential(testKey, "ns", "a"), big); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "exceeds") {
		t.Fatalf("a %d-byte body: %d %s, want 413", maxBody, code, body)
	}
}

// TestVanishedHoldersLeaveTheMetrics: pods that die without releasing expire; a budget no renewal
// reaches any more kept its last gauges (holders, granted) for ever, so a dashboard showed pods
// holding a key nobody used. Any renewal sweeps the other budgets once a renewal period.
func TestVanishedHoldersLeaveTheMetrics(t *testing.T) {
	e := newEnv(t)
	e.res.set("ns/a", key)
	other := Budget{Key: "ns/other-key//text-embedding-3-small", Declared: ratebudget.Rates{RPM: 10}}
	e.res.set("ns/b", other)
	e.renew("a", "a-0", nil)
	e.renew("a", "a-1", nil)
	e.renew("b", "b-0", nil)
	if h := value(t, e.srv.opts.Metrics.holders.WithLabelValues(key.Key)); h != 2 {
		t.Fatalf("holders %g, want 2", h)
	}
	// a's pods die without releasing; b keeps renewing.
	for range 4 {
		e.clk.Add(5 * time.Second)
		e.renew("b", "b-0", nil)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == MetricHolders && len(mf.GetMetric()) != 1 {
			t.Fatalf("%d holder series, want only b's budget's", len(mf.GetMetric()))
		}
	}
	if n := len(e.srv.Snapshot()); n != 1 {
		t.Fatalf("%d budgets in the table, want 1", n)
	}
}

// TestClientFallsBackWhileTheRenewalHangs: a leader that stops answering (blackholed, not
// refusing) kept a renewal waiting for the HTTP client's timeout, and the pod kept its grant
// past the lease's expiry while the leader had already handed it to others. A renewal is cut
// at the lease's expiry and the fallback applies then.
func TestClientFallsBackWhileTheRenewalHangs(t *testing.T) {
	hang := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if !first {
			select { // the leader hangs
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		_ = json.NewEncoder(w).Encode(Lease{Budget: "k", RPM: 100, TPM: 100_000, BurstTokens: 2000, TTLSeconds: 0.3, RenewSeconds: 0.1})
	}))
	t.Cleanup(hs.Close)
	lim := &fakeLimiter{u: Usage{RemainingRequests: -1, RemainingTokens: -1}}
	c := NewClient(ClientOptions{URL: hs.URL + Path, Credential: "c", Namespace: "ns", Ingestion: "a", Job: "a-0", Holder: "p",
		Fallback: ratebudget.Rates{RPM: 7, TPM: 7000}, HTTPClient: &http.Client{Timeout: time.Minute}, Log: logr.Discard()}, lim)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	t.Cleanup(func() { close(hang) }) // first: the release at the end is answered
	deadline := time.Now().Add(10 * time.Second)
	granted := false
	for time.Now().Before(deadline) {
		rpm, tpm := lim.rates()
		granted = granted || rpm == 100
		if granted && rpm == 7 && tpm == 7000 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	rpm, tpm := lim.rates()
	t.Fatalf("10 s after a 0.3 s lease the pod still runs at %g/%g (granted first: %v), want the fallback 7/7000", rpm, tpm, granted)
}

// TestBackoffResumesFromTheLastLeader: a new leader starts a budget it does not know from the
// factor the last one left (a declared budget's status), so a key the provider was refusing is
// not stormed again at the full declaration after every leader change; a factor is taken only
// for a budget the leader does not know yet, never above 1 nor below the floor.
func TestBackoffResumesFromTheLastLeader(t *testing.T) {
	for _, c := range []struct {
		name string
		last float64
		want float64
	}{
		{"backed off to half", 0.5, 0.5},
		{"below the floor: the floor", 0.01, ratebudget.BackoffFloor},
		{"none", 0, 1},
		{"not backed off", 1, 1},
		{"above 1: none", 1.5, 1},
		{"negative: none", -0.5, 1},
		{"not a number: none", math.NaN(), 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			b := key
			b.LastFactor = c.last
			e.res.set("ns/a", b)
			l := e.renew("a", "a-0", nil)
			s := e.srv.Snapshot()
			if len(s) != 1 || !near(s[0].Factor, c.want) {
				t.Fatalf("snapshot %+v, want factor %g", s, c.want)
			}
			if !near(l.TPM, key.Declared.TPM*c.want) || !near(l.RPM, key.Declared.RPM*c.want) {
				t.Fatalf("grant %g RPM, %g TPM; want %g of the declared %+v", l.RPM, l.TPM, c.want, key.Declared)
			}
			// Known now: a later resolution's factor (the status the leader itself wrote, or a
			// stale one) does not reset it.
			b.LastFactor = 0.2
			e.res.set("ns/a", b)
			e.clk.Add(5 * time.Second)
			e.renew("a", "a-0", nil)
			if f := e.srv.Snapshot()[0].Factor; f < c.want-1e-9 {
				t.Fatalf("factor %g after a renewal resolving 0.2, want it to stay from %g up", f, c.want)
			}
		})
	}
}
