// Package openai is a wire-level fake of OpenAI's embeddings endpoint (POST /v1/embeddings), and
// of the Files and Batches API for embeddings (batch.go), for tests, the demo and benchmarks. The real go-openai client talks to it over HTTP. It returns
// deterministic vectors (see Vector), bills usage with the real cl100k_base tokenizer, enforces
// RPM and TPM over a sliding window with OpenAI's 429 bodies and headers, applies OpenAI's request
// limits, and lets a test inject faults at run time.
//
// Rate limits: a request is accepted when the requests and tokens accepted in the last Window
// (default one minute), counting it, stay within RPM and TPM; refused requests do not count, and
// the limits are shared by all clients. A 429 carries Retry-After (whole seconds, rounded up) and
// Retry-After-Ms: the exact time until the request would fit. Every response carries
// x-ratelimit-limit-*, x-ratelimit-remaining-* and x-ratelimit-reset-* for requests and tokens
// (when that limit is set); reset is the time until the oldest accepted request leaves the window,
// that is, until remaining next grows. A request whose tokens alone exceed TPM gets OpenAI's
// "Request too large" 429 without Retry-After, since waiting cannot help.
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
)

// OpenAI's limits on one embeddings request.
const (
	MaxInputs           = 2048
	MaxTokensPerInput   = tokens.MaxTokensPerInput   // 8191
	MaxTokensPerRequest = tokens.MaxTokensPerRequest // 300,000
	maxBodyBytes        = 64 << 20
)

// DefaultModels are the embedding models the fake knows, with their default dimensions.
var DefaultModels = map[string]int{
	"text-embedding-3-small": 1536,
	"text-embedding-3-large": 3072,
	"text-embedding-ada-002": 1536,
}

// Options configure a Server. The zero value is a usable unlimited server accepting any key.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// APIKeys are the accepted bearer keys. Empty accepts any non-empty key.
	APIKeys []string
	// RPM and TPM are the enforced requests and tokens per Window; 0 means unlimited.
	RPM, TPM int
	// Window is the length of the sliding rate-limit window; default one minute. Tests may
	// shorten it so that waiting out a 429 stays fast.
	Window time.Duration
	// Latency is added to every response; it can be changed later with SetLatency.
	Latency time.Duration
	// Models maps model name to default dimensions; nil means DefaultModels.
	Models map[string]int
	// CountTokens counts one input's tokens; nil means tiktoken-go's cl100k_base encoder. That is
	// deliberately not tokens.Count, the embedder's own counter, so that end-to-end tests check the
	// embedder's counts against an independent reference implementation.
	CountTokens func(string) int
	// RefuseMarker, when set, refuses with a 400 every request holding an input that contains it
	// (see RefuseMarker in faults.go), from the start.
	RefuseMarker string
}

// Stats are counters since Start.
type Stats struct {
	Requests    int64         // requests to /v1/embeddings
	Accepted    int64         // requests answered 200
	Inputs      int64         // inputs embedded in accepted requests
	Tokens      int64         // tokens of accepted requests
	RateLimited int64         // 429 answers of any kind (window, injected, quota)
	ByStatus    map[int]int64 // answers by HTTP status
}

// Usage is a load in one rate-limit window.
type Usage struct {
	Requests int
	Tokens   int
}

// Server is a running fake. It is also an http.Handler, for in-process use.
type Server struct {
	opts    Options
	models  map[string]int
	keys    map[string]struct{}
	count   func(string) int
	start   time.Time
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	closeMu sync.Once

	mu          sync.Mutex
	win         window
	latency     time.Duration
	failN       int
	failStatus  int
	stormN      int
	stormAfter  time.Duration
	unauth      bool
	noQuota     bool
	dimOverride int
	stats       Stats
	reqID       uint64
	x           extras      // faults.go
	b           *batchState // batch.go
}

