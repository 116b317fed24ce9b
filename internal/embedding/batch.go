package embedding

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
)

// OpenAI's limits for one embeddings request.
const (
	MaxInputsPerRequest = 2048
	MaxRequestTokens    = tokens.MaxTokensPerRequest // 300,000
	MaxInputTokens      = tokens.MaxTokensPerInput   // 8,191
)

// The limits batches are packed to, with a margin under OpenAI's: the local count is exact for
// OpenAI's models, but a compatible server behind baseURL, or a model revision, may count a few
// tokens more, and a request refused for its size costs a round of splitting.
const (
	InputTokenLimit   = MaxInputTokens - 64       // 8,127
	RequestTokenLimit = MaxRequestTokens - 10_000 // 290,000
)

// Row failure reasons for inputs that are never sent or that the API refuses.
const (
	ReasonTooManyTokens = "too_many_tokens"
	ReasonEmptyText     = "empty_text"
	// ReasonRefused: the embeddings API answered 400 for this input alone; the detail is the
	// API's message.
	ReasonRefused = "embedding_refused"
)

// Values of Config.Overlong (spec.mapping.overlongText).
const (
	OverlongFail     = "fail"
	OverlongTruncate = "truncate"
)

// Input is one text to embed. ID is the caller's key (a row number, a slice index); results
// carry it back, so the order of outputs does not matter.
type Input struct {
	ID   int64
	Text string
}

// Output is the vector of one input.
type Output struct {
	ID     int64
	Vector []float32
}

// InputError is an input rejected before sending, with a row failure reason.
type InputError struct {
	ID     int64
	Reason string
	Detail string
}

// Batch is the inputs of one embeddings request and their counted tokens.
type Batch struct {
	Inputs []Input
	Tokens int
	// counts are the inputs' own token counts when the batcher made the batch, so that halves of
	// a refused batch are charged what they hold.
	counts []int
}

// halves splits b in two for isolating a refused input.
func (b Batch) halves() (Batch, Batch) {
	m := len(b.Inputs) / 2
	l, r := Batch{Inputs: b.Inputs[:m:m]}, Batch{Inputs: b.Inputs[m:]}
	if len(b.counts) == len(b.Inputs) {
		l.counts, r.counts = b.counts[:m:m], b.counts[m:]
		for _, c := range l.counts {
			l.Tokens += c
		}
		r.Tokens = b.Tokens - l.Tokens
	} else {
		l.Tokens = b.Tokens * m / max(1, len(b.Inputs))
		r.Tokens = b.Tokens - l.Tokens
	}
	return l, r
}

// Batcher packs inputs, in arrival order, into batches that fit one request and one draw from
// the token limiter. Use one per goroutine; it is not safe for concurrent use.
type Batcher struct {
	count     func(string, int) int
	truncate  bool
	maxInputs int
	maxTokens int
	// leaseTokens, when set, is a lower cap from the embedder's rate lease (SetRates), read at
	// each batch: small grants get small requests.
	leaseTokens *atomic.Int64
	cur         Batch
	// probe makes the first batch a single input (see Config.ProbeFirst).
	probe bool
}

// NewBatcher returns a batcher with the embedder's limits.
func (e *Embedder) NewBatcher() *Batcher {
	return &Batcher{count: e.count, truncate: e.truncate, maxInputs: e.maxInputs, maxTokens: e.maxBatchTokens,
		leaseTokens: &e.leaseBatchTokens, probe: e.probeFirst}
}

// Add adds an input. When the input does not fit the current batch, that batch is returned
// (ready to send) and the input starts the next one. An input that can never be sent (empty,
// or over InputTokenLimit unless overlong texts are truncated) is returned as an InputError and
// not added. A truncated input is added with its shortened text.
func (b *Batcher) Add(in Input) (*Batch, *InputError) {
	if strings.TrimSpace(in.Text) == "" {
		// The API rejects an empty string with a 400 for the whole request.
		return nil, &InputError{ID: in.ID, Reason: ReasonEmptyText, Detail: "text is empty"}
	}
	// The count stops past the limit, so a huge text costs no more than a long one.
	n := b.count(in.Text, InputTokenLimit)
	if n > InputTokenLimit {
		if !b.truncate {
			return nil, &InputError{ID: in.ID, Reason: ReasonTooManyTokens, Detail: fmt.Sprintf(
				"%d bytes of text, more than %d tokens (the model takes %d; set spec.mapping.overlongText: truncate to embed the start)",
				len(in.Text), InputTokenLimit, MaxInputTokens)}
		}
		// Cloned so the batch does not pin the whole text of an outlier row.
		in.Text = strings.Clone(tokens.Truncate(in.Text, InputTokenLimit))
		n = b.count(in.Text, InputTokenLimit)
	}
	maxTokens := b.maxTokens
	if b.leaseTokens != nil {
		if l := int(b.leaseTokens.Load()); l > 0 {
			maxTokens = min(maxTokens, l)
		}
	}
	var full *Batch
	if len(b.cur.Inputs) > 0 && (b.probe || len(b.cur.Inputs)+1 > b.maxInputs || b.cur.Tokens+n > maxTokens) {
		done := b.cur
		full = &done
		b.cur = Batch{}
		b.probe = false
	}
	if b.cur.Inputs == nil {
		b.cur.Inputs = make([]Input, 0, min(b.maxInputs, 256))
	}
	// A single input larger than maxTokens (a token budget below 8,191/min) goes alone; the
	// limiter then waits for it in pieces.
	b.cur.Inputs = append(b.cur.Inputs, in)
	b.cur.counts = append(b.cur.counts, n)
	b.cur.Tokens += n
	return full, nil
}

// Flush returns the pending batch, or nil when there is none.
func (b *Batcher) Flush() *Batch {
	if len(b.cur.Inputs) == 0 {
		return nil
	}
	done := b.cur
	b.cur = Batch{}
	return &done
}

// Split packs inputs into batches and returns them with the rejected inputs.
func (e *Embedder) Split(inputs []Input) ([]Batch, []InputError) {
	b := e.NewBatcher()
	var batches []Batch
	var rejected []InputError
	for _, in := range inputs {
		full, bad := b.Add(in)
		if bad != nil {
			rejected = append(rejected, *bad)
		}
		if full != nil {
			batches = append(batches, *full)
		}
	}
	if last := b.Flush(); last != nil {
		batches = append(batches, *last)
	}
	return batches, rejected
}

// InputTokens is the token count of input i as the batcher counted it (after any truncation),
// or 0 when the batch was not made by a Batcher.
func (b *Batch) InputTokens(i int) int {
	if i < 0 || i >= len(b.counts) {
		return 0
	}
	return b.counts[i]
}
