package embedding

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const testKey = "sk-test-0123456789abcdef"

func startFake(t *testing.T, opts fakeopenai.Options) *fakeopenai.Server {
	t.Helper()
	if opts.APIKeys == nil {
		opts.APIKeys = []string{testKey}
	}
	srv, err := fakeopenai.Start(opts)
	if err != nil {
		t.Fatalf("start fake openai: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func texts(n int) []Input {
	in := make([]Input, n)
	for i := range in {
		in[i] = Input{ID: int64(1000 + i), Text: fmt.Sprintf("row %d: the quick brown fox jumps over the lazy dog %d times", i, i*7)}
	}
	return in
}

func checkOutputs(t *testing.T, inputs []Input, outs []Output, dims int) {
	t.Helper()
	byID := make(map[int64]string, len(inputs))
	for _, in := range inputs {
		byID[in.ID] = in.Text
	}
	if len(outs) != len(inputs) {
		t.Fatalf("got %d outputs for %d inputs", len(outs), len(inputs))
	}
	seen := map[int64]bool{}
	for _, o := range outs {
		text, ok := byID[o.ID]
		if !ok || seen[o.ID] {
			t.Fatalf("output ID %d unknown or repeated", o.ID)
		}
		seen[o.ID] = true
		want := fakeopenai.Vector(text, dims)
		if len(o.Vector) != dims {
			t.Fatalf("ID %d: %d dims, want %d", o.ID, len(o.Vector), dims)
		}
		for i := range want {
			if o.Vector[i] != want[i] {
				t.Fatalf("ID %d: value %d = %v, want %v (vector of another text or decoding error)", o.ID, i, o.Vector[i], want[i])
			}
		}
	}
}

func TestEmbedDecodesBase64FromFake(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 7, ExpectedDimension: 1536})
	inputs := texts(50)
	outs, rejected, err := e.Embed(context.Background(), inputs)
	if err != nil || len(rejected) != 0 {
		t.Fatalf("Embed: %v, rejected %v", err, rejected)
	}
	checkOutputs(t, inputs, outs, 1536)

	st, fs := e.Stats(), srv.Stats()
	if fs.Accepted != 8 || st.Requests != 8 { // ceil(50/7)
		t.Errorf("requests: embedder %d, fake %d; want 8", st.Requests, fs.Accepted)
	}
	if st.Inputs != 50 || st.Retries != 0 {
		t.Errorf("stats = %+v, want 50 inputs and no retries", st)
	}
	if st.Tokens != fs.Tokens || st.Tokens == 0 {
		t.Errorf("tokens: embedder counted usage %d, fake billed %d", st.Tokens, fs.Tokens)
	}
}

func TestEmbedShortenedDimensions(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), Dimensions: 256})
	inputs := texts(3)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 256)
}

