package embedding

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func TestRetryAfterHeaders(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		h    http.Header
		want time.Duration
	}{
		{nil, 0},
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{http.Header{"Retry-After": {"0.5"}}, 500 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"1"}}, 250 * time.Millisecond}, // ms is finer
		{http.Header{"Retry-After-Ms": {"garbage"}, "Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After": {now.Add(7 * time.Second).Format(http.TimeFormat)}}, 7 * time.Second},
		{http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
		{http.Header{"Retry-After": {"-4"}}, 0},
	}
	for _, c := range cases {
		if got := retryAfter(c.h, now, false, ""); got != c.want {
			t.Errorf("retryAfter(%v) = %v, want %v", c.h, got, c.want)
		}
	}
}

// TestRetryAfterReadsRateLimitResets: without Retry-After, a 429 waits for OpenAI's
// x-ratelimit-reset-* of the refused limit (Go duration format), and a 5xx ignores them.
func TestRetryAfterReadsRateLimitResets(t *testing.T) {
	now := time.Now()
	resets := http.Header{"X-Ratelimit-Reset-Requests": {"6m0s"}, "X-Ratelimit-Reset-Tokens": {"20ms"}}
	cases := []struct {
		name        string
		h           http.Header
		rateLimited bool
		limit       string
		want        time.Duration
	}{
		{"requests limit", resets, true, "requests", 6 * time.Minute},
		{"tokens limit", resets, true, "tokens", 20 * time.Millisecond},
		{"unknown limit takes the later", resets, true, "", 6 * time.Minute},
		{"other type takes the later", resets, true, "rate_limit_exceeded", 6 * time.Minute},
		{"seconds", http.Header{"X-Ratelimit-Reset-Tokens": {"1s"}}, true, "tokens", time.Second},
		{"fractional", http.Header{"X-Ratelimit-Reset-Tokens": {"1.5s"}}, true, "", 1500 * time.Millisecond},
		{"Retry-After wins", http.Header{"Retry-After": {"2"}, "X-Ratelimit-Reset-Tokens": {"9s"}}, true, "tokens", 2 * time.Second},
		{"not a 429", resets, false, "", 0},
		{"garbage", http.Header{"X-Ratelimit-Reset-Tokens": {"soon"}}, true, "tokens", 0},
		{"negative", http.Header{"X-Ratelimit-Reset-Tokens": {"-3s"}}, true, "tokens", 0},
	}
	for _, c := range cases {
		if got := retryAfter(c.h, now, c.rateLimited, c.limit); got != c.want {
			t.Errorf("%s: retryAfter(%v) = %v, want %v", c.name, c.h, got, c.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	base, maxB := 100*time.Millisecond, 2*time.Second
	// Without a hint: between half and all of base*2^attempt, capped at max.
	for attempt, full := range []time.Duration{100, 200, 400, 800, 1600, 2000, 2000} {
		full *= time.Millisecond
		lo, hi := backoff(attempt, base, maxB, 0, 0), backoff(attempt, base, maxB, 0, 0.999999)
		if lo != full/2 || hi > full || hi < full*99/100 {
			t.Errorf("attempt %d: range [%v, %v], want [%v, %v]", attempt, lo, hi, full/2, full)
		}
	}
	// A server hint is a floor, whatever the attempt, with at most 10% added.
	for _, rnd := range []float64{0, 0.5, 0.999} {
		d := backoff(6, base, maxB, 5*time.Second, rnd)
		if d < 5*time.Second || d > 5500*time.Millisecond {
			t.Errorf("hint 5s, rnd %v: delay %v outside [5s, 5.5s]", rnd, d)
		}
	}
	if d := backoff(0, base, maxB, 10*time.Millisecond, 0); d != 10*time.Millisecond {
		t.Errorf("a short hint is honoured as given, got %v", d)
	}
}

func TestClassify(t *testing.T) {
	api := func(status int, typ string, code any) error {
		return fmt.Errorf("wrapped: %w", &openai.APIError{HTTPStatusCode: status, Type: typ, Code: code, Message: "m"})
	}
	cases := []struct {
		err         error
		permanent   bool
		reason      string
		rateLimited bool
	}{
		{api(429, "requests", "rate_limit_exceeded"), false, "", true},
		{api(429, "tokens", nil), false, "", true},
		{api(429, "insufficient_quota", "insufficient_quota"), true, worker.ReasonQuotaExceeded, false},
		{api(429, "", "insufficient_quota"), true, worker.ReasonQuotaExceeded, false},
		{api(401, "invalid_request_error", "invalid_api_key"), true, worker.ReasonUnauthorized, false},
		{api(403, "", nil), true, worker.ReasonUnauthorized, false},
		{api(404, "invalid_request_error", "model_not_found"), true, worker.ReasonModelNotFound, false},
		{api(400, "invalid_request_error", "model_not_found"), true, worker.ReasonModelNotFound, false},
		{api(400, "invalid_request_error", nil), true, worker.ReasonPermanentError, false},
		{api(422, "", nil), true, worker.ReasonPermanentError, false},
		{api(500, "server_error", nil), false, "", false},
		{api(503, "", nil), false, "", false},
		{api(408, "", nil), false, "", false},
		{&openai.RequestError{HTTPStatusCode: 502, Err: errors.New("bad gateway")}, false, "", false},
		{&openai.RequestError{HTTPStatusCode: 401, Err: errors.New("html")}, true, worker.ReasonUnauthorized, false},
		{errors.New("connection reset by peer"), false, "", false},
		{&PermanentError{Reason: worker.ReasonDimension, Err: errors.New("x")}, true, worker.ReasonDimension, false},
	}
	for _, c := range cases {
		v := classify(c.err)
		if v.permanent != c.permanent || v.reason != c.reason || v.rateLimited != c.rateLimited || v.split || v.refused {
			t.Errorf("classify(%v) = %+v, want permanent=%v reason=%q rateLimited=%v", c.err, v, c.permanent, c.reason, c.rateLimited)
		}
	}
}

// TestClassifyInputErrors: which 400s and 429s are about the inputs or the request's size (split
// and isolate) and which are about the request (fatal).
func TestClassifyInputErrors(t *testing.T) {
	str := func(s string) *string { return &s }
	api := func(status int, typ string, param *string, code any, msg string) error {
		return &openai.APIError{HTTPStatusCode: status, Type: typ, Param: param, Code: code, Message: msg}
	}
	cases := []struct {
		name                      string
		err                       error
		split, refused, permanent bool
	}{
		{"context length", api(400, "invalid_request_error", nil, nil, "This model's maximum context length is 8192 tokens, however you requested 8200 tokens"), false, true, false},
		{"param input", api(400, "invalid_request_error", str("input"), nil, "Invalid input"), false, true, false},
		{"$.input", api(400, "invalid_request_error", nil, nil, "'$.input' is invalid. Please check the API reference"), false, true, false},
		{"code", api(400, "invalid_request_error", nil, "context_length_exceeded", "too long"), false, true, false},
		{"tokens per request", api(400, "invalid_request_error", nil, "max_tokens_per_request", "Requested 310000 tokens, max 300000 tokens per request"), true, false, false},
		{"request too large", api(429, "tokens", nil, "rate_limit_exceeded", "Request too large for text-embedding-3-small in organization org-x on tokens per min (TPM): Limit 150000, Requested 200000."), true, false, false},
		{"dimensions", api(400, "invalid_request_error", str("dimensions"), nil, "This model does not support specifying dimensions."), false, false, true},
		{"model param", api(400, "invalid_request_error", str("model"), nil, "input model is wrong"), false, false, true},
		{"unknown 400", api(400, "invalid_request_error", nil, nil, "We could not parse the JSON body of your request."), false, false, true},
		{"quota", api(429, "insufficient_quota", nil, "insufficient_quota", "You exceeded your current quota"), false, false, true},
	}
	for _, c := range cases {
		v := classify(c.err)
		if v.split != c.split || v.refused != c.refused || v.permanent != c.permanent {
			t.Errorf("%s: classify = %+v, want split=%v refused=%v permanent=%v", c.name, v, c.split, c.refused, c.permanent)
		}
	}
}
