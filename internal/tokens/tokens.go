// Package tokens counts OpenAI embedding tokens with the real cl100k_base tokenizer, offline, and
// turns token counts into a cost and a rate-limit floor for the planner's estimate.
//
// All three OpenAI embedding models (text-embedding-3-small, text-embedding-3-large,
// text-embedding-ada-002) use cl100k_base, so one encoder serves them all. For another model behind
// an OpenAI-compatible baseURL the counts are an approximation.
package tokens

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"
)

// EncodingName is the tokenizer the embedding models use.
const EncodingName = "cl100k_base"

// Limits of the embeddings API the embedder enforces with exact counts.
const (
	MaxTokensPerInput   = 8191
	MaxTokensPerRequest = 300000
)

var table = sync.OnceValues(func() (*rankTable, error) {
	t, err := loadTable()
	if err != nil {
		return nil, fmt.Errorf("load %s tokenizer: %w", EncodingName, err)
	}
	return t, nil
})

// Load prepares the rank table (about 20 ms and 2.1 MB of heap, once per process) and reports
// whether it could. Call it at start-up to get an error instead of Count's panic.
func Load() error {
	_, err := table()
	return err
}

// Count returns the exact number of cl100k_base tokens in text, as the embeddings API counts them.
// Special-token text such as "<|endoftext|>" is counted as ordinary text, never rejected. Invalid
// UTF-8 is counted as tiktoken counts it, each bad byte as U+FFFD. Count is safe for concurrent
// use and, once warm, does not allocate. It panics only if the embedded BPE table cannot be
// loaded, which is a broken build, not bad input; Load reports that as an error.
func Count(text string) int {
	t, err := table()
	if err != nil {
		panic(err)
	}
	if !utf8.ValidString(text) {
		return countInvalid(t, text)
	}
	return t.count(text)
}

func (t *rankTable) count(s string) int {
	n := 0
	for i := 0; i < len(s); {
		j := nextPiece(s, i)
		n += t.countPiece(s[i:j])
		i = j
	}
	return n
}

var textPool = sync.Pool{New: func() any { return new([]byte) }}

// countInvalid counts text after replacing every byte that is not part of valid UTF-8 with U+FFFD,
// as tiktoken-go's []rune(text) does before it splits and encodes.
func countInvalid(t *rankTable, text string) int {
	bp := textPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 { // do not pin a huge text's copy
			textPool.Put(bp)
		}
	}()
	b := (*bp)[:0]
	for i := 0; i < len(text); {
		r, w := utf8.DecodeRuneInString(text[i:])
		if r == utf8.RuneError && w == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, text[i:i+w]...)
		}
		i += w
	}
	*bp = b
	// The string aliases the pooled buffer only until this call returns, so no copy is needed.
	return t.count(unsafe.String(unsafe.SliceData(b), len(b)))
}

// prices in nano-USD per token (USD per 1M tokens × 1000).
var prices = map[string]int64{
	"text-embedding-3-small": 20,  // $0.02 / 1M
	"text-embedding-3-large": 130, // $0.13 / 1M
	"text-embedding-ada-002": 100, // $0.10 / 1M
}

const defaultModel = "text-embedding-3-small"

// PriceKnown reports whether model has its own entry in the price table.
func PriceKnown(model string) bool {
	_, ok := prices[model]
	return ok
}

// CostUSD returns the cost of embedding tokens with model as a decimal string with at least two
// decimals and no rounding ("0.30", "0.00002"). An unknown model (e.g. behind a custom baseURL) is
// priced as text-embedding-3-small; PriceKnown tells the caller when that happened.
func CostUSD(model string, tokens int64) string { return formatNano(costNano(model, tokens)) }

// BatchCostUSD is CostUSD at the Batch API's rate, half the online price ($0.01 / 1M tokens for
// text-embedding-3-small, $0.065 for -large, $0.05 for ada-002, as published).
func BatchCostUSD(model string, tokens int64) string { return formatNano(costNano(model, tokens) / 2) }

// BatchSavingUSD is what the Batch API saves on tokens against the online price.
func BatchSavingUSD(model string, tokens int64) string {
	c := costNano(model, tokens)
	return formatNano(c - c/2)
}

func costNano(model string, tokens int64) int64 {
	nano, ok := prices[model]
	if !ok {
		nano = prices[defaultModel]
	}
	if tokens < 0 {
		tokens = 0
	}
	return tokens * nano // nano-USD; overflows only past 7e16 tokens
}

func formatNano(total int64) string {
	s := strconv.FormatInt(total/1e9, 10) + "." + fmt.Sprintf("%09d", total%1e9)
	// Keep two decimals at least, drop the zeros after them.
	dot := strings.IndexByte(s, '.')
	end := len(s)
	for end > dot+3 && s[end-1] == '0' {
		end--
	}
	return s[:end]
}

