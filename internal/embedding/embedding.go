// Package embedding turns texts into vectors with the OpenAI embeddings API (go-openai): it packs
// inputs into requests within OpenAI's limits, keeps to a request and a token budget, retries
// transient failures with jittered backoff honouring Retry-After, and fails fast, with a typed
// error, on failures that retrying cannot fix.
package embedding

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Config configures an Embedder. Zero values take the defaults noted.
type Config struct {
	APIKey string
	// BaseURL of an OpenAI-compatible API, e.g. "http://127.0.0.1:8080/v1". Empty: OpenAI.
	BaseURL string
	Model   string
	// Dimensions is sent as the request's `dimensions` (text-embedding-3-* only). 0: omitted.
	Dimensions int
	// ExpectedDimension is the length every returned vector must have (the index's
	// dimension); a different length is a permanent error. 0: Dimensions, or unchecked if that
	// is 0 too.
	ExpectedDimension int
	// MaxInputsPerRequest caps inputs per request (1..2048). 0: 2048.
	MaxInputsPerRequest int
	// MaxBatchVectorBytes bounds the decoded vectors of one request (inputs × ExpectedDimension
	// × 4 bytes) when the dimension is known, lowering the input cap to fit. A response costs
	// about 3.5 times its vectors while it is read and decoded, and MaxInFlight of them can be
	// decoding at once, so this is what keeps a worker's memory flat. 0: DefaultMaxBatchVectorBytes;
	// negative: no bound.
	MaxBatchVectorBytes int
	// RequestsPerMinute and TokensPerMinute are this worker's budgets. 0: unlimited.
	RequestsPerMinute float64
	TokensPerMinute   float64
	// MaxRetries is the retries of one request after its first attempt for failures (5xx,
	// timeouts, network errors, malformed responses). 0: 8; negative: none. A 429 rate limit is
	// not a failure but the server pacing a shared budget: it is waited out as the server says
	// and does not count here, only against MaxRetryTime.
	MaxRetries int
	// MaxRetryTime bounds the time one request may spend retrying. 0: 10 minutes.
	MaxRetryTime time.Duration
	// BaseBackoff and MaxBackoff shape the exponential backoff. 0: 500ms and 30s.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// RequestTimeout bounds one attempt. 0: 2 minutes.
	RequestTimeout time.Duration
	// MaxInFlight is how many requests may be outstanding at once, so latency does not cap
	// throughput. 0: 3.
	MaxInFlight int
	// HTTPClient is used for requests; it is not modified. nil: a pooled client.
	HTTPClient *http.Client
	Logger     logr.Logger
	// Count counts an input's tokens. nil: the cl100k_base tokenizer, stopping once past the
	// limit (tokens.CountUpTo), so that a huge text costs no more than a long one.
	Count func(string) int
	// Overlong is what happens to a text over InputTokenLimit: OverlongFail (or empty) fails its
	// row with ReasonTooManyTokens, OverlongTruncate embeds its first InputTokenLimit tokens.
	Overlong string
	// ProbeFirst sends a batcher's first input alone, so bad credentials, quota, model or
	// dimension show within seconds of a start instead of after the first full batch has waited
	// for its share of the token budget (which can take a minute). It costs one extra request.
	ProbeFirst bool
}

// DefaultMaxBatchVectorBytes is 3 MiB of vectors: 512 inputs at 1,536 dimensions, still far
// more tokens per request (≈ 100,000 for 200-token rows) than a request budget of a few per
// second needs to spend a token budget.
const DefaultMaxBatchVectorBytes = 3 << 20

// Stats are the embedder's counters since New.
type Stats struct {
	Requests    int64 // attempts sent, retries included
	Retries     int64
	RateLimited int64 // 429 responses that were retried
	Tokens      int64 // usage reported by the API
	Inputs      int64 // inputs embedded
}

