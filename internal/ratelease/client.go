package ratelease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// Limiter is what a lease drives: the embedder (embedding.Embedder implements it).
type Limiter interface {
	// SetRates sets the budgets per minute (0: unlimited) and the token burst.
	SetRates(rpm, tpm float64, burstTokens int)
	// Usage returns the running totals.
	Usage() Usage
	// MaxBatchTokens is the largest request.
	MaxBatchTokens() int
}

// Usage is a limiter's running totals.
type Usage struct {
	// Requests sent (each attempt), tokens billed, 429s received.
	Requests, Tokens, RateLimited int64
	// The provider's last x-ratelimit-remaining-requests and -tokens (-1: not seen).
	RemainingRequests, RemainingTokens int64
	// Waited is the time requests waited for the limiter (summed over concurrent waits).
	Waited time.Duration
}

// ClientOptions configure a Client.
type ClientOptions struct {
	URL        string
	Credential string
	// Namespace, Ingestion, Job and Holder (the pod) identify the lease.
	Namespace, Ingestion, Job, Holder, Model string
	// Fallback is the static share used until the first lease, and after a lease expired
	// when no lease answer ever said better (the Job's frozen share).
	Fallback   ratebudget.Rates
	HTTPClient *http.Client
	Log        logr.Logger
	Now        func() time.Time
}

// Client renews one pod's lease and applies it to a Limiter.
type Client struct {
	opts ClientOptions
	lim  Limiter

	// state at the last renewal
	last     Usage
	lastAt   time.Time
	current  *ratebudget.Rates // the grant in force (nil: fallback)
	expires  time.Time
	fallback ratebudget.Rates
	renew    time.Duration
	fellBack bool
	capped   bool // the last grant was below the pod's share
	first    bool // First ran
}

// NewClient returns a Client; Run renews until its context ends.
func NewClient(opts ClientOptions, lim Limiter) *Client {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 3 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{opts: opts, lim: lim, fallback: opts.Fallback, renew: 3 * time.Second, lastAt: opts.Now()}
}

// FirstLeaseWait bounds how long a pod waits for its first lease before its first provider
// request; then it starts on its fallback share.
const FirstLeaseWait = 5 * time.Second

// First takes the pod's first lease, waiting at most wait (FirstLeaseWait when ≤ 0). Call it
// before the first provider request: a pod that started on its Job's frozen share sent at that
// rate until the lease came, on top of what the budget's holders were granted. When the manager
// does not answer in time the fallback share applies, and Run keeps trying.
func (c *Client) First(ctx context.Context, wait time.Duration) error {
	if wait <= 0 {
		wait = FirstLeaseWait
	}
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := c.RenewOnce(fctx)
	if err != nil && c.current == nil && !c.fellBack {
		c.applyFallback()
	}
	c.first = true
	return err
}

// Run renews the lease every few seconds until ctx ends, then releases it (best effort) so the
// others get the share at once. After First, its first renewal is one period later.
func (c *Client) Run(ctx context.Context) {
	skip := c.first && c.current != nil
	for {
		if skip {
			skip = false
		} else if err := c.RenewOnce(ctx); err != nil && ctx.Err() == nil {
			c.opts.Log.Info("rate lease renewal failed; keeping the last lease until it expires", "error", err.Error())
		}
		// Wake at the lease's expiry at the latest, to fall back then.
		wait := c.renew
		if c.current != nil {
			wait = max(0, min(wait, c.expires.Sub(c.opts.Now())))
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.release(rctx)
			cancel()
			return
		case <-time.After(wait):
		}
	}
}

// heldBack: a pod whose requests waited for its limiter this share of a renewal interval (summed
// over its concurrent requests) is held back by its grant and asks for as much as it is given;
// otherwise it asks for what it used, with room to grow. (Its use alone says little: a grant of
// a few requests per interval makes use in one interval all or nothing.)
const heldBack = 0.1

