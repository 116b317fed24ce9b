package openai_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const key = "sk-test-key"

// recorder keeps the headers of the last response, which go-openai drops on errors.
type recorder struct {
	mu   sync.Mutex
	last http.Header
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.last = res.Header.Clone()
		r.mu.Unlock()
	}
	return res, err
}

func (r *recorder) header() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func start(t *testing.T, opts fake.Options) *fake.Server {
	t.Helper()
	if opts.APIKeys == nil {
		opts.APIKeys = []string{key}
	}
	s, err := fake.Start(opts)
	if err != nil {
		t.Fatalf("start fake: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func client(s *fake.Server, apiKey string) (*goopenai.Client, *recorder) {
	cfg := goopenai.DefaultConfig(apiKey)
	cfg.BaseURL = s.URL()
	rec := &recorder{}
	cfg.HTTPClient = &http.Client{Transport: rec}
	return goopenai.NewClientWithConfig(cfg), rec
}

func embed(c *goopenai.Client, req goopenai.EmbeddingRequestConverter) (goopenai.EmbeddingResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.CreateEmbeddings(ctx, req)
}

func apiError(t *testing.T, err error) *goopenai.APIError {
	t.Helper()
	var e *goopenai.APIError
	if !errors.As(err, &e) {
		t.Fatalf("want *openai.APIError, got %T: %v", err, err)
	}
	return e
}

func TestEmbeddingsMatchVectorAndUsage(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	// cl100k_base: "hello world" is 2 tokens, "The quick brown fox" is 4.
	texts := []string{"hello world", "The quick brown fox"}
	for _, tc := range []struct {
		format goopenai.EmbeddingEncodingFormat
		dims   int
		want   int
	}{
		{goopenai.EmbeddingEncodingFormatFloat, 0, 1536},
		{goopenai.EmbeddingEncodingFormatBase64, 0, 1536},
		{goopenai.EmbeddingEncodingFormatBase64, 256, 256},
		{"", 512, 512},
	} {
		res, err := embed(c, goopenai.EmbeddingRequestStrings{
			Input: texts, Model: goopenai.SmallEmbedding3, EncodingFormat: tc.format, Dimensions: tc.dims,
		})
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.format, tc.dims, err)
		}
		if res.Usage.PromptTokens != 6 || res.Usage.TotalTokens != 6 {
			t.Errorf("%s/%d: usage %+v, want 6 prompt and total tokens", tc.format, tc.dims, res.Usage)
		}
		if res.Model != goopenai.SmallEmbedding3 || len(res.Data) != len(texts) {
			t.Fatalf("%s/%d: model %q, %d embeddings", tc.format, tc.dims, res.Model, len(res.Data))
		}
		for i, d := range res.Data {
			if d.Index != i {
				t.Errorf("data[%d].index = %d", i, d.Index)
			}
			want := fake.Vector(texts[i], tc.want)
			if len(d.Embedding) != tc.want {
				t.Fatalf("%s/%d: got %d dims, want %d", tc.format, tc.dims, len(d.Embedding), tc.want)
			}
			for j := range want {
				if d.Embedding[j] != want[j] {
					t.Fatalf("%s/%d: text %d value %d = %v, want %v", tc.format, tc.dims, i, j, d.Embedding[j], want[j])
				}
			}
		}
	}
	if st := s.Stats(); st.Accepted != 4 || st.Inputs != 8 || st.Tokens != 24 {
		t.Errorf("stats %+v, want 4 accepted, 8 inputs, 24 tokens", st)
	}
}

func TestVectorIsUnitAndDistinct(t *testing.T) {
	a, b := fake.Vector("alpha", 1536), fake.Vector("beta", 1536)
	var na, dot float64
	for i := range a {
		na += float64(a[i]) * float64(a[i])
		dot += float64(a[i]) * float64(b[i])
	}
	if math.Abs(na-1) > 1e-5 {
		t.Errorf("|v|² = %v, want 1", na)
	}
	if dot > 0.2 {
		t.Errorf("different texts have cosine %v; vectors should be unrelated", dot)
	}
	short := fake.Vector("alpha", 64)
	// Shortened vectors are the long ones cut and renormalised, as with text-embedding-3.
	ratio := float64(short[0]) / float64(a[0])
	for i := range short {
		if r := float64(short[i]) / float64(a[i]); math.Abs(r-ratio) > 1e-4*math.Abs(ratio) {
			t.Fatalf("value %d: ratio %v, want %v", i, r, ratio)
		}
	}
}

