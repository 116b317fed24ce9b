package embedding

import (
	"fmt"
	"strings"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
)

// OpenAI's limits for one embeddings request.
const (
	MaxInputsPerRequest = 2048
	MaxRequestTokens    = tokens.MaxTokensPerRequest // 300,000
	MaxInputTokens      = tokens.MaxTokensPerInput   // 8,191
)

// Row failure reasons for inputs that are never sent.
const (
	ReasonTooManyTokens = "too_many_tokens"
	ReasonEmptyText     = "empty_text"
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
}

// Batcher packs inputs, in arrival order, into batches that fit one request and one draw from
// the token limiter. Use one per goroutine; it is not safe for concurrent use.
type Batcher struct {
	count     func(string) int
	maxInputs int
	maxTokens int
	cur       Batch
	// probe makes the first batch a single input (see Config.ProbeFirst).
	probe bool
}

// NewBatcher returns a batcher with the embedder's limits.
func (e *Embedder) NewBatcher() *Batcher {
	return &Batcher{count: e.count, maxInputs: e.maxInputs, maxTokens: e.maxBatchTokens, probe: e.probeFirst}
}

// Add adds an input. When the input does not fit the current batch, that batch is returned
// (ready to send) and the input starts the next one. An input that can never be sent (empty,
// or over MaxInputTokens) is returned as an InputError and not added.
func (b *Batcher) Add(in Input) (*Batch, *InputError) {
	if strings.TrimSpace(in.Text) == "" {
		// The API rejects an empty string with a 400 for the whole request.
		return nil, &InputError{ID: in.ID, Reason: ReasonEmptyText, Detail: "text is empty"}
	}
	n := b.count(in.Text)
	if n > MaxInputTokens {
		return nil, &InputError{ID: in.ID, Reason: ReasonTooManyTokens,
			Detail: fmt.Sprintf("%d tokens, the model takes at most %d", n, MaxInputTokens)}
	}
	var full *Batch
	if len(b.cur.Inputs) > 0 && (b.probe || len(b.cur.Inputs)+1 > b.maxInputs || b.cur.Tokens+n > b.maxTokens) {
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