// shuffler is a tiny OpenAI endpoint that answers with the data in reverse order, or
// corrupted as the test asks.
func shuffler(t *testing.T, mutate func(data []map[string]any) []map[string]any) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Input          []string `json:"input"`
			EncodingFormat string   `json:"encoding_format"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.EncodingFormat != "base64" {
			http.Error(w, `{"error":{"message":"bad request","type":"invalid_request_error"}}`, http.StatusBadRequest)
			return
		}
		data := make([]map[string]any, len(req.Input))
		for i, text := range req.Input {
			v := fakeopenai.Vector(text, 4)
			raw := make([]byte, 0, 16)
			for _, f := range v {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
			}
			data[i] = map[string]any{"object": "embedding", "index": i, "embedding": base64.StdEncoding.EncodeToString(raw)}
		}
		for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
			data[i], data[j] = data[j], data[i]
		}
		data = mutate(data)
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data, "model": "m",
			"usage": map[string]int{"prompt_tokens": 1, "total_tokens": 1}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestResultsMatchedByIndexNotPosition(t *testing.T) {
	srv := shuffler(t, func(d []map[string]any) []map[string]any { return d })
	e := newTestEmbedder(t, Config{BaseURL: srv.URL + "/v1", ExpectedDimension: 4})
	inputs := texts(9)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 4)
}

func TestMalformedResponsesAreErrors(t *testing.T) {
	cases := map[string]func([]map[string]any) []map[string]any{
		"missing one":    func(d []map[string]any) []map[string]any { return d[1:] },
		"extra one":      func(d []map[string]any) []map[string]any { return append(d, d[0]) },
		"repeated index": func(d []map[string]any) []map[string]any { d[1]["index"] = d[0]["index"]; return d },
		"out of range":   func(d []map[string]any) []map[string]any { d[0]["index"] = len(d); return d },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			srv := shuffler(t, mutate)
			e := newTestEmbedder(t, Config{BaseURL: srv.URL + "/v1", MaxRetries: 1, BaseBackoff: time.Millisecond})
			outs, _, err := e.Embed(context.Background(), texts(5))
			var ex *RetryExhaustedError
			if !errors.As(err, &ex) || ex.Attempts != 2 {
				t.Fatalf("err = %v, want a RetryExhaustedError after 2 attempts", err)
			}
			if len(outs) != 0 {
				t.Fatalf("got %d outputs from a malformed response", len(outs))
			}
		})
	}
}

func TestPermanentErrorsFailFast(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(*fakeopenai.Server, *Config)
		reason string
	}{
		{"unauthorized", func(s *fakeopenai.Server, c *Config) { s.SetUnauthorized(true) }, worker.ReasonUnauthorized},
		{"wrong key", func(s *fakeopenai.Server, c *Config) { c.APIKey = "sk-wrong" }, worker.ReasonUnauthorized},
		{"insufficient quota", func(s *fakeopenai.Server, c *Config) { s.SetInsufficientQuota(true) }, worker.ReasonQuotaExceeded},
		{"unknown model", func(s *fakeopenai.Server, c *Config) { c.Model = "text-embedding-9-huge" }, worker.ReasonModelNotFound},
		{"dimension mismatch", func(s *fakeopenai.Server, c *Config) { s.SetDimensionOverride(1024) }, worker.ReasonDimension},
		{"expected dimension differs", func(s *fakeopenai.Server, c *Config) { c.ExpectedDimension = 3072 }, worker.ReasonDimension},
		{"invalid request", func(s *fakeopenai.Server, c *Config) {
			c.Dimensions = 4096 // more than text-embedding-3-small has: about the request, not an input
		}, worker.ReasonPermanentError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFake(t, fakeopenai.Options{})
			cfg := Config{APIKey: testKey, BaseURL: srv.URL(), Model: "text-embedding-3-small", ExpectedDimension: 1536, MaxRetries: 5}
			tc.setup(srv, &cfg)
			e := newTestEmbedder(t, cfg)
			_, _, err := e.Embed(context.Background(), texts(3))
			var perm *PermanentError
			if !errors.As(err, &perm) || perm.Reason != tc.reason {
				t.Fatalf("err = %v, want PermanentError %s", err, tc.reason)
			}
			if n := srv.Stats().Requests; n != 1 {
				t.Errorf("fake saw %d requests, want 1 (no retry of a permanent error)", n)
			}
			if st := e.Stats(); st.Retries != 0 {
				t.Errorf("retries = %d, want 0", st.Retries)
			}
			if strings.Contains(err.Error(), cfg.APIKey) {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestKeyEchoedByServerIsRedacted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s.","type":"invalid_request_error","code":"invalid_api_key"}}`,
			strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	}))
	defer srv.Close()
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL + "/v1"})
	_, _, err := e.Embed(context.Background(), texts(1))
	var perm *PermanentError
	if !errors.As(err, &perm) || perm.Reason != worker.ReasonUnauthorized {
		t.Fatalf("err = %v, want Unauthorized", err)
	}
	if strings.Contains(err.Error(), testKey) || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("error %q leaks or loses the key redaction", err)
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.FailNext(3, http.StatusServiceUnavailable)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	inputs := texts(4)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	if st := e.Stats(); st.Retries != 3 || st.Requests != 4 || st.RateLimited != 0 {
		t.Fatalf("stats = %+v, want 3 retries of 4 requests, none rate-limited", st)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.FailNext(100, http.StatusInternalServerError)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxRetries: 2, BaseBackoff: time.Millisecond})
	_, _, err := e.Embed(context.Background(), texts(2))
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 || ex.Reason() != worker.ReasonRetryableError {
		t.Fatalf("err = %v, want RetryExhaustedError after 3 attempts", err)
	}
	var perm *PermanentError
	if errors.As(err, &perm) {
		t.Fatalf("a 500 became permanent: %v", err)
	}
	if n := srv.Stats().Requests; n != 3 {
		t.Fatalf("fake saw %d requests, want 3", n)
	}
}

func TestRetryTimeIsBounded(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	// The server asks for 10 minutes; the retry budget is 1 s, so give up at once.
	srv.RateLimitNext(1, 10*time.Minute)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxRetryTime: time.Second})
	_, _, err := e.Embed(context.Background(), texts(1))
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 1 {
		t.Fatalf("err = %v, want RetryExhaustedError after 1 attempt", err)
	}
}

func TestConnectionErrorsAreRetryable(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	url := srv.URL()
	_ = srv.Close() // nothing listens any more
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: url, MaxRetries: 1, BaseBackoff: time.Millisecond})
	_, _, err := e.Embed(context.Background(), texts(1))
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 2 {
		t.Fatalf("err = %v, want RetryExhaustedError after 2 attempts", err)
	}
}

// timingTransport records when each request left and each response came back.
type timingTransport struct {
	mu   sync.Mutex
	sent []time.Time
	recv []time.Time
}

func (tt *timingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tt.mu.Lock()
	tt.sent = append(tt.sent, time.Now())
	tt.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(r)
	tt.mu.Lock()
	tt.recv = append(tt.recv, time.Now())
	tt.mu.Unlock()
	return resp, err
}

