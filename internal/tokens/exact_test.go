package tokens

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// Count is checked against tiktoken-go, the implementation it replaces, on generated text, on the
// CSV generator's rows and under fuzzing.

var loadReference = sync.OnceValues(func() (*tiktoken.Tiktoken, error) {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	return tiktoken.GetEncoding(EncodingName)
})

func reference(tb testing.TB) *tiktoken.Tiktoken {
	tb.Helper()
	enc, err := loadReference()
	if err != nil {
		tb.Fatal(err)
	}
	return enc
}

func checkCount(tb testing.TB, enc *tiktoken.Tiktoken, text string) bool {
	tb.Helper()
	want := len(enc.EncodeOrdinary(text))
	if got := Count(text); got != want {
		tb.Errorf("Count(%q) = %d, tiktoken-go gives %d", text, got, want)
		return false
	}
	return true
}

// fragments are the kinds of text the pre-tokenizer treats differently.
var fragments = []string{
	// words, HTML and entities
	"hello", "world", "Hello", "WORLD", "HTTP", "iPhone", "premium", "wireless", "the", "a", "I",
	"<p>", "</p>", "<br/>", "<br />", "<b>", "</b>", "<ul><li>", "</li></ul>", `<div class="x">`,
	`<a href="https://example.com/a?b=1&c=2">`, "&amp;", "&nbsp;", "&#39;", "&lt;", "&gt;", "&quot;",
	// dates and numbers
	"2025-01-02", "12/31/2024", "2025-03-04T05:06:07Z", "05:06", "1", "12", "123", "1234", "12345",
	"123456", "1234567", "12345678901234567890", "1,234.56", "€49.99", "$5", "3.14159", "-42", "+7",
	"0x1F", "10%", "1st", "2nd", "v1.2.3",
	// contractions in all cases, and apostrophes that are not contractions
	"'s", "'S", "'t", "'T", "'re", "'Re", "'RE", "'rE", "'ve", "'VE", "'Ve", "'m", "'M", "'ll", "'LL",
	"'lL", "'Ll", "'d", "'D", "don't", "DON'T", "I'M", "they'RE", "we'll", "WE'LL", "it's", "IT'S",
	"'x", "'", "''", "'''", "'r", "'l", "'rx", "'lx", "'v", "' s", "'1", "rock'n'roll", "'é", "'s's",
	"'ſ", "'K", "’s", "`s", "'\n", " 's", "  'll",
	// whitespace
	" ", "  ", "   ", "    ", "\t", "\t\t", "\r\n", "\n", "\n\n", "\r", "\r\r\n", " \n ", "\n \n",
	"\v", "\f", "\u0085", " \t ", "\t \n", "\n\t", "\r\n\r\n", " \r\n", "\n ",
	// other Unicode spaces and invisible characters
	"\u00a0", "\u2003", "\u3000", "\u2028", "\u2029", "\u202f", "\u1680", "\u205f", "\u200b",
	"\u00a0\u00a0", "\u3000\u3000", "\ufeff", "\u180e", "\u00ad",
	// scripts
	"東京タワー", "北京欢迎你", "한국어", "日本語のテキスト", "Привет", "мир", "Ελληνικά", "עברית",
	"مرحبا بالعالم", "العربية", "हिन्दी", "ไทย", "café", "Zürich", "naïve", "ÅNGSTRÖM", "Straße",
	"ǅungla", "ß", "ª", "º", "µ",
	// emoji and marks
	"🎧", "👍🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "☃", "©", "™", "e\u0301", "a\u0308\u0304", "\u0301",
	"\u0301\u0301", "x\u20dd", "\U0001F600\U0001F600",
	// numbers in other scripts
	"\u0660\u0661\u0662\u0663", "१२३४", "①②", "½", "²³", "Ⅻ", "௰", "𝟙𝟚𝟛𝟜", "٣٤٥٦٧",
	// punctuation runs
	".", ",", "...", "!!!", "?!", "---", "—", "–", "«»", "(", ")", "[]{}", "**", "==>", "//", "\\",
	"#", "@", "|", "~~~", "\"", "\"\"", ";", ":", "::", "(!)", "...\n", "!\r\n", "?\n\n", "_",
	"__init__", "<|endoftext|>", "<|fim_prefix|>",
	// bytes that are not UTF-8
	"\xff", "\xc3", "a\x80b", "\xed\xa0\x80", "\xe6\x9d", "\xf0\x9f\x8e", "\xc0\xaf", "\x00",
}

var separators = []string{"", "", " ", " ", " ", "  ", "\n", "\t", "\r\n", "\n\n", "\u00a0", "\u3000", ", ", ". "}

// genText mixes fragments with separators, sometimes with leading or trailing whitespace.
func genText(rng *rand.Rand) string {
	var b strings.Builder
	if rng.IntN(5) == 0 {
		b.WriteString(separators[rng.IntN(len(separators))] + " ")
	}
	for n := 1 + rng.IntN(30); n > 0; n-- {
		b.WriteString(fragments[rng.IntN(len(fragments))])
		b.WriteString(separators[rng.IntN(len(separators))])
	}
	if rng.IntN(4) == 0 {
		b.WriteString([]string{" ", "  ", "\n", " \n", "\t", "\u00a0", "\u3000 "}[rng.IntN(7)])
	}
	return b.String()
}

