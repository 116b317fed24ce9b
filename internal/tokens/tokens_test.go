package tokens

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Token counts below are from tiktoken's own documentation and the OpenAI cookbook
// ("How to count tokens with tiktoken"), or follow from cl100k_base's pre-tokenizer rules.
func TestCountKnownStrings(t *testing.T) {
	if err := Load(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		text string
		want int
		why  string
	}{
		{"", 0, "nothing to encode"},
		{"hello world", 2, "tiktoken README: [15339, 1917]"},
		{"tiktoken is great!", 6, "OpenAI cookbook: [83, 1609, 5963, 374, 2294, 0]"},
		// cl100k splits digit runs into groups of at most 3 (\p{N}{1,3}) and every 1-3 digit group
		// is one token.
		{"1234567", 3, "digit groups 123|456|7"},
	}
	for _, c := range cases {
		if got := Count(c.text); got != c.want {
			t.Errorf("Count(%q) = %d, want %d (%s)", c.text, got, c.want, c.why)
		}
	}
}

func TestCountMatchesEncoding(t *testing.T) {
	enc := reference(t)
	for _, text := range []string{
		"hello world",
		"Premium wireless headphones, 30-hour battery; ships from Ohio.\nRéduction de 20 % — 東京",
		"emoji 🎧🎧 and tabs\t\tand   spaces",
	} {
		ids := enc.EncodeOrdinary(text)
		if got := enc.Decode(ids); got != text {
			t.Fatalf("round trip of %q gave %q", text, got)
		}
		if Count(text) != len(ids) {
			t.Errorf("Count(%q) = %d, encoder gives %d ids", text, Count(text), len(ids))
		}
	}
}

// Special-token text in user data must be counted as text: the API does not reject it and a
// tokenizer that did would panic on input.
func TestCountSpecialTokenTextIsOrdinary(t *testing.T) {
	n := Count("<|endoftext|>")
	if n <= 1 {
		t.Fatalf("Count(<|endoftext|>) = %d; counted as one special token, want ordinary text", n)
	}
}