func TestTokenArrayInput(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	// cl100k_base ids of "hello" and " world".
	res, err := embed(c, goopenai.EmbeddingRequestTokens{Input: [][]int{{15339, 1917}}, Model: goopenai.SmallEmbedding3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Usage.PromptTokens != 2 {
		t.Errorf("prompt tokens %d, want 2", res.Usage.PromptTokens)
	}
	if want := fake.Vector("hello world", 1536); res.Data[0].Embedding[0] != want[0] {
		t.Errorf("token input not embedded as its text")
	}
}

func TestUnknownModel(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	_, err := embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"x"}, Model: "text-embedding-4-huge"})
	e := apiError(t, err)
	if e.HTTPStatusCode != http.StatusNotFound || e.Code != "model_not_found" || e.Type != "invalid_request_error" {
		t.Errorf("got %d %v %q", e.HTTPStatusCode, e.Code, e.Type)
	}
	if !strings.Contains(e.Message, "`text-embedding-4-huge` does not exist") {
		t.Errorf("message %q", e.Message)
	}
}

func TestWrongKey(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, "sk-wrong")
	_, err := embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"x"}, Model: goopenai.SmallEmbedding3})
	e := apiError(t, err)
	if e.HTTPStatusCode != http.StatusUnauthorized || e.Code != "invalid_api_key" {
		t.Errorf("got %d %v", e.HTTPStatusCode, e.Code)
	}
	if strings.Contains(err.Error(), "sk-wrong") {
		t.Errorf("error echoes the key: %v", err)
	}
	if got := s.Stats().ByStatus[http.StatusUnauthorized]; got != 1 {
		t.Errorf("401 count %d", got)
	}
}

func TestRequestLimits(t *testing.T) {
	// One token per word keeps the big requests cheap; the limits are what is tested here.
	s := start(t, fake.Options{CountTokens: func(s string) int { return len(strings.Fields(s)) }})
	c, _ := client(s, key)
	words := func(n int) string { return strings.TrimSpace(strings.Repeat("w ", n)) }
	many := make([]string, fake.MaxInputs+1)
	for i := range many {
		many[i] = "x"
	}
	big := make([]string, fake.MaxTokensPerRequest/fake.MaxTokensPerInput+1)
	for i := range big {
		big[i] = words(fake.MaxTokensPerInput)
	}
	for name, tc := range map[string]struct {
		input []string
		code  any
	}{
		"too many inputs":       {many, 0},
		"input too long":        {[]string{words(fake.MaxTokensPerInput + 1)}, 0}, // go-openai reads a null code as 0
		"request too large":     {big, "max_tokens_per_request"},
		"empty string in input": {[]string{"a", ""}, 0},
	} {
		_, err := embed(c, goopenai.EmbeddingRequestStrings{Input: tc.input, Model: goopenai.SmallEmbedding3})
		e := apiError(t, err)
		if e.HTTPStatusCode != http.StatusBadRequest || e.Code != tc.code {
			t.Errorf("%s: got %d %v", name, e.HTTPStatusCode, e.Code)
		}
	}
	// Just inside every limit is accepted.
	ok := big[:len(big)-1]
	if _, err := embed(c, goopenai.EmbeddingRequestStrings{Input: ok, Model: goopenai.SmallEmbedding3, EncodingFormat: "base64"}); err != nil {
		t.Errorf("request at the limits: %v", err)
	}
	_, err := embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"x"}, Model: goopenai.AdaEmbeddingV2, Dimensions: 8})
	if e := apiError(t, err); e.HTTPStatusCode != http.StatusBadRequest {
		t.Errorf("ada-002 with dimensions: %d", e.HTTPStatusCode)
	}
}