// Start listens on opts.Addr and serves until Close.
func Start(opts Options) (*Server, error) {
	s, err := newServer(opts)
	if err != nil {
		return nil, err
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake openai: listen on %s: %w", addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func newServer(opts Options) (*Server, error) {
	if opts.RPM < 0 || opts.TPM < 0 || opts.Window < 0 || opts.Latency < 0 {
		return nil, errors.New("fake openai: RPM, TPM, Window and Latency must not be negative")
	}
	if opts.Window == 0 {
		opts.Window = time.Minute
	}
	models := opts.Models
	if models == nil {
		models = DefaultModels
	}
	s := &Server{
		opts:    opts,
		models:  maps.Clone(models),
		keys:    make(map[string]struct{}, len(opts.APIKeys)),
		count:   opts.CountTokens,
		start:   time.Now(),
		done:    make(chan struct{}),
		latency: opts.Latency,
		win:     window{size: opts.Window, rpm: opts.RPM, tpm: opts.TPM},
		stats:   Stats{ByStatus: map[int]int64{}},
	}
	for _, k := range opts.APIKeys {
		s.keys[k] = struct{}{}
	}
	s.bstate()
	if opts.RefuseMarker != "" {
		s.RefuseMarker(opts.RefuseMarker, "")
	}
	if s.count == nil {
		// Load the tokenizer now so that a broken build fails Start, not a request. decoder loads
		// tiktoken-go offline, from the table embedded in the binary.
		enc, err := decoder()
		if err != nil {
			return nil, fmt.Errorf("fake openai: %w", err)
		}
		s.count = func(text string) int { return len(enc.EncodeOrdinary(text)) }
	}
	return s, nil
}

// URL is the base URL for go-openai's ClientConfig.BaseURL, e.g. "http://127.0.0.1:41234/v1".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/v1" }

// Addr is the listening address, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and cuts short any injected latency.
func (s *Server) Close() error {
	var err error
	s.closeMu.Do(func() {
		close(s.done)
		if s.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err = s.srv.Shutdown(ctx); err != nil {
				err = errors.Join(err, s.srv.Close())
			}
		}
	})
	if err != nil {
		return fmt.Errorf("fake openai: close: %w", err)
	}
	return nil
}

// SetLatency sets the delay added to every response.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetLimits changes RPM and TPM (0 = unlimited) without forgetting the traffic in the window.
func (s *Server) SetLimits(rpm, tpm int) {
	s.mu.Lock()
	s.win.rpm, s.win.tpm = rpm, tpm
	s.mu.Unlock()
}

// ResetWindow forgets the traffic accepted so far: the rate-limit window starts empty and Peak
// measures from now (a test measuring its own run on a shared server).
func (s *Server) ResetWindow() {
	s.mu.Lock()
	s.win.events, s.win.head, s.win.tokens = nil, 0, 0
	s.win.peakRequests, s.win.peakTokens = 0, 0
	s.mu.Unlock()
}

// FailNext makes the next n authenticated requests fail with status (e.g. 500 or 503) and
// OpenAI's server_error body.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	s.failN, s.failStatus = n, status
	s.mu.Unlock()
}

// RateLimitNext makes the next n authenticated requests get a 429 rate_limit_exceeded with
// Retry-After set to retryAfter, whatever the window says.
func (s *Server) RateLimitNext(n int, retryAfter time.Duration) {
	s.mu.Lock()
	s.stormN, s.stormAfter = n, retryAfter
	s.mu.Unlock()
}

// SetUnauthorized makes every request fail with 401 invalid_api_key while on.
func (s *Server) SetUnauthorized(on bool) {
	s.mu.Lock()
	s.unauth = on
	s.mu.Unlock()
}

// SetInsufficientQuota makes every authenticated request fail with 429 insufficient_quota while on.
func (s *Server) SetInsufficientQuota(on bool) {
	s.mu.Lock()
	s.noQuota = on
	s.mu.Unlock()
}

// SetDimensionOverride makes successful responses carry vectors of dims dimensions whatever was
// asked, to test dimension-mismatch handling; 0 turns it off.
func (s *Server) SetDimensionOverride(dims int) {
	s.mu.Lock()
	s.dimOverride = dims
	s.mu.Unlock()
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByStatus = maps.Clone(s.stats.ByStatus)
	return st
}