// Embedder embeds batches of texts. It is safe for concurrent use; budgets and the in-flight
// cap are shared by all callers.
type Embedder struct {
	client         *openai.Client
	log            logr.Logger
	apiKey         string
	model          string
	dimensions     int
	expectedDim    int
	count          func(string, int) int
	truncate       bool
	maxInputs      int
	maxBatchTokens int
	probeFirst     bool
	maxRetries     int
	maxRetryTime   time.Duration
	baseBackoff    time.Duration
	maxBackoff     time.Duration
	requestTimeout time.Duration
	requests       *rate.Limiter
	tokens         *rate.Limiter
	inFlight       chan struct{}

	nRequests, nRetries, nRateLimited, nTokens, nInputs atomic.Int64
	// remainingRequests and remainingTokens are the last x-ratelimit-remaining-* the provider
	// sent (-1: none yet), reported to the rate lease service.
	remainingRequests, remainingTokens atomic.Int64
	// leased is set once a rate lease drives the limits (see waitN).
	leased atomic.Bool
	// leaseBatchTokens caps the batches packed from now on under a lease (0: none): sized for
	// the grant as batchTokensFor sizes them for a static budget, so that one request is a small
	// part of the pod's minute (own below).
	leaseBatchTokens atomic.Int64
	// own is the pod's sends in the last window under a lease (see waitOwn).
	own ownWindow
	// waited is the time finished waits for the budgets took (nanoseconds, summed over
	// concurrent waits); waiters and waitStarts (the sum of their start times, Unix nanoseconds)
	// add the waits still going, so a request stuck behind a tiny grant counts at once. A lease
	// client reads it to tell a pod held back by its grant.
	waited, waiters, waitStarts atomic.Int64
}