func TestRPMEnforced(t *testing.T) {
	s := start(t, fake.Options{RPM: 3})
	c, rec := client(s, key)
	req := goopenai.EmbeddingRequestStrings{Input: []string{"hello world"}, Model: goopenai.SmallEmbedding3}
	for i := 0; i < 3; i++ {
		if _, err := embed(c, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := rec.header().Get("x-ratelimit-remaining-requests"); got != strconv.Itoa(2-i) {
			t.Errorf("request %d: remaining %q", i, got)
		}
	}
	for i := 0; i < 4; i++ {
		_, err := embed(c, req)
		e := apiError(t, err)
		if e.HTTPStatusCode != http.StatusTooManyRequests || e.Type != "requests" || e.Code != "rate_limit_exceeded" {
			t.Fatalf("refusal %d: %d %q %v", i, e.HTTPStatusCode, e.Type, e.Code)
		}
		h := rec.header()
		sec, err1 := strconv.Atoi(h.Get("Retry-After"))
		ms, err2 := strconv.Atoi(h.Get("Retry-After-Ms"))
		if err1 != nil || err2 != nil || sec < 1 || sec > 60 || ms < 1 || ms > 60000 || (ms+999)/1000 != sec {
			t.Errorf("Retry-After %q, Retry-After-Ms %q", h.Get("Retry-After"), h.Get("Retry-After-Ms"))
		}
		if h.Get("x-ratelimit-limit-requests") != "3" || h.Get("x-ratelimit-remaining-requests") != "0" {
			t.Errorf("ratelimit headers %v", h)
		}
		if _, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests")); err != nil {
			t.Errorf("reset-requests %q: %v", h.Get("x-ratelimit-reset-requests"), err)
		}
	}
	if p := s.Peak(); p.Requests != 3 {
		t.Errorf("peak %+v, want 3 requests", p)
	}
	st := s.Stats()
	if st.Accepted != 3 || st.RateLimited != 4 || st.ByStatus[429] != 4 || st.Requests != 7 {
		t.Errorf("stats %+v", st)
	}
}

func TestTPMEnforced(t *testing.T) {
	s := start(t, fake.Options{TPM: 5})
	c, rec := client(s, key)
	req := goopenai.EmbeddingRequestStrings{Input: []string{"hello world"}, Model: goopenai.SmallEmbedding3} // 2 tokens
	for i := 0; i < 2; i++ {
		if _, err := embed(c, req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	_, err := embed(c, req)
	if e := apiError(t, err); e.HTTPStatusCode != 429 || e.Type != "tokens" || e.Code != "rate_limit_exceeded" {
		t.Fatalf("got %d %q %v", e.HTTPStatusCode, e.Type, e.Code)
	}
	h := rec.header()
	if h.Get("Retry-After") == "" || h.Get("x-ratelimit-limit-tokens") != "5" || h.Get("x-ratelimit-remaining-tokens") != "1" {
		t.Errorf("headers %v", h)
	}
	// A request that can never fit says so and gives no Retry-After.
	_, err = embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"The quick brown fox", "hello world"}, Model: goopenai.SmallEmbedding3})
	if e := apiError(t, err); e.HTTPStatusCode != 429 || !strings.Contains(e.Message, "Request too large") {
		t.Errorf("too large: %d %q", e.HTTPStatusCode, e.Message)
	}
	if rec.header().Get("Retry-After") != "" {
		t.Errorf("too-large refusal has Retry-After")
	}
	if p := s.Peak(); p.Tokens != 4 || p.Requests != 2 {
		t.Errorf("peak %+v, want 2 requests and 4 tokens", p)
	}
}

func TestRetryAfterIsLongEnough(t *testing.T) {
	s := start(t, fake.Options{RPM: 1, Window: 300 * time.Millisecond})
	c, rec := client(s, key)
	req := goopenai.EmbeddingRequestStrings{Input: []string{"a"}, Model: goopenai.SmallEmbedding3}
	if _, err := embed(c, req); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		// Provoke a refusal; on a loaded machine a request may arrive after the window drained
		// and be accepted instead, so keep asking.
		ms := -1
		for attempt := 0; attempt < 20 && ms < 0; attempt++ {
			_, err := embed(c, req)
			if err == nil {
				continue
			}
			if e := apiError(t, err); e.HTTPStatusCode != 429 {
				t.Fatalf("want 429, got %d", e.HTTPStatusCode)
			}
			ms, _ = strconv.Atoi(rec.header().Get("Retry-After-Ms"))
		}
		if ms < 0 {
			t.Fatal("no 429 in 20 requests with RPM 1")
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		if _, err := embed(c, req); err != nil {
			t.Fatalf("after waiting Retry-After-Ms=%d: %v", ms, err)
		}
	}
	if p := s.Peak(); p.Requests != 1 {
		t.Errorf("peak %+v", p)
	}
}