// Peak is the busiest window of accepted traffic so far: the most requests and the most tokens
// accepted in any span of Window (each maximised on its own). It is exact: the limits are checked
// against the same windows, so with RPM/TPM set it never exceeds them.
func (s *Server) Peak() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Usage{Requests: s.win.peakRequests, Tokens: s.win.peakTokens}
}

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type scratch struct {
	body []byte
	out  []byte
	vec  []float32
	raw  []byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// ServeHTTP answers POST /v1/embeddings, and the Files and Batches endpoints (batch.go).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if isBatchAPI(r.URL.Path) {
		s.serveBatchAPI(w, r)
		return
	}
	if r.URL.Path != "/v1/embeddings" {
		s.reply(w, r, http.StatusNotFound, errBody(fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", "", ""), nil)
		return
	}
	s.mu.Lock()
	s.stats.Requests++
	s.reqID++
	id, latency, unauth := s.reqID, s.latency, s.unauth
	s.mu.Unlock()
	w.Header().Set("X-Request-Id", "req_fake_"+strconv.FormatUint(id, 10))
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		case <-s.done:
		}
	}
	if r.Method != http.MethodPost {
		s.reply(w, r, http.StatusMethodNotAllowed, errBody("Method not allowed. Use POST.", "invalid_request_error", "", ""), nil)
		return
	}

	if status, body := s.checkAuth(r, unauth); status != 0 {
		s.reply(w, r, status, body, nil)
		return
	}
	if status, body, hdr := s.injected(); status != 0 {
		s.reply(w, r, status, body, hdr)
		return
	}

	sc := scratchPool.Get().(*scratch)
	defer scratchPool.Put(sc)
	var err error
	sc.body, err = readBody(r, sc.body)
	if err != nil {
		s.reply(w, r, http.StatusBadRequest, errBody("We could not parse the JSON body of your request: "+err.Error(), "invalid_request_error", "", ""), nil)
		return
	}
	var req embeddingRequest
	if err := json.Unmarshal(sc.body, &req); err != nil {
		s.reply(w, r, http.StatusBadRequest, errBody("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", "invalid_request_error", "", ""), nil)
		return
	}
	p, status, body := s.validate(&req)
	if status == 0 {
		status, body = s.refusedInput(p.texts)
	}
	if status != 0 {
		s.reply(w, r, status, body, nil)
		return
	}

	s.mu.Lock()
	v := s.win.admit(time.Since(s.start), p.tokens)
	if v.ok {
		s.stats.Accepted++
		s.stats.Inputs += int64(len(p.texts))
		s.stats.Tokens += int64(p.tokens)
		if s.dimOverride > 0 {
			p.dims = s.dimOverride
		}
	}
	s.mu.Unlock()
	if !v.ok {
		status, body, hdr := s.refusal(req.Model, p.tokens, v)
		s.reply(w, r, status, body, hdr)
		return
	}

	b64, order := s.shape(req.EncodingFormat == "base64", len(p.texts))
	sc.out = s.encode(sc, req.Model, b64, p, order)
	s.deliver(w, r, sc.out)
}

func readBody(r *http.Request, buf []byte) ([]byte, error) {
	buf = buf[:0]
	lr := io.LimitReader(r.Body, maxBodyBytes+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	if len(buf) > maxBodyBytes {
		return buf, fmt.Errorf("body larger than %d bytes", maxBodyBytes)
	}
	return buf, nil
}

func (s *Server) checkAuth(r *http.Request, unauth bool) (int, []byte) {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
		return http.StatusUnauthorized, errBody("You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.", "invalid_request_error", "", "")
	}
	key := h[len(prefix):]
	_, known := s.keys[key]
	if unauth || (len(s.keys) > 0 && !known) {
		// The real API echoes a masked key; the fake echoes none, so no test log holds one.
		return http.StatusUnauthorized, errBody("Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "", "invalid_api_key")
	}
	return 0, nil
}

// injected returns the answer of an injected fault, if one applies to this request.
func (s *Server) injected() (int, []byte, http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.noQuota:
		return http.StatusTooManyRequests, errBody("You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.", "insufficient_quota", "", "insufficient_quota"), nil
	case s.failN > 0:
		s.failN--
		msg := "The server had an error while processing your request. Sorry about that!"
		if s.failStatus == http.StatusServiceUnavailable {
			msg = "The server is overloaded or not ready yet."
		}
		return s.failStatus, errBody(msg, "server_error", "", ""), nil
	case s.stormN > 0:
		s.stormN--
		hdr := http.Header{}
		setRetryAfter(hdr, s.stormAfter)
		return http.StatusTooManyRequests, errBody(fmt.Sprintf("Rate limit reached for requests. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.", fmtDur(s.stormAfter)), "requests", "", "rate_limit_exceeded"), hdr
	}
	return 0, nil, nil
}

// parsed is a validated request.
type parsed struct {
	texts  []string
	tokens int
	dims   int
}