// MinDuration is the shortest time the rate budgets allow for the work: the larger of tokens/tpm
// and requests/rpm minutes. A budget ≤ 0 means no limit of that kind.
func MinDuration(tokens, requests int64, rpm, tpm int) time.Duration {
	var minutes float64
	if tpm > 0 {
		minutes = float64(tokens) / float64(tpm)
	}
	if rpm > 0 {
		minutes = math.Max(minutes, float64(requests)/float64(rpm))
	}
	return time.Duration(math.Ceil(minutes * float64(time.Minute)))
}

// MinRequests is the fewest embedding requests rows texts totalling tokens can be sent in, given
// at most maxInputs inputs and MaxTokensPerRequest tokens a request. Greedy batching may need a few
// more; this is the floor the planner's estimate uses.
func MinRequests(rows, tokens int64, maxInputs int) int64 {
	if rows <= 0 {
		return 0
	}
	n := int64(1)
	if maxInputs > 0 {
		n = (rows + int64(maxInputs) - 1) / int64(maxInputs)
	}
	if byTokens := (tokens + MaxTokensPerRequest - 1) / MaxTokensPerRequest; byTokens > n {
		n = byTokens
	}
	return n
}

// Estimator sums the tokens of many texts without tokenizing every one: exact counting runs at
// about 80 MB/s a core, still tens of seconds for a large file, so the planner's estimate samples.
// The first MinExact texts are counted exactly; after that one text in SampleEvery (chosen by a
// fixed-seed generator, so the same file gives the same estimate and periodic data cannot alias
// with the sampling) is counted exactly, and the others are charged at the tokens-per-byte ratio
// seen in the counted texts. With fewer than MinExact texts the total is exact. The zero value
// uses the defaults. Not safe for concurrent use.
type Estimator struct {
	MinExact    int // default 2000
	SampleEvery int // default 16

	rng         *rand.Rand
	texts       int64
	exactTexts  int64
	exactTokens int64
	exactBytes  int64
	otherBytes  int64
}

// Add accounts for one text. It takes bytes so a caller scanning a CSV need not allocate a string
// for the texts that are not sampled.
func (e *Estimator) Add(text []byte) {
	e.texts++
	minExact, every := e.MinExact, e.SampleEvery
	if minExact <= 0 {
		minExact = 2000
	}
	if every <= 0 {
		every = 16
	}
	exact := e.texts <= int64(minExact)
	if !exact {
		if e.rng == nil {
			e.rng = rand.New(rand.NewPCG(0x5eed, 0xc1100))
		}
		exact = e.rng.IntN(every) == 0
	}
	if exact {
		e.exactTexts++
		// No text is billed more than one input's tokens (a longer one is dead-lettered or
		// truncated), and counting stops there, so an outlier row costs no memory. It stays out
		// of the bytes-per-token ratio, which it would skew.
		// CountUpTo keeps no reference to the text: no copy of it is needed.
		n := CountUpTo(unsafe.String(unsafe.SliceData(text), len(text)), MaxTokensPerInput)
		if n > MaxTokensPerInput {
			e.exactTokens += MaxTokensPerInput
			return
		}
		e.exactTokens += int64(n)
		e.exactBytes += int64(len(text))
		return
	}
	// Charged at the ratio, capped near one input's worth.
	e.otherBytes += int64(min(len(text), maxEstimatedTextBytes))
}

// maxEstimatedTextBytes caps the bytes a sampled-out text is charged for: 8 bytes a token for a
// full input, above any text's ratio, so a long row is not charged as thousands of inputs.
const maxEstimatedTextBytes = 8 * MaxTokensPerInput

// Tokens is the estimated total: exact tokens of the counted texts plus the other texts' bytes at
// the counted texts' tokens-per-byte ratio (4 bytes a token if every counted text was empty),
// rounded up.
func (e *Estimator) Tokens() int64 {
	if e.otherBytes == 0 {
		return e.exactTokens
	}
	ratio := 0.25 // OpenAI's rule of thumb, only when every counted text was empty
	if e.exactBytes > 0 {
		ratio = float64(e.exactTokens) / float64(e.exactBytes)
	}
	est := float64(e.otherBytes) * ratio
	return e.exactTokens + int64(math.Ceil(est))
}

// Exact reports whether Tokens is an exact count (every text was tokenized).
func (e *Estimator) Exact() bool { return e.exactTexts == e.texts }

// Texts is the number of texts added.
func (e *Estimator) Texts() int64 { return e.texts }