func TestConcurrentClientsShareTheLimits(t *testing.T) {
	s := start(t, fake.Options{RPM: 20, TPM: 30})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := client(s, key)
			for i := 0; i < 10; i++ {
				_, _ = embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"hello world"}, Model: goopenai.SmallEmbedding3})
			}
		}()
	}
	wg.Wait()
	st, p := s.Stats(), s.Peak()
	// 2 tokens each: TPM 30 admits 15, within RPM 20.
	if st.Accepted != 15 || st.RateLimited != 65 || p.Requests != 15 || p.Tokens != 30 {
		t.Errorf("stats %+v, peak %+v", st, p)
	}
}

func TestInjectedFaults(t *testing.T) {
	s := start(t, fake.Options{})
	c, rec := client(s, key)
	req := goopenai.EmbeddingRequestStrings{Input: []string{"a"}, Model: goopenai.SmallEmbedding3}
	status := func() int {
		_, err := embed(c, req)
		if err == nil {
			return 200
		}
		return apiError(t, err).HTTPStatusCode
	}

	s.FailNext(2, 503)
	if a, b, c := status(), status(), status(); a != 503 || b != 503 || c != 200 {
		t.Errorf("FailNext(2, 503): %d %d %d", a, b, c)
	}
	s.FailNext(1, 500)
	if a := status(); a != 500 {
		t.Errorf("FailNext(1, 500): %d", a)
	}

	s.RateLimitNext(1, 1500*time.Millisecond)
	_, err := embed(c, req)
	if e := apiError(t, err); e.HTTPStatusCode != 429 || e.Code != "rate_limit_exceeded" {
		t.Errorf("storm: %d %v", e.HTTPStatusCode, e.Code)
	}
	if h := rec.header(); h.Get("Retry-After") != "2" || h.Get("Retry-After-Ms") != "1500" {
		t.Errorf("storm headers %v", h)
	}
	if a := status(); a != 200 {
		t.Errorf("after storm: %d", a)
	}

	s.SetInsufficientQuota(true)
	_, err = embed(c, req)
	if e := apiError(t, err); e.HTTPStatusCode != 429 || e.Type != "insufficient_quota" || e.Code != "insufficient_quota" {
		t.Errorf("quota: %d %q %v", e.HTTPStatusCode, e.Type, e.Code)
	}
	s.SetInsufficientQuota(false)

	s.SetUnauthorized(true)
	_, err = embed(c, req)
	if e := apiError(t, err); e.HTTPStatusCode != 401 || e.Code != "invalid_api_key" {
		t.Errorf("unauthorized: %d %v", e.HTTPStatusCode, e.Code)
	}
	s.SetUnauthorized(false)

	s.SetDimensionOverride(7)
	res, err := embed(c, req)
	if err != nil || len(res.Data[0].Embedding) != 7 {
		t.Errorf("dimension override: %v", err)
	}
	s.SetDimensionOverride(0)

	s.SetLatency(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.CreateEmbeddings(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("latency: want deadline exceeded, got %v", err)
	}
	s.SetLatency(0)

	st := s.Stats()
	if st.ByStatus[503] != 2 || st.ByStatus[500] != 1 || st.RateLimited != 2 || st.ByStatus[401] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestRawRequests(t *testing.T) {
	s := start(t, fake.Options{})
	post := func(body, auth string) int {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+"/embeddings", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		return res.StatusCode
	}
	for name, tc := range map[string]struct {
		body, auth string
		want       int
	}{
		"single string": {`{"model":"text-embedding-3-small","input":"hi"}`, "Bearer " + key, 200},
		"no key":        {`{"model":"text-embedding-3-small","input":"hi"}`, "", 401},
		"bad json":      {`{"model":`, "Bearer " + key, 400},
		"empty array":   {`{"model":"text-embedding-3-small","input":[]}`, "Bearer " + key, 400},
		"bad format":    {`{"model":"text-embedding-3-small","input":"hi","encoding_format":"hex"}`, "Bearer " + key, 400},
		"too many dims": {`{"model":"text-embedding-3-small","input":"hi","dimensions":1537}`, "Bearer " + key, 400},
		"mixed array":   {`{"model":"text-embedding-3-small","input":["a",1]}`, "Bearer " + key, 400},
	} {
		if got := post(tc.body, tc.auth); got != tc.want {
			t.Errorf("%s: status %d, want %d", name, got, tc.want)
		}
	}
}