func (s *Server) validate(req *embeddingRequest) (parsed, int, []byte) {
	bad := func(msg, param, code string) (parsed, int, []byte) {
		return parsed{}, http.StatusBadRequest, errBody(msg, "invalid_request_error", param, code)
	}
	if req.Model == "" {
		return bad("you must provide a model parameter", "", "")
	}
	full, ok := s.models[req.Model]
	if !ok {
		return parsed{}, http.StatusNotFound, errBody(fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", req.Model), "invalid_request_error", "", "model_not_found")
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		return bad(fmt.Sprintf("%q is not one of ['float', 'base64'] - 'encoding_format'", req.EncodingFormat), "encoding_format", "")
	}
	p := parsed{dims: full}
	if req.Dimensions != nil {
		if req.Model == "text-embedding-ada-002" {
			return bad("This model does not support specifying dimensions.", "dimensions", "")
		}
		if *req.Dimensions < 1 || *req.Dimensions > full {
			return bad(fmt.Sprintf("Invalid value for 'dimensions' = %d. Must be between 1 and %d.", *req.Dimensions, full), "dimensions", "")
		}
		p.dims = *req.Dimensions
	}
	texts, tokenCounts, err := parseInput(req.Input)
	if err != nil {
		return bad("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "input", "")
	}
	if len(texts) > MaxInputs {
		return bad(fmt.Sprintf("'$.input' is invalid: %d items, maximum %d. Please check the API reference: https://platform.openai.com/docs/api-reference.", len(texts), MaxInputs), "input", "")
	}
	for i, t := range texts {
		n := tokenCounts[i]
		if n < 0 {
			n = s.count(t)
		}
		if n > MaxTokensPerInput {
			return bad(fmt.Sprintf("This model's maximum context length is %d tokens, however you requested %d tokens (%d in your prompt; 0 for the completion). Please reduce your prompt; or completion length.", MaxTokensPerInput, n, n), "input", "")
		}
		p.tokens += n
	}
	if p.tokens > MaxTokensPerRequest {
		return bad(fmt.Sprintf("Requested %d tokens, max %d tokens per request", p.tokens, MaxTokensPerRequest), "", "max_tokens_per_request")
	}
	p.texts = texts
	return p, 0, nil
}

// parseInput accepts a string, an array of strings, an array of tokens or an array of token
// arrays. It returns the texts and, for token input, the token counts (-1 for text input).
// Token input is embedded as its decoded text.
func parseInput(raw json.RawMessage) ([]string, []int, error) {
	i := 0
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r') {
		i++
	}
	if i == len(raw) {
		return nil, nil, errors.New("missing input")
	}
	var texts []string
	var counts []int
	switch raw[i] {
	case '"':
		var t string
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, nil, err
		}
		texts = []string{t}
	case '[':
		if err := json.Unmarshal(raw, &texts); err == nil {
			break
		}
		var toks []int
		var lists [][]int
		if err := json.Unmarshal(raw, &toks); err == nil {
			lists = [][]int{toks}
		} else if err := json.Unmarshal(raw, &lists); err != nil {
			return nil, nil, err
		}
		texts = make([]string, len(lists))
		counts = make([]int, len(lists))
		for j, l := range lists {
			if len(l) == 0 {
				return nil, nil, errors.New("empty token array")
			}
			for _, tok := range l {
				if tok < 0 || tok > math.MaxInt32 {
					return nil, nil, fmt.Errorf("invalid token %d", tok)
				}
			}
			t, err := decodeTokens(l)
			if err != nil {
				return nil, nil, err
			}
			texts[j], counts[j] = t, len(l)
		}
	default:
		return nil, nil, errors.New("input must be a string or an array")
	}
	if len(texts) == 0 {
		return nil, nil, errors.New("empty input")
	}
	if counts == nil {
		for _, t := range texts {
			if t == "" {
				return nil, nil, errors.New("empty string in input")
			}
		}
		counts = make([]int, len(texts))
		for j := range counts {
			counts[j] = -1
		}
	}
	return texts, counts, nil
}