// RenewOnce sends one renewal and applies the answer, or, when the manager cannot be reached
// and the lease has expired, the fallback share.
func (c *Client) RenewOnce(ctx context.Context) error {
	now := c.opts.Now()
	if c.current != nil && !now.Before(c.expires) {
		// Expired (a late tick, a slow leader): the leader has handed the grant on, whatever it
		// answers now.
		c.applyFallback()
	}
	u := c.lim.Usage()
	interval := now.Sub(c.lastAt)
	body := RenewRequest{
		Namespace: c.opts.Namespace, Ingestion: c.opts.Ingestion, Job: c.opts.Job, Holder: c.opts.Holder,
		Model:        c.opts.Model,
		UsedRequests: max(0, u.Requests-c.last.Requests), UsedTokens: max(0, u.Tokens-c.last.Tokens),
		RateLimited:       max(0, u.RateLimited-c.last.RateLimited),
		RemainingRequests: u.RemainingRequests, RemainingTokens: u.RemainingTokens,
		MaxRequestTokens: c.lim.MaxBatchTokens(),
		Current:          c.current,
	}
	if c.current != nil && !c.capped && interval > 0 {
		minutes := interval.Minutes()
		held := float64(u.Waited-c.last.Waited) >= heldBack*float64(interval)
		body.Demand = demand(held, float64(body.UsedRequests)/minutes, c.current.RPM, float64(body.UsedTokens)/minutes, c.current.TPM)
	}
	// A renewal is cut at the lease's expiry: the leader has handed the grant on by then, and a
	// leader that hangs must not keep the pod on it until the HTTP client gives up.
	pctx := ctx
	if c.current != nil {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, max(0, c.expires.Sub(now)))
		defer cancel()
	}
	lease, err := c.post(pctx, body)
	if err != nil {
		if c.current != nil && pctx.Err() != nil && ctx.Err() == nil || c.current == nil && !c.fellBack {
			c.applyFallback()
		}
		return err
	}
	c.last, c.lastAt = u, now
	c.apply(lease, now)
	return nil
}

// demand is the rate a pod asks for: 0 (as much as it is given) when its limiter held it back,
// else its use with headroom, and never less than a twentieth of its grant so it can start again.
func demand(held bool, usedRPM, grantRPM, usedTPM, grantTPM float64) ratebudget.Rates {
	one := func(used, grant float64) float64 {
		if held || grant <= 0 {
			return 0
		}
		return max(used*1.5, grant*0.05)
	}
	return ratebudget.Rates{RPM: one(usedRPM, grantRPM), TPM: one(usedTPM, grantTPM)}
}

func (c *Client) apply(l Lease, now time.Time) {
	if c.current == nil || changed(c.current.TPM, l.TPM) || changed(c.current.RPM, l.RPM) {
		c.opts.Log.Info("rate lease", "rpm", l.RPM, "tpm", l.TPM, "burstTokens", l.BurstTokens, "holders", l.Holders, "capped", l.Capped)
	}
	c.lim.SetRates(l.RPM, l.TPM, l.BurstTokens)
	c.current = &ratebudget.Rates{RPM: l.RPM, TPM: l.TPM}
	c.expires = now.Add(time.Duration(l.TTLSeconds * float64(time.Second)))
	// The fallback only shrinks: a new leader has seen few holders yet, and its budget ÷ holders
	// would be more than this pod's part of the budget while the others are still out there.
	if l.Fallback.RPM > 0 || l.Fallback.TPM > 0 {
		c.fallback = ratebudget.Rates{RPM: minLimit(c.fallback.RPM, l.Fallback.RPM), TPM: minLimit(c.fallback.TPM, l.Fallback.TPM)}
	}
	if l.RenewSeconds > 0 {
		c.renew = time.Duration(l.RenewSeconds * float64(time.Second))
	}
	c.fellBack = false
	c.capped = l.Capped
}

// changed reports a grant change worth a log line (a quarter or more).
func changed(old, new float64) bool {
	return old <= 0 != (new <= 0) || old > 0 && (new > old*1.25 || new < old*0.75)
}

func (c *Client) applyFallback() {
	c.opts.Log.Info("rate lease expired without a renewal; using the static share until the manager answers",
		"rpm", c.fallback.RPM, "tpm", c.fallback.TPM)
	c.lim.SetRates(c.fallback.RPM, c.fallback.TPM, 0)
	c.current = nil
	c.fellBack = true
}

func (c *Client) release(ctx context.Context) error {
	_, err := c.post(ctx, RenewRequest{Namespace: c.opts.Namespace, Ingestion: c.opts.Ingestion, Job: c.opts.Job,
		Holder: c.opts.Holder, Model: c.opts.Model, Release: true})
	return err
}

// StatusError is a refusal by the lease service.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("rate lease: %d: %s", e.Code, e.Message) }

func (c *Client) post(ctx context.Context, body RenewRequest) (Lease, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Lease{}, fmt.Errorf("encode renewal: %w", err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.opts.URL, bytes.NewReader(b))
	if err != nil {
		return Lease{}, fmt.Errorf("rate lease request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+c.opts.Credential)
	resp, err := c.opts.HTTPClient.Do(hr)
	if err != nil {
		return Lease{}, fmt.Errorf("renew rate lease: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Lease{}, fmt.Errorf("read rate lease: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		return Lease{}, &StatusError{Code: resp.StatusCode, Message: e.Error}
	}
	var l Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return Lease{}, fmt.Errorf("decode rate lease: %w", err)
	}
	if l.RPM < 0 || l.TPM < 0 || l.TTLSeconds < 0 {
		return Lease{}, errors.New("rate lease: negative rates in the answer")
	}
	return l, nil
}
