package tokens

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCountUpToIsExactUnderTheLimit checks CountUpTo against Count on both sides of the limit.
func TestCountUpToIsExactUnderTheLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	texts := longTexts(rng)
	for range 300 {
		texts = append(texts, genText(rng))
	}
	for _, text := range texts {
		want := Count(text)
		for _, limit := range []int{0, 1, want - 1, want, want + 1, 8191} {
			if limit < 0 {
				continue
			}
			got := CountUpTo(text, limit)
			switch {
			case want <= limit && got != want:
				t.Fatalf("CountUpTo(%.40q, %d) = %d, want the exact %d", text, limit, got, want)
			case want > limit && got <= limit:
				t.Fatalf("CountUpTo(%.40q, %d) = %d, but the text has %d tokens", text, limit, got, want)
			}
		}
	}
}

// heapGrowth is the bytes allocated while fn runs.
func heapGrowth(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestCountUpToBoundsMemory is the OOM guard: a 12 MiB CJK field (one pre-token) used to take a
// 400 MiB heap to count. Below the byte bound it is tokenized only up to the limit.
func TestCountUpToBoundsMemory(t *testing.T) {
	if err := Load(); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("北京欢迎你東京タワー", 12<<20/30)
	var n int
	grew := heapGrowth(func() { n = CountUpTo(huge, MaxTokensPerInput) })
	if n <= MaxTokensPerInput {
		t.Fatalf("CountUpTo(12 MiB) = %d, want > %d", n, MaxTokensPerInput)
	}
	if grew > 1<<20 {
		t.Errorf("counting a 12 MiB text allocated %d bytes, want none (the byte bound decides)", grew)
	}
	// Just under the byte bound: a single pre-token that must be tokenized, but only once.
	near := huge[:runeStartAtOrBefore(huge, MaxTokensPerInput*mustTable().maxHigh)]
	grew = heapGrowth(func() { n = CountUpTo(near, MaxTokensPerInput) })
	if n <= MaxTokensPerInput {
		t.Fatalf("CountUpTo(%d bytes of CJK) = %d, want > %d", len(near), n, MaxTokensPerInput)
	}
	if limit := uint64(16 << 20); grew > limit {
		t.Errorf("counting %d bytes allocated %d bytes, want ≤ %d", len(near), grew, limit)
	}
	t.Logf("12 MiB: decided by length; %d bytes: %d tokens counted with %.1f MiB allocated", len(near), n, float64(grew)/(1<<20))
}

func TestTruncate(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	texts := longTexts(rng)
	for range 200 {
		texts = append(texts, genText(rng))
	}
	texts = append(texts, strings.Repeat("北京欢迎你東京タワー", 5000), strings.Repeat("word ", 20000), strings.Repeat("🎧", 3000))
	for _, text := range texts {
		text = replaceInvalid(text)
		full := Count(text)
		for _, limit := range []int{1, 7, full / 2, full, 8191} {
			if limit <= 0 {
				continue
			}
			got := Truncate(text, limit)
			n := Count(got)
			switch {
			case !strings.HasPrefix(text, got):
				t.Fatalf("Truncate(%.30q, %d) is not a prefix", text, limit)
			case !utf8.ValidString(got):
				t.Fatalf("Truncate(%.30q, %d) = %.30q splits a character", text, limit, got)
			case n > limit:
				t.Fatalf("Truncate(%.30q, %d) has %d tokens", text, limit, n)
			case full <= limit && got != text:
				t.Fatalf("Truncate(%.30q, %d) cut a text of %d tokens", text, limit, full)
			case full > limit && n < limit-3:
				// Cutting inside a character can drop the token that ends in its middle.
				t.Fatalf("Truncate(%.30q, %d) kept only %d tokens of %d", text, limit, n, full)
			}
		}
	}
}

func TestTruncateHugeTextTokenizesOnlyThePrefix(t *testing.T) {
	huge := strings.Repeat("北京欢迎你東京タワー", 12<<20/30)
	var got string
	grew := heapGrowth(func() { got = Truncate(huge, MaxTokensPerInput) })
	if n := Count(got); n > MaxTokensPerInput || n < MaxTokensPerInput-3 {
		t.Fatalf("Truncate(12 MiB) has %d tokens, want just under %d", n, MaxTokensPerInput)
	}
	if limit := uint64(16 << 20); grew > limit {
		t.Errorf("truncating 12 MiB allocated %d bytes, want ≤ %d", grew, limit)
	}
}

// TestEstimatorChargesAnOutlierOneInput: a 12 MiB text is billed at most one input's tokens
// (it is dead-lettered or truncated) and counting it allocates nothing.
func TestEstimatorChargesAnOutlierOneInput(t *testing.T) {
	var e Estimator
	huge := []byte(strings.Repeat("北京欢迎你東京タワー", 12<<20/30))
	e.Add([]byte("hello world"))
	grew := heapGrowth(func() { e.Add(huge) })
	if want := int64(Count("hello world") + MaxTokensPerInput); e.Tokens() != want {
		t.Fatalf("Tokens() = %d, want %d", e.Tokens(), want)
	}
	if grew > 1<<20 {
		t.Errorf("adding a 12 MiB text allocated %d bytes", grew)
	}
}