func (s *Server) refusal(model string, tokens int, v verdict) (int, []byte, http.Header) {
	hdr := http.Header{}
	s.mu.Lock()
	rpm, tpm := s.win.rpm, s.win.tpm
	used := s.win.count()
	usedTok := s.win.tokens
	s.mu.Unlock()
	var msg string
	switch {
	case v.tooLarge:
		msg = fmt.Sprintf("Request too large for %s in organization org-fake on tokens per min (TPM): Limit %d, Requested %d. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.", model, tpm, tokens)
	case v.limit == "requests":
		setRetryAfter(hdr, v.wait)
		msg = fmt.Sprintf("Rate limit reached for %s in organization org-fake on requests per min (RPM): Limit %d, Used %d, Requested 1. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.", model, rpm, used, fmtDur(v.wait))
	default:
		setRetryAfter(hdr, v.wait)
		msg = fmt.Sprintf("Rate limit reached for %s in organization org-fake on tokens per min (TPM): Limit %d, Used %d, Requested %d. Please try again in %s. Visit https://platform.openai.com/account/rate-limits to learn more.", model, tpm, usedTok, tokens, fmtDur(v.wait))
	}
	return http.StatusTooManyRequests, errBody(msg, v.limit, "", "rate_limit_exceeded"), hdr
}

func setRetryAfter(h http.Header, d time.Duration) {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	sec := (d + time.Second - 1) / time.Second
	h.Set("Retry-After", strconv.FormatInt(int64(sec), 10))
	h.Set("Retry-After-Ms", strconv.FormatInt(int64(ms), 10))
}

// fmtDur formats like OpenAI's reset headers ("1s", "6m0s", "120ms"), which go-openai parses with
// time.ParseDuration. It rounds up so a client waiting that long is never early.
func fmtDur(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	return ((d + time.Millisecond - 1) / time.Millisecond * time.Millisecond).String()
}

// reply writes status and body with the rate-limit headers OpenAI puts on every response.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, body []byte, extra http.Header) {
	h := w.Header()
	s.mu.Lock()
	s.stats.ByStatus[status]++
	if status == http.StatusTooManyRequests {
		s.stats.RateLimited++
	}
	now := time.Since(s.start)
	if s.win.rpm > 0 || s.win.tpm > 0 {
		free := fmtDur(s.win.nextFree(now))
		if s.win.rpm > 0 {
			h.Set("X-Ratelimit-Limit-Requests", strconv.Itoa(s.win.rpm))
			h.Set("X-Ratelimit-Remaining-Requests", strconv.Itoa(max(0, s.win.rpm-s.win.count())))
			h.Set("X-Ratelimit-Reset-Requests", free)
		}
		if s.win.tpm > 0 {
			h.Set("X-Ratelimit-Limit-Tokens", strconv.Itoa(s.win.tpm))
			h.Set("X-Ratelimit-Remaining-Tokens", strconv.Itoa(max(0, s.win.tpm-s.win.tokens)))
			h.Set("X-Ratelimit-Reset-Tokens", free)
		}
	}
	s.mu.Unlock()
	for k, v := range extra {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client hung up; nothing to do
}

// encode builds the success body straight into a reused buffer: at 1536 dimensions and 2048
// inputs the float form is tens of megabytes, so no intermediate structs.
func (s *Server) encode(sc *scratch, model string, b64 bool, p parsed, order func(int) int) []byte {
	out := sc.out[:0]
	if cap(sc.vec) < p.dims {
		sc.vec = make([]float32, p.dims)
	}
	vec := sc.vec[:p.dims]
	salt := modelSalt(model)
	out = append(out, `{"object":"list","data":[`...)
	for k := range p.texts {
		if k > 0 {
			out = append(out, ',')
		}
		i := order(k)
		t := p.texts[i]
		out = append(out, `{"object":"embedding","index":`...)
		out = strconv.AppendInt(out, int64(i), 10)
		out = append(out, `,"embedding":`...)
		fillModelVector(vec, salt, t)
		if b64 {
			out, sc.raw = appendBase64(out, vec, sc.raw)
		} else {
			out = appendFloats(out, vec)
		}
		out = append(out, '}')
	}
	out = append(out, `],"model":`...)
	out = strconv.AppendQuote(out, model) // model names are plain ASCII, validated above
	out = append(out, `,"usage":{"prompt_tokens":`...)
	out = strconv.AppendInt(out, int64(p.tokens), 10)
	out = append(out, `,"total_tokens":`...)
	out = strconv.AppendInt(out, int64(p.tokens), 10)
	out = append(out, "}}"...)
	return out
}

type apiError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// errBody is OpenAI's error JSON; empty param or code become null.
func errBody(msg, typ, param, code string) []byte {
	e := apiError{Message: msg, Type: typ}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	b, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{e})
	if err != nil {
		// Marshalling strings cannot fail; keep a valid body regardless.
		return []byte(`{"error":{"message":"internal error in fake","type":"server_error","param":null,"code":null}}`)
	}
	return b
}