// New validates cfg and returns an Embedder.
func New(cfg Config) (*Embedder, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("embedding: API key is empty")
	}
	if cfg.Model == "" {
		return nil, errors.New("embedding: model is empty")
	}
	switch {
	case cfg.MaxInputsPerRequest == 0:
		cfg.MaxInputsPerRequest = MaxInputsPerRequest
	case cfg.MaxInputsPerRequest < 0 || cfg.MaxInputsPerRequest > MaxInputsPerRequest:
		return nil, fmt.Errorf("embedding: maxInputsPerRequest %d is outside 1..%d", cfg.MaxInputsPerRequest, MaxInputsPerRequest)
	}
	if cfg.Dimensions < 0 || cfg.ExpectedDimension < 0 {
		return nil, errors.New("embedding: dimensions must not be negative")
	}
	if cfg.RequestsPerMinute < 0 || cfg.TokensPerMinute < 0 {
		return nil, errors.New("embedding: rate budgets must not be negative")
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 8
	} else if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	cfg.MaxRetryTime = orDefault(cfg.MaxRetryTime, 10*time.Minute)
	cfg.BaseBackoff = orDefault(cfg.BaseBackoff, 500*time.Millisecond)
	cfg.MaxBackoff = orDefault(cfg.MaxBackoff, 30*time.Second)
	cfg.RequestTimeout = orDefault(cfg.RequestTimeout, 2*time.Minute)
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 3
	}
	if cfg.ExpectedDimension == 0 {
		cfg.ExpectedDimension = cfg.Dimensions
	}
	if cfg.MaxBatchVectorBytes == 0 {
		cfg.MaxBatchVectorBytes = DefaultMaxBatchVectorBytes
	}
	if cfg.MaxBatchVectorBytes > 0 && cfg.ExpectedDimension > 0 {
		cfg.MaxInputsPerRequest = max(1, min(cfg.MaxInputsPerRequest, cfg.MaxBatchVectorBytes/(4*cfg.ExpectedDimension)))
	}
	var count func(string, int) int
	if cfg.Count == nil {
		var err error
		if count, err = defaultCounter(); err != nil {
			return nil, fmt.Errorf("embedding: load tokenizer: %w", err)
		}
	} else {
		c := cfg.Count
		count = func(s string, _ int) int { return c(s) }
	}
	switch cfg.Overlong {
	case "", OverlongFail, OverlongTruncate:
	default:
		return nil, fmt.Errorf("embedding: overlong %q is neither %s nor %s", cfg.Overlong, OverlongFail, OverlongTruncate)
	}
	if cfg.Dimensions > 0 && !AcceptsDimensions(cfg.Model) {
		// text-embedding-ada-002 answers any `dimensions` with a 400; its vectors have 1,536.
		cfg.Logger.Info("not sending dimensions: the model does not accept it", "model", cfg.Model, "dimensions", cfg.Dimensions)
		if cfg.ExpectedDimension == 0 {
			cfg.ExpectedDimension = cfg.Dimensions
		}
		cfg.Dimensions = 0
	}

	httpClient := cfg.HTTPClient
	if httpClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = cfg.MaxInFlight * 2
		httpClient = &http.Client{Transport: t}
	}
	oc := openai.DefaultConfig(cfg.APIKey)
	if cfg.BaseURL != "" {
		oc.BaseURL = cfg.BaseURL
	}
	oc.HTTPClient = capturingDoer{client: httpClient}

	// The server meters a sliding minute. A token bucket with burst B lets B plus one minute of
	// budget through in a minute, so both buckets are kept from bursting: requests have burst
	// 1 (evenly spaced), and the token bucket starts empty, so a busy worker never sends more
	// than its rate (plus one batch at a window's edge). Its burst is one minute of budget
	// capped at 300,000 tokens, and batches are packed to fit it, so every request is a single
	// draw and a small budget gets small requests.
	reqLim := rate.NewLimiter(rate.Inf, 1)
	if cfg.RequestsPerMinute > 0 {
		reqLim = rate.NewLimiter(rate.Limit(cfg.RequestsPerMinute/60), 1)
	}
	tokLim := rate.NewLimiter(rate.Inf, RequestTokenLimit)
	maxBatchTokens := RequestTokenLimit
	if cfg.TokensPerMinute > 0 {
		maxBatchTokens = max(1, min(RequestTokenLimit, int(cfg.TokensPerMinute), batchTokensFor(cfg.TokensPerMinute, cfg.RequestsPerMinute)))
		tokLim = rate.NewLimiter(rate.Limit(cfg.TokensPerMinute/60), maxBatchTokens)
		tokLim.AllowN(time.Now(), maxBatchTokens) // start empty
	}

	e := &Embedder{
		client:         openai.NewClientWithConfig(oc),
		log:            cfg.Logger,
		apiKey:         cfg.APIKey,
		model:          cfg.Model,
		dimensions:     cfg.Dimensions,
		expectedDim:    cfg.ExpectedDimension,
		count:          count,
		truncate:       cfg.Overlong == OverlongTruncate,
		maxInputs:      cfg.MaxInputsPerRequest,
		maxBatchTokens: maxBatchTokens,
		probeFirst:     cfg.ProbeFirst,
		maxRetries:     cfg.MaxRetries,
		maxRetryTime:   cfg.MaxRetryTime,
		baseBackoff:    cfg.BaseBackoff,
		maxBackoff:     cfg.MaxBackoff,
		requestTimeout: cfg.RequestTimeout,
		requests:       reqLim,
		tokens:         tokLim,
		inFlight:       make(chan struct{}, cfg.MaxInFlight),
	}
	e.remainingRequests.Store(-1)
	e.remainingTokens.Store(-1)
	return e, nil
}

