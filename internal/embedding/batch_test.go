package embedding

import (
	"fmt"
	"strings"
	"testing"
)

// words counts space-separated words: a predictable stand-in for the tokenizer where the test
// is about packing, not tokenizing.
func words(s string) int { return len(strings.Fields(s)) }

func newTestEmbedder(t *testing.T, cfg Config) *Embedder {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = "sk-test"
	}
	if cfg.Model == "" {
		cfg.Model = "text-embedding-3-small"
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func TestSplitRespectsInputAndTokenLimits(t *testing.T) {
	// TPM 100/min gives batches of at most 100 tokens; MaxInputsPerRequest 4 caps the count.
	e := newTestEmbedder(t, Config{MaxInputsPerRequest: 4, TokensPerMinute: 100, Count: words})
	if got := e.MaxBatchTokens(); got != 100 {
		t.Fatalf("MaxBatchTokens = %d, want 100 (the per-minute budget)", got)
	}
	var inputs []Input
	sizes := []int{10, 30, 50, 20, 5, 5, 5, 5, 5, 90, 40, 70, 1}
	wantTokens := 0
	for i, n := range sizes {
		inputs = append(inputs, Input{ID: int64(100 + i), Text: strings.Repeat("w ", n)})
		wantTokens += n
	}
	inputs = append(inputs, Input{ID: 7, Text: "  \n"}) // empty after trimming

	batches, rejected := e.Split(inputs)
	if len(rejected) != 1 || rejected[0].ID != 7 || rejected[0].Reason != ReasonEmptyText {
		t.Fatalf("rejected = %+v, want only ID 7 as %s", rejected, ReasonEmptyText)
	}
	next := int64(100)
	total := 0
	for i, b := range batches {
		if len(b.Inputs) == 0 || len(b.Inputs) > 4 {
			t.Errorf("batch %d has %d inputs, want 1..4", i, len(b.Inputs))
		}
		sum := 0
		for _, in := range b.Inputs {
			if in.ID != next {
				t.Fatalf("batch %d holds ID %d, want %d (arrival order, nothing lost)", i, in.ID, next)
			}
			next++
			sum += words(in.Text)
		}
		if sum != b.Tokens {
			t.Errorf("batch %d: Tokens = %d, inputs sum to %d", i, b.Tokens, sum)
		}
		if b.Tokens > 100 {
			t.Errorf("batch %d has %d tokens, above the 100-token bucket", i, b.Tokens)
		}
		total += b.Tokens
	}
	if next != int64(100+len(sizes)) || total != wantTokens {
		t.Fatalf("batched up to ID %d with %d tokens, want all %d inputs with %d tokens", next-1, total, len(sizes), wantTokens)
	}
	// Greedy packing: 10+30+50 | 20+5+5+5 (4 inputs) | 5+5+90 (exactly 100) | 40 | 70+1.
	want := "[[10 30 50] [20 5 5 5] [5 5 90] [40] [70 1]]"
	var got [][]int
	for _, b := range batches {
		var sizes []int
		for _, in := range b.Inputs {
			sizes = append(sizes, words(in.Text))
		}
		got = append(got, sizes)
	}
	if fmt.Sprint(got) != want {
		t.Fatalf("batches %v, want %v", got, want)
	}
}

func TestSplitDefaultCapsAt300kTokensAnd2048Inputs(t *testing.T) {
	e := newTestEmbedder(t, Config{Count: func(s string) int { return len(s) }})
	// 3000 one-token inputs: 2048 + 952.
	var inputs []Input
	for i := range 3000 {
		inputs = append(inputs, Input{ID: int64(i), Text: "x"})
	}
	batches, _ := e.Split(inputs)
	if len(batches) != 2 || len(batches[0].Inputs) != MaxInputsPerRequest || len(batches[1].Inputs) != 952 {
		t.Fatalf("got %d batches (%d, ...), want 2048 + 952", len(batches), len(batches[0].Inputs))
	}
	// 100 inputs of 8,000 tokens: 36 fit in the 290,000 packed (300,000 less the margin).
	inputs = inputs[:0]
	for i := range 100 {
		inputs = append(inputs, Input{ID: int64(i), Text: strings.Repeat("x", 8000)})
	}
	batches, _ = e.Split(inputs)
	for i, b := range batches {
		if b.Tokens > RequestTokenLimit {
			t.Fatalf("batch %d has %d tokens", i, b.Tokens)
		}
	}
	if len(batches[0].Inputs) != 36 {
		t.Fatalf("first batch has %d inputs, want 36 (36*8000 <= 290000 < 37*8000)", len(batches[0].Inputs))
	}
}

func TestTooManyTokensWithRealTokenizer(t *testing.T) {
	e := newTestEmbedder(t, Config{}) // default Count: cl100k_base
	long := strings.Repeat("hello ", 8200)
	batches, rejected := e.Split([]Input{{ID: 1, Text: "short text"}, {ID: 2, Text: long}, {ID: 3, Text: "another"}})
	if len(rejected) != 1 || rejected[0].ID != 2 || rejected[0].Reason != ReasonTooManyTokens {
		t.Fatalf("rejected = %+v, want ID 2 as %s", rejected, ReasonTooManyTokens)
	}
	if !strings.Contains(rejected[0].Detail, fmt.Sprint(MaxInputTokens)) {
		t.Errorf("detail %q does not name the limit", rejected[0].Detail)
	}
	if len(batches) != 1 || len(batches[0].Inputs) != 2 {
		t.Fatalf("batches = %+v, want the two short inputs in one batch", batches)
	}
	// "short text" is 2 cl100k tokens and "another" 1.
	if batches[0].Tokens != 3 {
		t.Errorf("Tokens = %d, want 3", batches[0].Tokens)
	}
}

func TestOversizedInputForTinyBudgetGoesAlone(t *testing.T) {
	// A 50-token budget per minute cannot hold an 80-token input; it must still be sent, alone.
	e := newTestEmbedder(t, Config{TokensPerMinute: 50, Count: words})
	batches, rejected := e.Split([]Input{
		{ID: 1, Text: strings.Repeat("w ", 20)},
		{ID: 2, Text: strings.Repeat("w ", 80)},
		{ID: 3, Text: strings.Repeat("w ", 20)},
	})
	if len(rejected) != 0 || len(batches) != 3 {
		t.Fatalf("got %d batches, %d rejected; want 3 batches", len(batches), len(rejected))
	}
	if batches[1].Tokens != 80 || len(batches[1].Inputs) != 1 {
		t.Fatalf("middle batch = %+v, want the 80-token input alone", batches[1])
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no key":         {Model: "m"},
		"no model":       {APIKey: "k"},
		"too many":       {APIKey: "k", Model: "m", MaxInputsPerRequest: 2049},
		"negative rate":  {APIKey: "k", Model: "m", TokensPerMinute: -1},
		"negative dims":  {APIKey: "k", Model: "m", Dimensions: -3},
		"negative count": {APIKey: "k", Model: "m", MaxInputsPerRequest: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// With ProbeFirst the first batch holds one input, so a bad key shows after one tiny request.
func TestProbeFirstSendsOneInputFirst(t *testing.T) {
	e, err := New(Config{APIKey: "k", Model: "m", ProbeFirst: true, Count: func(s string) int { return len(s) }})
	if err != nil {
		t.Fatal(err)
	}
	var inputs []Input
	for i := 0; i < 10; i++ {
		inputs = append(inputs, Input{ID: int64(i), Text: "hello"})
	}
	batches, _ := e.Split(inputs)
	if len(batches) != 2 || len(batches[0].Inputs) != 1 || len(batches[1].Inputs) != 9 {
		t.Fatalf("batches %v", batches)
	}
	e2, _ := New(Config{APIKey: "k", Model: "m", Count: func(s string) int { return len(s) }})
	if b, _ := e2.Split(inputs); len(b) != 1 {
		t.Fatalf("without ProbeFirst: %d batches", len(b))
	}
}

// A known dimension bounds the vectors one response decodes: 3 MiB is 512 vectors at 1,536
// dimensions, so a worker's memory does not scale with 2,048-input batches.
func TestSplitBoundsBatchVectorBytes(t *testing.T) {
	inputs := make([]Input, 1200)
	for i := range inputs {
		inputs[i] = Input{ID: int64(i), Text: "x"}
	}
	one := func(string) int { return 1 }
	for name, tc := range map[string]struct {
		cfg  Config
		want []int
	}{
		"default at 1536":    {Config{Count: one, ExpectedDimension: 1536}, []int{512, 512, 176}},
		"default at 256":     {Config{Count: one, Dimensions: 256}, []int{1200}},
		"explicit 1 MiB":     {Config{Count: one, ExpectedDimension: 1024, MaxBatchVectorBytes: 1 << 20}, []int{256, 256, 256, 256, 176}},
		"unbounded":          {Config{Count: one, ExpectedDimension: 1536, MaxBatchVectorBytes: -1}, []int{1200}},
		"input cap is lower": {Config{Count: one, ExpectedDimension: 1536, MaxInputsPerRequest: 500}, []int{500, 500, 200}},
	} {
		t.Run(name, func(t *testing.T) {
			batches, _ := newTestEmbedder(t, tc.cfg).Split(inputs)
			var got []int
			for _, b := range batches {
				got = append(got, len(b.Inputs))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("batch sizes %v, want %v", got, tc.want)
			}
		})
	}
}

// Batches (and the bucket's burst) are about three seconds of the token budget, so workers
// sharing a budget cannot overshoot the server's sliding minute by a full batch each, but large
// enough that the request budget does not bind.
func TestMaxBatchTokensFollowsBudgets(t *testing.T) {
	for _, tc := range []struct {
		tpm, rpm float64
		want     int
	}{
		{1_000_000, 75, 50_000},       // 3 s of budget
		{1_000_000, 10, 200_000},      // 2 × TPM/RPM: the request budget must not bind
		{10_000_000, 0, 290_000},      // the API's cap per request, less the margin
		{60_000, 300, MaxInputTokens}, // never smaller than the largest input
		{100, 0, 100},                 // a budget below one input: batches of the budget
	} {
		e := newTestEmbedder(t, Config{TokensPerMinute: tc.tpm, RequestsPerMinute: tc.rpm, Count: words})
		if got := e.MaxBatchTokens(); got != tc.want {
			t.Errorf("TPM %v RPM %v: max batch %d tokens, want %d", tc.tpm, tc.rpm, got, tc.want)
		}
	}
}