func TestRetryAfterIsHonoured(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	const wait = 700 * time.Millisecond
	srv.RateLimitNext(2, wait)
	tt := &timingTransport{}
	// A tiny base backoff: only Retry-After-Ms can explain a long pause.
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), BaseBackoff: time.Millisecond,
		MaxBackoff: time.Millisecond, HTTPClient: &http.Client{Transport: tt}})
	inputs := texts(2)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	if len(tt.sent) != 3 {
		t.Fatalf("%d requests, want 3", len(tt.sent))
	}
	for i := 1; i < 3; i++ {
		if gap := tt.sent[i].Sub(tt.recv[i-1]); gap < wait {
			t.Errorf("request %d sent %v after the 429, before Retry-After %v", i+1, gap, wait)
		}
	}
	if st := e.Stats(); st.RateLimited != 2 || st.Retries != 2 {
		t.Errorf("stats = %+v, want 2 rate-limited retries", st)
	}
}

func TestRateLimitStormKeepsRequestRate(t *testing.T) {
	// The fake meters one-second windows without limits of its own, so its recorded peak shows
	// what the embedder's limiter let through. 300 RPM is 5 per second.
	srv := startFake(t, fakeopenai.Options{Window: time.Second})
	srv.RateLimitNext(6, 50*time.Millisecond)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 2,
		RequestsPerMinute: 300, MaxInFlight: 4})
	inputs := texts(24) // 12 batches
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	st, fs := e.Stats(), srv.Stats()
	if st.RateLimited != 6 || st.Retries != 6 || fs.RateLimited != 6 {
		t.Errorf("embedder saw %d 429s and %d retries, fake sent %d; want 6", st.RateLimited, st.Retries, fs.RateLimited)
	}
	if fs.Accepted != 12 || st.Requests != 18 {
		t.Errorf("accepted %d of %d requests, want 12 of 18", fs.Accepted, st.Requests)
	}
	// Evenly spaced at 200 ms, a 1 s window holds 5; one more allows for scheduling jitter.
	// Without the limiter all 12 land in the same window.
	if peak := srv.Peak(); peak.Requests > 6 {
		t.Errorf("peak %d accepted requests in one second, budget is 5", peak.Requests)
	}
}

func TestTokenBudgetShapesTraffic(t *testing.T) {
	// 30,000 TPM = 500 tokens/s; the fake's one-second window shows the peak.
	srv := startFake(t, fakeopenai.Options{Window: time.Second})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 8, TokensPerMinute: 30000})
	inputs := texts(100)
	batches, _ := e.Split(inputs)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	biggest := 0
	for _, b := range batches {
		biggest = max(biggest, b.Tokens)
	}
	fs := srv.Stats()
	if fs.Tokens < 1500 {
		t.Fatalf("only %d tokens sent; the test needs several seconds of budget", fs.Tokens)
	}
	// The bucket starts empty, so a one-second window holds at most a second of budget plus
	// the batch at its edge (and one batch of slack for jitter). Unlimited, it would be all.
	if peak := srv.Peak(); peak.Tokens > 500+2*biggest {
		t.Errorf("peak %d tokens in one second, budget is 500 (batches up to %d)", peak.Tokens, biggest)
	}
}

func TestCancelWhileWaitingForBudget(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	// 60 tokens per minute: the first batch would wait about a minute.
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), TokensPerMinute: 60})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, _, err := e.Embed(ctx, texts(1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var perm *PermanentError
	if errors.As(err, &perm) {
		t.Fatalf("cancellation reported as permanent: %v", err)
	}
	if n := srv.Stats().Requests; n != 0 {
		t.Fatalf("fake saw %d requests, want 0", n)
	}
}

// concurrencyTransport tracks how many requests are outstanding at once.
type concurrencyTransport struct {
	mu        sync.Mutex
	now, peak int
}

func (ct *concurrencyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ct.mu.Lock()
	ct.now++
	ct.peak = max(ct.peak, ct.now)
	ct.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(r)
	ct.mu.Lock()
	ct.now--
	ct.mu.Unlock()
	return resp, err
}

func TestRequestsOverlapUpToMaxInFlight(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{Latency: 300 * time.Millisecond})
	ct := &concurrencyTransport{}
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 1, MaxInFlight: 3,
		HTTPClient: &http.Client{Transport: ct}})
	inputs := texts(7)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	// Never more than the cap; and with 300 ms of latency per request, more than one at a time.
	if ct.peak > 3 || ct.peak < 2 {
		t.Fatalf("peak %d requests in flight, want 2..3", ct.peak)
	}
}

// A run of 429s longer than the retry count is waited out: rate limits pace, they do not fail.
func TestRateLimitsDoNotUseUpRetries(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.RateLimitNext(5, 10*time.Millisecond)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxRetries: 2, BaseBackoff: time.Millisecond})
	inputs := texts(3)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed after 5 rate limits with 2 retries: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	if st := e.Stats(); st.RateLimited != 5 || st.Requests != 6 {
		t.Fatalf("stats = %+v, want 5 rate-limited of 6 requests", st)
	}
	// Failures still count, rate limits between them or not.
	srv.RateLimitNext(2, 10*time.Millisecond)
	srv.FailNext(100, http.StatusInternalServerError)
	_, _, err = e.Embed(context.Background(), texts(1))
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("err = %v, want RetryExhaustedError", err)
	}
}
