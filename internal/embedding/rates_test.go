package embedding

import (
	"context"
	"testing"
	"time"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// TestSetRates: a lease's grant replaces the budgets of a running embedder, the token burst
// never drops below the largest batch, and 0 means unlimited.
func TestSetRates(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 600, TokensPerMinute: 200_000})
	if rpm, tpm, burst := e.Rates(); rpm != 600 || tpm != 200_000 || burst != e.MaxBatchTokens() {
		t.Fatalf("initial rates %g/%g burst %d, want 600/200000 burst %d", rpm, tpm, burst, e.MaxBatchTokens())
	}
	e.SetRates(120, 30_000, 1)
	if rpm, tpm, burst := e.Rates(); rpm != 120 || tpm != 30_000 || burst != e.MaxBatchTokens() {
		t.Fatalf("after a small grant: %g/%g burst %d, want 120/30000 burst %d (the largest batch)", rpm, tpm, burst, e.MaxBatchTokens())
	}
	e.SetRates(300, 90_000, e.MaxBatchTokens()+500)
	if _, _, burst := e.Rates(); burst != e.MaxBatchTokens()+500 {
		t.Fatalf("burst %d, want the grant's %d", burst, e.MaxBatchTokens()+500)
	}
	e.SetRates(0, 0, 0)
	if rpm, tpm, _ := e.Rates(); rpm != 0 || tpm != 0 {
		t.Fatalf("after an unlimited grant: %g/%g, want 0/0", rpm, tpm)
	}
	// Changed limits still admit work.
	e.SetRates(6000, 1_000_000, 0)
	if _, _, err := e.Embed(context.Background(), texts(3)); err != nil {
		t.Fatalf("Embed after SetRates: %v", err)
	}
}

// TestRateLimitRemaining: the provider's x-ratelimit-remaining-* headers are kept for the
// lease service.
func TestRateLimitRemaining(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{RPM: 50, TPM: 100_000})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 5, MaxInFlight: 1})
	if r, tk := e.RateLimitRemaining(); r != -1 || tk != -1 {
		t.Fatalf("before any request: %d/%d, want -1/-1", r, tk)
	}
	if _, _, err := e.Embed(context.Background(), texts(10)); err != nil { // two requests
		t.Fatalf("Embed: %v", err)
	}
	used := srv.Stats().Tokens
	r, tk := e.RateLimitRemaining()
	if r != 48 || tk != 100_000-used {
		t.Fatalf("remaining %d requests, %d tokens; want 48 and %d (the fake's headers)", r, tk, 100_000-used)
	}
}

// TestRaisedGrantReachesAWaitingRequest: once a lease drives the limits, a request waiting at
// a tiny rate goes as soon as the grant is raised, not after the wait computed at the old rate
// (one request per hour here; the test's deadline is far shorter). A first grant grows from zero,
// so even the first request waits for it.
func TestRaisedGrantReachesAWaitingRequest(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 1, MaxInFlight: 1})
	e.SetRates(1.0/60, 0, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := e.Embed(ctx, texts(2))
		done <- err
	}()
	// Raise the grant once a request has waited a while.
	for e.Waited() < 300*time.Millisecond {
		select {
		case err := <-done:
			t.Fatalf("Embed returned before the grant was raised: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got := srv.Stats().Accepted; got != 0 {
		t.Fatalf("%d requests accepted under a first grant of one an hour still growing from zero, want 0", got)
	}
	e.SetRates(6000, 0, 0)
	if err := <-done; err != nil {
		t.Fatalf("the waiting requests did not go after the grant was raised: %v", err)
	}
	if got := srv.Stats().Accepted; got != 2 {
		t.Fatalf("%d requests accepted, want 2", got)
	}
}

// TestWaitedCountsWaitsInProgress: a request stuck behind a tiny grant counts as waiting while
// it waits, not only once it is through (a lease client would otherwise take the pod for idle).
func TestWaitedCountsWaitsInProgress(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 1, MaxInFlight: 1})
	e.SetRates(1.0/60, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := e.Embed(ctx, texts(2)) // the second request waits an hour
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for e.Waited() < 300*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("Waited %s while a request waits", e.Waited())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if w := e.Waited(); w < 300*time.Millisecond {
		t.Fatalf("Waited %s after the wait ended", w)
	}
}

// TestFirstGrantStartsEmpty: the buckets fill at the Job's frozen share from New until the first
// lease comes; what they gathered is the frozen share's, not the grant's, and sent at once it
// lands on top of what the budget's holders are granted. The first grant empties both.
func TestFirstGrantStartsEmpty(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), RequestsPerMinute: 600, TokensPerMinute: 200_000})
	deadline := time.Now().Add(20 * time.Second)
	for e.tokens.Tokens() < 1000 || e.requests.Tokens() < 1 { // 3,333 tokens and 10 requests a second
		if time.Now().After(deadline) {
			t.Fatalf("the buckets did not fill: %g tokens, %g requests", e.tokens.Tokens(), e.requests.Tokens())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.SetRates(60, 6_000, 0) // one request and 100 tokens a second
	if tok, req := e.tokens.Tokens(), e.requests.Tokens(); tok >= 1000 || req >= 1 {
		t.Fatalf("after the first grant the buckets hold %g tokens and %g requests, want them empty", tok, req)
	}
	// Later grants keep what the bucket holds (a grant raised mid-wait must not cost the wait).
	for e.tokens.Tokens() < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the token bucket did not refill: %g", e.tokens.Tokens())
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.SetRates(120, 12_000, 0)
	if tok := e.tokens.Tokens(); tok < 200 {
		t.Fatalf("a later grant emptied the token bucket (%g left)", tok)
	}
}