func TestCountConcurrent(t *testing.T) {
	texts := []string{"hello world", "tiktoken is great!", "1234567"}
	want := []int{2, 6, 3}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				k := i % len(texts)
				if got := Count(texts[k]); got != want[k] {
					errs <- fmt.Sprintf("Count(%q) = %d, want %d", texts[k], got, want[k])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestOfflineLoad loads the tokenizer in a fresh process with no HOME, an unwritable cache dir and
// a proxy that refuses every connection: loading must not touch the network or the disk.
func TestOfflineLoad(t *testing.T) {
	if os.Getenv("TOKENS_OFFLINE_CHILD") == "1" {
		if err := Load(); err != nil {
			fmt.Println("load:", err)
			os.Exit(3)
		}
		if n := Count("hello world"); n != 2 {
			fmt.Println("count:", n)
			os.Exit(4)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOfflineLoad$")
	cmd.Env = []string{
		"TOKENS_OFFLINE_CHILD=1",
		"PATH=" + os.Getenv("PATH"),
		"TIKTOKEN_CACHE_DIR=/dev/null/no-cache",
		"DATA_GYM_CACHE_DIR=/dev/null/no-cache",
		"TMPDIR=/dev/null/no-tmp",
		"HTTP_PROXY=http://127.0.0.1:1",
		"HTTPS_PROXY=http://127.0.0.1:1",
		"NO_PROXY=",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("offline child failed: %v\n%s", err, out)
	}
}

func TestBatchCostUSD(t *testing.T) {
	cases := []struct {
		model       string
		tokens      int64
		cost, saved string
	}{
		{"text-embedding-3-small", 1_000_000, "0.01", "0.01"},
		{"text-embedding-3-large", 1_000_000, "0.065", "0.065"},
		{"text-embedding-ada-002", 1_000_000, "0.05", "0.05"},
		{"text-embedding-3-small", 15_000_000, "0.15", "0.15"},
		{"text-embedding-3-large", 1, "0.000000065", "0.000000065"},
		{"text-embedding-3-small", 0, "0.00", "0.00"},
	}
	for _, c := range cases {
		if got := BatchCostUSD(c.model, c.tokens); got != c.cost {
			t.Errorf("BatchCostUSD(%s, %d) = %s, want %s", c.model, c.tokens, got, c.cost)
		}
		if got := BatchSavingUSD(c.model, c.tokens); got != c.saved {
			t.Errorf("BatchSavingUSD(%s, %d) = %s, want %s", c.model, c.tokens, got, c.saved)
		}
	}
}

func TestCostUSD(t *testing.T) {
	cases := []struct {
		model  string
		tokens int64
		want   string
	}{
		{"text-embedding-3-small", 15_000_000, "0.30"},
		{"text-embedding-3-small", 1_000_000, "0.02"},
		{"text-embedding-3-large", 1_000_000, "0.13"},
		{"text-embedding-ada-002", 2_500_000, "0.25"},
		{"text-embedding-3-large", 1_234_567, "0.16049371"},
		{"text-embedding-3-small", 1000, "0.00002"},
		{"text-embedding-3-small", 0, "0.00"},
		{"text-embedding-3-small", 7_000_000_000, "140.00"},
		{"some-local-model", 1_000_000, "0.02"}, // priced as 3-small
	}
	for _, c := range cases {
		if got := CostUSD(c.model, c.tokens); got != c.want {
			t.Errorf("CostUSD(%s, %d) = %s, want %s", c.model, c.tokens, got, c.want)
		}
	}
	if PriceKnown("some-local-model") || !PriceKnown("text-embedding-3-large") {
		t.Error("PriceKnown wrong")
	}
}

func TestMinDuration(t *testing.T) {
	cases := []struct {
		tokens, requests int64
		rpm, tpm         int
		want             time.Duration
	}{
		{15_000_000, 100, 300, 1_000_000, 15 * time.Minute},       // tokens bind
		{1_000_000, 3000, 300, 1_000_000, 10 * time.Minute},       // requests bind
		{500_000, 100, 0, 1_000_000, 30 * time.Second},            // no request budget
		{500_000, 150, 300, 0, 30 * time.Second},                  // no token budget
		{0, 0, 300, 1_000_000, 0},                                 // nothing to do
		{1, 0, 0, 60, time.Second},                                // sub-minute
		{100_000_000_000, 0, 0, 1_000_000, 100_000 * time.Minute}, // no overflow
	}
	for _, c := range cases {
		if got := MinDuration(c.tokens, c.requests, c.rpm, c.tpm); got != c.want {
			t.Errorf("MinDuration(%d, %d, %d, %d) = %v, want %v", c.tokens, c.requests, c.rpm, c.tpm, got, c.want)
		}
	}
}

func TestMinRequests(t *testing.T) {
	cases := []struct {
		rows, tokens int64
		maxInputs    int
		want         int64
	}{
		{0, 0, 2048, 0},
		{100_000, 15_000_000, 2048, 50}, // tokens bind: 15M / 300k
		{100_000, 1_000_000, 2048, 49},  // inputs bind: ceil(100000/2048)
		{1, 10, 2048, 1},
		{10, 10, 0, 1},
	}
	for _, c := range cases {
		if got := MinRequests(c.rows, c.tokens, c.maxInputs); got != c.want {
			t.Errorf("MinRequests(%d, %d, %d) = %d, want %d", c.rows, c.tokens, c.maxInputs, got, c.want)
		}
	}
}

func TestEstimatorExactWhenFewTexts(t *testing.T) {
	texts := []string{"hello world", "tiktoken is great!", "1234567", ""}
	var e Estimator
	var want int64
	for _, s := range texts {
		e.Add([]byte(s))
		want += int64(Count(s))
	}
	if !e.Exact() || e.Tokens() != want || e.Texts() != int64(len(texts)) {
		t.Fatalf("exact=%v tokens=%d texts=%d, want exact, %d, %d", e.Exact(), e.Tokens(), e.Texts(), want, len(texts))
	}
}

func TestEstimatorSamplesCloseToExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("wireless headphones noise cancellation battery ships Ohio premium " +
		"leather wallet 2025 discount €49.99 café Zürich 東京 refurbished warranty")
	e := Estimator{MinExact: 50, SampleEvery: 8}
	var exact int64
	for i := 0; i < 2000; i++ {
		n := 5 + rng.IntN(60)
		var b strings.Builder
		for j := 0; j < n; j++ {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(' ')
		}
		s := b.String()
		exact += int64(Count(s))
		e.Add([]byte(s))
	}
	if e.Exact() {
		t.Fatal("estimator counted every text; sampling never started")
	}
	got := e.Tokens()
	if diff := float64(got-exact) / float64(exact); diff > 0.03 || diff < -0.03 {
		t.Fatalf("estimate %d vs exact %d: off by %.1f%%", got, exact, 100*diff)
	}
}

func BenchmarkEstimator(b *testing.B) {
	text := []byte(strings.Repeat("Premium wireless headphones with noise cancellation, 30-hour battery life; ships from Ohio. ", 6))
	if err := Load(); err != nil {
		b.Fatal(err)
	}
	var e Estimator
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		e.Add(text)
	}
}