// SetRates changes the budgets of a running Embedder (a rate lease's grant): rpm and tpm per
// minute, 0 meaning unlimited, and the token bucket's burst. Batches packed from now on are
// sized for the grant, and the burst never drops below that size, or such a batch could not be
// admitted in one draw. The burst is not kept at the Job's static batch cap: every holder's
// bucket can be full at a minute's start, and a bucket of a static cap (a third of a small
// grant's minute and more) at each of them went over the key's limit whenever grants changed.
// A batch packed earlier, larger than the burst, is drawn in pieces (wait).
func (e *Embedder) SetRates(rpm, tpm float64, burstTokens int) {
	now := time.Now()
	if !e.leased.Swap(true) {
		// The request bucket starts full (burst 1), and the token bucket has filled at the Job's
		// frozen share since New: under a lease shared by many short-lived pods, a free request
		// per pod start adds up at the provider's window. Both start empty at the first grant.
		e.requests.AllowN(now, int(e.requests.TokensAt(now)))
		e.tokens.AllowN(now, int(e.tokens.TokensAt(now)))
	}
	e.own.setGrant(now, rpm, tpm)
	if rpm > 0 {
		e.requests.SetLimit(rate.Limit(rpm / 60))
	} else {
		e.requests.SetLimit(rate.Inf)
	}
	if tpm > 0 {
		batch := max(1, min(e.maxBatchTokens, batchTokensFor(tpm, rpm)))
		e.leaseBatchTokens.Store(int64(batch))
		e.tokens.SetBurst(max(burstTokens, batch))
		e.tokens.SetLimit(rate.Limit(tpm / 60))
	} else {
		e.tokens.SetLimit(rate.Inf)
		e.leaseBatchTokens.Store(0)
	}
}

// Rates returns the current budgets per minute (0: unlimited) and the token burst.
func (e *Embedder) Rates() (rpm, tpm float64, burstTokens int) {
	perMinute := func(l rate.Limit) float64 {
		if l == rate.Inf {
			return 0
		}
		return float64(l) * 60
	}
	return perMinute(e.requests.Limit()), perMinute(e.tokens.Limit()), e.tokens.Burst()
}

// Waited is the total time requests have waited for the budgets, waits still going included
// (summed over concurrent waits).
func (e *Embedder) Waited() time.Duration {
	starts, n := e.waitStarts.Load(), e.waiters.Load()
	return time.Duration(e.waited.Load() + max(0, n*time.Now().UnixNano()-starts))
}

// RateLimitRemaining returns the last x-ratelimit-remaining-requests and -tokens the provider
// sent, -1 for a header not seen yet.
func (e *Embedder) RateLimitRemaining() (requests, tokens int64) {
	return e.remainingRequests.Load(), e.remainingTokens.Load()
}

// noteRemaining keeps the provider's x-ratelimit-remaining-* headers.
func (e *Embedder) noteRemaining(h http.Header) {
	for name, v := range map[string]*atomic.Int64{
		"X-Ratelimit-Remaining-Requests": &e.remainingRequests,
		"X-Ratelimit-Remaining-Tokens":   &e.remainingTokens,
	} {
		if n, err := strconv.ParseInt(strings.TrimSpace(h.Get(name)), 10, 64); err == nil && n >= 0 {
			v.Store(n)
		}
	}
}

// batchTokensFor sizes batches (and the token bucket's burst) for a token budget. The server
// meters a sliding minute and a bucket lets its burst through on top of its rate, and every
// worker sharing the budget can do that at once: a burst of a full minute (up to 300,000 tokens)
// per worker overshoots the shared limit and turns into 429s and retries. Three seconds of
// budget keeps the overshoot near 5% however many workers share it, while batches stay large
// enough (twice budget/RPM) that the request budget is never what binds, and no smaller than the
// largest input.
func batchTokensFor(tpm, rpm float64) int {
	b := max(tpm/20, float64(MaxInputTokens))
	if rpm > 0 {
		b = max(b, 2*tpm/rpm)
	}
	return int(b)
}