// longTexts exercise pieces longer than smallPiece, which mergeLarge encodes.
func longTexts(rng *rand.Rand) []string {
	texts := []string{
		strings.Repeat("a", 1000), strings.Repeat("ab", 300), strings.Repeat(" ", 500),
		strings.Repeat(" ", 500) + "x", strings.Repeat("-", 200), strings.Repeat("=", 1000) + "\n",
		strings.Repeat("東京タワー北京欢迎你", 40), strings.Repeat("🎧", 100), strings.Repeat("\u0301", 60),
		strings.Repeat("\n", 300), strings.Repeat("\r\n \t", 80), strings.Repeat("\u00a0", 70) + "x",
		strings.Repeat("Ä", 300), strings.Repeat("\xff", 100), strings.Repeat("!?", 120),
		"pneumonoultramicroscopicsilicovolcanoconiosis" + "antidisestablishmentarianism",
	}
	for range 40 {
		alphabet := []rune("abcdefghijklmnopqrstuvwxyzéüßñ東京語")
		alphabet = alphabet[:1+rng.IntN(len(alphabet))]
		var b strings.Builder
		for n := 30 + rng.IntN(600); n > 0; n-- {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		texts = append(texts, b.String())
	}
	return texts
}

func TestCountMatchesTiktokenGo(t *testing.T) {
	enc := reference(t)
	rng := rand.New(rand.NewPCG(7, 11))
	texts := append([]string{}, fragments...)
	for _, f := range fragments { // each fragment alone and in the contexts that matter most
		texts = append(texts, " "+f, f+" ", "x"+f+"x", "  "+f+"\n", f+f, "1"+f+"2", "'"+f)
	}
	for range 600 {
		texts = append(texts, genText(rng))
	}
	texts = append(texts, longTexts(rng)...)
	bad := 0
	for _, text := range texts {
		if !checkCount(t, enc, text) {
			if bad++; bad > 20 {
				t.Fatal("too many mismatches")
			}
		}
	}
	t.Logf("%d texts match", len(texts))
}

// Every rune in the contexts that decide its class (letter, number, space, other) and around a
// contraction. The full sweep takes a few seconds; the default run covers the BMP below U+3400
// and a sample above.
func TestCountEveryRuneMatchesTiktokenGo(t *testing.T) {
	enc := reference(t)
	all := os.Getenv("TOKENS_ALL_RUNES") == "1"
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			checkCount(t, enc, b.String())
			b.Reset()
		}
	}
	for r := rune(0); r <= unicode.MaxRune && !t.Failed(); r++ {
		if !all && r >= 0x3400 && r%61 != 0 {
			continue
		}
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		c := string(r)
		b.WriteString("a" + c + "b " + c + "c 1" + c + "2 " + c + c + " '" + c + " \n" + c + "\n" + c + "  " + c + "\t")
		if b.Len() > 4000 {
			flush()
		}
	}
	flush()
}

func TestCountCSVRowsMatchTiktokenGo(t *testing.T) {
	enc := reference(t)
	var buf bytes.Buffer
	if _, err := csvgen.Write(&buf, csvgen.Options{Rows: 2000, Seed: 42, MalformedEvery: 97}); err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(&buf)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2001 || recs[0][1] != "formatted_text" {
		t.Fatalf("%d records, header %v", len(recs), recs[0])
	}
	var tokens int
	for _, rec := range recs[1:] {
		if len(rec) < 2 {
			continue
		}
		if !checkCount(t, enc, rec[1]) {
			t.FailNow()
		}
		tokens += Count(rec[1])
	}
	t.Logf("2000 rows, %d tokens, all match", tokens)
}

func FuzzCount(f *testing.F) {
	for _, s := range fragments {
		f.Add(s)
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for range 50 {
		f.Add(genText(rng))
	}
	enc := reference(f)
	f.Fuzz(func(t *testing.T, text string) {
		checkCount(t, enc, text)
	})
}

func TestCountDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	if err := Load(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, text := range []string{genText(rng), strings.Repeat("東京タワー北京欢迎你", 40), "caf\xe9 \xff\xfe ok"} {
		Count(text) // fill the pools
		if n := testing.AllocsPerRun(100, func() { Count(text) }); n != 0 {
			t.Errorf("Count(%.20q…) allocates %v times", text, n)
		}
	}
}

func TestNoTiktokenGoInProduction(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/pkoukk/tiktoken-go" || dep == "github.com/dlclark/regexp2" {
			t.Errorf("package tokens depends on %s", dep)
		}
	}
}

// TestLoadRetainedHeap measures, in a fresh process, the heap the loaded table keeps.
func TestLoadRetainedHeap(t *testing.T) {
	if os.Getenv("TOKENS_HEAP_CHILD") == "1" {
		before := liveHeap()
		if err := Load(); err != nil {
			fmt.Println("load:", err)
			os.Exit(3)
		}
		fmt.Println(liveHeap() - before)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLoadRetainedHeap$")
	cmd.Env = append(os.Environ(), "TOKENS_HEAP_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("child said %q", out)
	}
	t.Logf("loaded table retains %.2f MB of heap", float64(n)/1e6)
	if n > 3<<20 {
		t.Errorf("loaded table retains %d bytes of heap, want ≤ 3 MiB", n)
	}
}

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// benchTexts are the formatted_text cells of a generated CSV: the embedder's real input.
func benchTexts(b *testing.B) ([]string, int64) {
	var buf bytes.Buffer
	if _, err := csvgen.Write(&buf, csvgen.Options{Rows: 300, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		b.Fatal(err)
	}
	var texts []string
	var n int64
	for _, rec := range recs[1:] {
		texts = append(texts, rec[1])
		n += int64(len(rec[1]))
	}
	return texts, n
}

func BenchmarkCount(b *testing.B) {
	if err := Load(); err != nil {
		b.Fatal(err)
	}
	texts, n := benchTexts(b)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range texts {
			Count(s)
		}
	}
}

func BenchmarkCountTiktokenGo(b *testing.B) {
	enc := reference(b)
	texts, n := benchTexts(b)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range texts {
			_ = len(enc.EncodeOrdinary(s))
		}
	}
}
