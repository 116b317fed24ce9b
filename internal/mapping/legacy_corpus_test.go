package mapping

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

type legacyCase struct {
	In    string  `json:"in"`
	Out   *string `json:"out"`
	Error string  `json:"error"`
}

// loadLegacyCorpus reads testdata/legacy_sanitize.jsonl.gz: the old service's sanitize_text run
// by Python 3.11 over 24,000 generated texts (hack/legacytext/gen.py corpus; see
// testdata/README.md).
func loadLegacyCorpus(t testing.TB) []legacyCase {
	t.Helper()
	path := "testdata/legacy_sanitize.jsonl.gz"
	if p := os.Getenv("LEGACY_CORPUS"); p != "" {
		path = p // a held-out corpus: hack/legacytext/gen.py --seed N --out PATH corpus
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(gz)
	sc.Buffer(nil, 1<<20)
	var head struct {
		Python string `json:"python"`
		Texts  int    `json:"texts"`
	}
	var cases []legacyCase
	for sc.Scan() {
		if head.Texts == 0 {
			if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var c legacyCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(cases) != head.Texts || len(cases) < 20000 {
		t.Fatalf("corpus holds %d texts, its head says %d (want at least 20,000)", len(cases), head.Texts)
	}
	return cases
}

// TestLegacyMatchesOldService: sanitize legacy gives, for every text of the corpus, exactly what
// the old service's sanitize_text gave (or fails where it raised).
func TestLegacyMatchesOldService(t *testing.T) {
	cases := loadLegacyCorpus(t)
	s, err := NewSanitizer(SanitizeLegacy)
	if err != nil {
		t.Fatal(err)
	}
	diffs, raised := 0, 0
	for i, c := range cases {
		got, err := s.Sanitize(c.In)
		switch {
		case c.Out == nil:
			raised++
			if !errors.Is(err, ErrLegacyUnescape) {
				diffs++
				if diffs <= 10 {
					t.Errorf("text %d %q: the old function raised %s; got %q, %v", i, trim(c.In), c.Error, trim(got), err)
				}
			}
		case err != nil || got != *c.Out:
			diffs++
			if diffs <= 10 {
				t.Errorf("text %d\n  in   %q\n  got  %q (%v)\n  want %q", i, trim(c.In), trim(got), err, trim(*c.Out))
			}
		}
	}
	if diffs > 0 {
		t.Errorf("%d of %d texts differ from the old service's sanitize_text", diffs, len(cases))
	}
	if raised == 0 {
		t.Error("the corpus has no text the old function raised on: the error path is not covered")
	}
	t.Logf("%d texts, %d equal (%d where the old function raised)", len(cases), len(cases)-diffs, raised)
}

func trim(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// BenchmarkLegacyCorpus sanitizes the whole corpus once per iteration.
func BenchmarkLegacyCorpus(b *testing.B) {
	cases := loadLegacyCorpus(b)
	s, _ := NewSanitizer(SanitizeLegacy)
	var n int64
	for _, c := range cases {
		n += int64(len(c.In))
	}
	b.SetBytes(n)
	b.ResetTimer()
	for range b.N {
		for _, c := range cases {
			_, _ = s.Sanitize(c.In)
		}
	}
}

// BenchmarkLegacyHostile sanitizes 1 MiB texts built against each step of sanitize legacy: tags
// never closed, references, long fractions and runs of near-dates. Every step is linear, so each
// takes about as long per byte as ordinary text; a step that backtracked like Python's re (whose
// `<[^>]+>` is quadratic on a run of '<') would show here by orders of magnitude.
func BenchmarkLegacyHostile(b *testing.B) {
	const n = 1 << 20
	for _, c := range []struct{ name, text string }{
		{"unclosed-tags", strings.Repeat("<", n)},
		{"empty-tags", strings.Repeat("<>", n/2)},
		{"ampersands", strings.Repeat("&", n)},
		{"long-names", strings.Repeat("&abcdefghijklmnopqrstuvwxyzabcdef", n/33)},
		{"hex-reference", "&#x" + strings.Repeat("f", n)},
		{"fraction", "2024-01-10T12:00:00." + strings.Repeat("1", n) + "x"},
		{"near-dates", strings.Repeat("2024-01-10-", n/11)},
		{"slash-runs", strings.Repeat("11/11/", n/6)},
		{"arabic-digits", strings.Repeat("\u0661-", n/3)},
		{"invalid-datetimes", strings.Repeat("2024-13-10T12:00:00 ", n/20)},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, err := NewSanitizer(SanitizeLegacy)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(c.text)))
			for range b.N {
				if _, err := s.Sanitize(c.text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