// AcceptsDimensions reports whether model takes the request's `dimensions`: OpenAI's
// text-embedding-3-* do, text-embedding-ada-002 answers it with a 400. A model OpenAI does not
// have (behind an OpenAI-compatible baseURL) is given the benefit of the doubt.
func AcceptsDimensions(model string) bool {
	return !strings.HasPrefix(model, "text-embedding-ada-")
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// MaxBatchTokens is the most tokens one batch packed from now on holds: under a lease with a
// token grant, the size batchTokensFor gives the grant (what the lease service sizes the burst
// by); otherwise the static cap, 300,000 or what batchTokensFor gives the Job's budget.
func (e *Embedder) MaxBatchTokens() int {
	if l := e.leaseBatchTokens.Load(); l > 0 {
		return int(l)
	}
	return e.maxBatchTokens
}

// Stats returns a snapshot of the counters.
func (e *Embedder) Stats() Stats {
	return Stats{
		Requests:    e.nRequests.Load(),
		Retries:     e.nRetries.Load(),
		RateLimited: e.nRateLimited.Load(),
		Tokens:      e.nTokens.Load(),
		Inputs:      e.nInputs.Load(),
	}
}

// Embed packs inputs into batches and embeds them, up to MaxInFlight at a time. Outputs come in
// no particular order; match them by ID. Inputs that cannot be sent, or that the API refuses,
// are returned as InputErrors. On error (a *PermanentError, a *RetryExhaustedError or the
// context's error) the remaining batches are abandoned; the outputs of batches that finished
// are still returned.
func (e *Embedder) Embed(ctx context.Context, inputs []Input) ([]Output, []InputError, error) {
	batches, rejected := e.Split(inputs)
	var (
		mu   sync.Mutex
		outs = make([]Output, 0, len(inputs)-len(rejected))
	)
	g, gctx := errgroup.WithContext(ctx)
	for i := range batches {
		g.Go(func() error {
			got, refused, err := e.EmbedBatch(gctx, batches[i])
			if err != nil {
				return err
			}
			mu.Lock()
			outs = append(outs, got...)
			rejected = append(rejected, refused...)
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	return outs, rejected, err
}

// minAllRefused: when every input of a batch at least this large is refused on its own, the
// 400 was about the request after all (a proxy's or a new API rule's wording the classification
// does not know), and dead-lettering every row would hide it.
const minAllRefused = 4

// EmbedBatch sends one batch (from a Batcher or Split) and returns, in the batch's order, the
// outputs of the inputs embedded and the inputs the API refused. A 400 about the inputs, or a
// request too large for the limits, is isolated by bisection: the batch is sent in halves until
// the refused inputs are alone, and those come back as InputErrors with ReasonRefused and the
// API's message. Each request waits for a free in-flight slot, then for the budgets.
func (e *Embedder) EmbedBatch(ctx context.Context, b Batch) ([]Output, []InputError, error) {
	outs, refused, err := e.isolate(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	if n := len(b.Inputs); n >= minAllRefused && len(refused) == n {
		return nil, nil, &PermanentError{Reason: worker.ReasonPermanentError, Err: fmt.Errorf(
			"the embeddings API refused each of the %d inputs of a request on its own, so the error is about the request: %s", n, refused[0].Detail)}
	}
	return outs, refused, nil
}

// isolate sends b and, when the API refuses it for its inputs or its size, its halves (of what
// was not sent yet, when b went in parts and one was refused: the parts before it are done).
func (e *Embedder) isolate(ctx context.Context, b Batch) ([]Output, []InputError, error) {
	done, unsent, err := e.send(ctx, b)
	var ref *refusedError
	if !errors.As(err, &ref) {
		return done, nil, err
	}
	outs, refused, err := e.isolateRefused(ctx, unsent, ref)
	if err != nil {
		return nil, nil, err
	}
	return append(done, outs...), refused, nil
}

// isolateRefused bisects b, refused as a whole with ref, until the refused inputs are alone.
func (e *Embedder) isolateRefused(ctx context.Context, b Batch, ref *refusedError) ([]Output, []InputError, error) {
	if len(b.Inputs) == 1 {
		if ref.split {
			// One input over the token budget per minute: no split or wait can send it.
			return nil, nil, &PermanentError{Reason: worker.ReasonQuotaExceeded, Err: fmt.Errorf(
				"one input of %d tokens is refused as too large for the token limit: %s", b.Tokens, ref.msg)}
		}
		return nil, []InputError{{ID: b.Inputs[0].ID, Reason: ReasonRefused, Detail: ref.msg}}, nil
	}
	e.log.V(1).Info("embeddings request refused, isolating", "inputs", len(b.Inputs), "tooLarge", ref.split, "error", ref.msg)
	left, right := b.halves()
	lo, lr, err := e.isolate(ctx, left)
	if err != nil {
		return nil, nil, err
	}
	ro, rr, err := e.isolate(ctx, right)
	if err != nil {
		return nil, nil, err
	}
	return append(lo, ro...), append(lr, rr...), nil
}

// refusedError is a request refused for its inputs (a 400 about them) or its size: not
// retried as is, but split.
type refusedError struct {
	split bool
	msg   string
}

func (r *refusedError) Error() string { return r.msg }

// send sends one batch, retrying transient failures: as one request, or under a lease in parts
// when the pod's own window has room for the first inputs but not for all of them (take). When
// the API refuses a part for its inputs or its size (a *refusedError), the outputs of the parts
// before it come back with the inputs not embedded (unsent, from the refused part on).
func (e *Embedder) send(ctx context.Context, b Batch) (outs []Output, unsent Batch, err error) {
	if len(b.Inputs) == 0 {
		return nil, Batch{}, nil
	}
	select {
	case e.inFlight <- struct{}{}:
	case <-ctx.Done():
		return nil, Batch{}, fmt.Errorf("embed batch: %w", ctx.Err())
	}
	defer func() { <-e.inFlight }()

	paid := false // b's tokens were drawn from the token bucket with an earlier part's
	for {
		part, rest, own, err := e.take(ctx, b, paid)
		if err != nil {
			return nil, Batch{}, fmt.Errorf("embed batch: wait for rate budget: %w", err)
		}
		got, err := e.sendPart(ctx, part, own)
		var ref *refusedError
		switch {
		case errors.As(err, &ref):
			return outs, b, err
		case err != nil:
			return nil, Batch{}, err
		}
		outs = append(outs, got...)
		if len(rest.Inputs) == 0 {
			return outs, Batch{}, nil
		}
		b, paid = rest, true
	}
}

// take draws a request and b's tokens (unless paid) from the buckets, then waits for the pod's
// own window (under a lease) to admit b, or, when only b's first inputs fit it (at least a
// quarter of its tokens), admits those as part and returns the others as rest, their tokens
// paid. The window holds a whole number of requests; a batch that waited for room for all of
// itself left the rest of its minute unused (on average half a batch of each pod's minute, two
// to three percent of the key's throughput in the fleet bench).
func (e *Embedder) take(ctx context.Context, b Batch, paid bool) (part, rest Batch, own *ownSend, err error) {
	tokens := b.Tokens
	if paid {
		tokens = 0
	}
	if err := e.wait(ctx, tokens); err != nil {
		return Batch{}, Batch{}, nil, err
	}
	own, k, err := e.waitOwnFit(ctx, b)
	if err != nil {
		return Batch{}, Batch{}, nil, err
	}
	part, rest = b.cut(k)
	return part, rest, own, nil
}

// cut splits b after its first k inputs (k ≥ len: all of b, nothing left).
func (b Batch) cut(k int) (head, tail Batch) {
	if k >= len(b.Inputs) || len(b.counts) != len(b.Inputs) {
		return b, Batch{}
	}
	head = Batch{Inputs: b.Inputs[:k:k], counts: b.counts[:k:k]}
	for _, c := range head.counts {
		head.Tokens += c
	}
	tail = Batch{Inputs: b.Inputs[k:], counts: b.counts[k:], Tokens: b.Tokens - head.Tokens}
	return head, tail
}

// sendPart sends b as one request, its budgets taken (own: its place in the pod's own window),
// retrying transient failures.
func (e *Embedder) sendPart(ctx context.Context, b Batch, own *ownSend) ([]Output, error) {
	texts := make([]string, len(b.Inputs))
	for i, in := range b.Inputs {
		texts[i] = in.Text
	}
	req := openai.EmbeddingRequestStrings{
		Input:          texts,
		Model:          openai.EmbeddingModel(e.model),
		EncodingFormat: openai.EmbeddingEncodingFormatBase64,
		Dimensions:     e.dimensions,
	}

	start := time.Now()
	failures := 0 // retried attempts that were not rate limits
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Every attempt is a request; the tokens are charged once, because a refused request
			// (429) does not use the server's token budget and Retry-After already says how long
			// the server needs.
			if err := e.wait(ctx, 0); err != nil {
				return nil, fmt.Errorf("embed batch: wait for rate budget: %w", err)
			}
			var err error
			if own, err = e.waitOwn(ctx, b.Tokens); err != nil {
				return nil, fmt.Errorf("embed batch: wait for rate budget: %w", err)
			}
		}
		outs, hdr, err := e.attempt(ctx, req, b)
		if hdr != nil {
			e.noteRemaining(hdr)
		}
		if err == nil {
			e.nInputs.Add(int64(len(outs)))
			return outs, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("embed batch: %w", ctx.Err())
		}
		v := classify(err)
		if v.split || v.refused {
			return nil, &refusedError{split: v.split, msg: apiMessage(err, e.apiKey)}
		}
		if v.permanent {
			var perm *PermanentError
			if errors.As(err, &perm) {
				return nil, perm
			}
			return nil, &PermanentError{Reason: v.reason, Err: sanitized(err, e.apiKey)}
		}
		if v.rateLimited {
			// Refused, so not counted at the provider: not in the pod's own window either.
			e.own.refund(own)
			// Under a budget shared by several workers, a request can be refused at a window's
			// edge several times in a row while the others take the capacity freed; a retry
			// count would fail a chunk that only had to wait its turn.
			e.nRateLimited.Add(1)
		} else {
			failures++
		}
		delay := backoff(attempt, e.baseBackoff, e.maxBackoff, retryAfter(hdr, time.Now(), v.rateLimited, v.limit), rand.Float64())
		if failures > e.maxRetries || time.Since(start)+delay > e.maxRetryTime {
			return nil, &RetryExhaustedError{Attempts: attempt + 1, Err: sanitized(err, e.apiKey)}
		}
		e.nRetries.Add(1)
		e.log.V(1).Info("retrying embeddings request", "attempt", attempt+1, "delay", delay,
			"inputs", len(b.Inputs), "rateLimited", v.rateLimited, "error", describe(err, e.apiKey))
		if err := sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("embed batch: %w", err)
		}
	}
}

// wait takes one request and n tokens from the budgets. n above the token bucket (one input
// larger than a tiny per-minute budget) is taken in bucket-sized pieces, which waits as long
// as the budget requires.
func (e *Embedder) wait(ctx context.Context, n int) error {
	if err := e.waitN(ctx, e.requests, 1); err != nil {
		return err
	}
	if e.leased.Load() {
		return e.waitN(ctx, e.tokens, n) // in pieces of the burst as it is at each draw
	}
	for n > 0 {
		take := min(n, e.tokens.Burst())
		if err := e.waitN(ctx, e.tokens, take); err != nil {
			return err
		}
		n -= take
	}
	return nil
}

// leaseWaitSlice: once a lease drives the limits (SetRates), a request waits by polling the
// bucket at most this long at a time, so a grant raised while it waits takes effect within a
// slice instead of after a wait computed at the old rate. It never reserves ahead: a cancelled
// reservation gives back less than it took when others reserved after it, which under
// concurrent waiters would leak budget.
const leaseWaitSlice = time.Second

// startWait counts a wait for the budgets in Waited until the returned func is called.
func (e *Embedder) startWait() (done func()) {
	start := time.Now()
	e.waiters.Add(1)
	e.waitStarts.Add(start.UnixNano())
	return func() {
		// waited first: a concurrent Waited may count this wait twice for a moment, never lose it
		e.waited.Add(int64(time.Since(start)))
		e.waitStarts.Add(-start.UnixNano())
		e.waiters.Add(-1)
	}
}

func (e *Embedder) waitN(ctx context.Context, l *rate.Limiter, n int) error {
	defer e.startWait()()
	if !e.leased.Load() {
		return l.WaitN(ctx, n)
	}
	// n is drawn in pieces of the burst read at each draw: a grant lowered meanwhile lowers the
	// burst below a batch packed for the old one.
	for n > 0 {
		now := time.Now()
		take := n
		if l.Limit() != rate.Inf {
			take = min(n, max(1, l.Burst()))
		}
		if l.AllowN(now, take) {
			n -= take
			continue
		}
		d := leaseWaitSlice
		if lim := float64(l.Limit()); lim > 0 {
			need := float64(take) - l.TokensAt(now)
			d = min(leaseWaitSlice, max(time.Millisecond, time.Duration(need/lim*float64(time.Second))))
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// attempt sends one request and matches the response to the batch. It returns the response
// headers for Retry-After.
func (e *Embedder) attempt(ctx context.Context, req openai.EmbeddingRequestStrings, b Batch) ([]Output, http.Header, error) {
	actx, cancel := context.WithTimeout(ctx, e.requestTimeout)
	defer cancel()
	actx, got := withCapture(actx)
	got.decode = true
	e.nRequests.Add(1)
	resp, err := e.client.CreateEmbeddings(actx, req)
	if err != nil {
		return nil, got.header, err
	}
	dec := got.resp
	if dec == nil {
		// Not decoded on the way in (a 2xx other than 200): take go-openai's decoding.
		dec = &decodedResponse{promptTokens: resp.Usage.PromptTokens, totalTokens: resp.Usage.TotalTokens}
		for _, d := range resp.Data {
			dec.data = append(dec.data, decodedVector{index: d.Index, vector: d.Embedding})
		}
	}
	e.nTokens.Add(int64(max(dec.totalTokens, dec.promptTokens)))
	outs, err := e.match(dec.data, b)
	return outs, got.header, err
}

// match pairs embeddings with inputs by the response's index field, never by position: every
// index must appear exactly once and every vector must have the expected length.
func (e *Embedder) match(data []decodedVector, b Batch) ([]Output, error) {
	n := len(b.Inputs)
	if len(data) != n {
		return nil, fmt.Errorf("embeddings response has %d vectors for %d inputs", len(data), n)
	}
	outs := make([]Output, n)
	seen := make([]bool, n)
	for _, d := range data {
		if d.index < 0 || d.index >= n {
			return nil, fmt.Errorf("embeddings response has index %d outside 0..%d", d.index, n-1)
		}
		if seen[d.index] {
			return nil, fmt.Errorf("embeddings response repeats index %d", d.index)
		}
		if e.expectedDim > 0 && len(d.vector) != e.expectedDim {
			return nil, &PermanentError{Reason: worker.ReasonDimension, Err: fmt.Errorf(
				"model %s returned a vector of %d dimensions, the index expects %d", e.model, len(d.vector), e.expectedDim)}
		}
		seen[d.index] = true
		outs[d.index] = Output{ID: b.Inputs[d.index].ID, Vector: d.vector}
	}
	return outs, nil
}
