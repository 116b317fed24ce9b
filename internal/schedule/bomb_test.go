package schedule

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

// The template bombs: each {{printf "%0999999d" 0}} writes a megabyte, and range
// multiplies it; the unbounded renderer built a 3 MB key from the first and was OOM-killed by a
// larger range.
var bombs = []string{
	`{{range 3}}{{printf "%0999999d" 0}}{{end}}`,
	`{{range 1000}}{{printf "%0999999d" 0}}{{end}}`,
	`{{range 100000000}}{{range 1000}}{{printf "%0999999d" 0}}{{end}}{{end}}`,
}

func bombData() Data {
	at := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	return Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "bomb"}
}

// Refusing a bomb allocates about what parsing it does: nothing of its output. (A memory
// figure, not a time: counted by the runtime, the same on every machine.)
func TestBombsAllocateNothingOfTheirOutput(t *testing.T) {
	d := bombData()
	for _, b := range bombs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 100
		for range n {
			if _, err := Render(FieldKey, b, MaxKeyLength, d); err == nil || !strings.Contains(err.Error(), "{{range}} is not allowed") {
				t.Fatalf("%s: %v", b, err)
			}
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 64<<10 {
			t.Errorf("%s: %d bytes allocated per refusal, want under 64 KiB (its output is at least 3 MB)", b, per)
		}
	}
}

// vmRSS is this process's resident set in KiB, from /proc.
func vmRSS(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	b.Skip("no VmRSS")
	return 0
}

// BenchmarkRenderBomb renders the largest bomb through the bounded renderer b.N times and
// reports how the process's RSS and live heap changed (docs/benchmarks.md):
//
//	go test ./internal/schedule -run '^$' -bench RenderBomb -benchmem -benchtime 100000x
//
// after 1,000 renders to warm up (the runtime's own arenas).
func BenchmarkRenderBomb(b *testing.B) {
	d := bombData()
	for range 1000 {
		_, _ = Render(FieldKey, bombs[len(bombs)-1], MaxKeyLength, d)
	}
	runtime.GC()
	debug.FreeOSMemory()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rss := vmRSS(b)
	b.ResetTimer()
	for range b.N {
		if _, err := Render(FieldKey, bombs[len(bombs)-1], MaxKeyLength, d); err == nil {
			b.Fatal("rendered")
		}
	}
	b.StopTimer()
	runtime.GC()
	debug.FreeOSMemory()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(vmRSS(b)-rss), "rss-growth-KiB")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/1024, "heap-growth-KiB")
	b.ReportMetric(float64(vmRSS(b)), "rss-KiB")
}

// BenchmarkUnboundedBomb is the same with plain text/template as before, for the smallest
// bomb (3 MB per render), for comparison:
//
//	go test ./internal/schedule -run '^$' -bench UnboundedBomb -benchmem -benchtime 20x
func BenchmarkUnboundedBomb(b *testing.B) {
	d := bombData()
	runtime.GC()
	rss := vmRSS(b)
	var max int64
	b.ResetTimer()
	for range b.N {
		tpl := template.Must(template.New("k").Parse(bombs[0]))
		var sb strings.Builder
		if err := tpl.Execute(&sb, d); err != nil {
			b.Fatal(err)
		}
		max = int64(sb.Len())
	}
	b.StopTimer()
	b.ReportMetric(float64(max)/1024, "output-KiB")
	b.ReportMetric(float64(vmRSS(b)-rss), "rss-growth-KiB")
}

// nestedFormat is a template of depth levels of Format whose layout is the output of the
// next: in December "1" formats as "12", which formats as "1231", so each level doubles.
func nestedFormat(depth int, level string) string {
	tpl := `"1"`
	for range depth {
		tpl = strings.Replace(level, "L", tpl, 1)
	}
	return "{{ " + tpl + " }}"
}

// A layout computed by another Format grows twice per level without writing a byte, so neither
// the output cap nor the time bound sees it: 24 levels were 16 MB and the 1024 characters of a
// key fit 50 (petabytes). Such a layout is refused before the template runs.
func TestNestedFormatBombRefused(t *testing.T) {
	at := time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)
	d := Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "bomb"}
	for _, level := range []string{`(date L .ScheduledTime)`, `(.Window.End.Format L)`, `(L | .ScheduledTime.Format)`, `(.ScheduledTime | date L)`} {
		for _, depth := range []int{1, 24} {
			tpl := nestedFormat(depth, level)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Render(FieldKey, tpl, MaxKeyLength, d)
			runtime.ReadMemStats(&after)
			if depth > 1 && (err == nil || !strings.Contains(err.Error(), "must be a quoted string") && !strings.Contains(err.Error(), "needs its layout")) {
				t.Errorf("%s: %v, want the layout refused", tpl, err)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
				t.Errorf("%s: %d bytes allocated, want under 1 MiB", tpl, got)
			}
		}
		// As long as a key may be: refused without running.
		tpl := nestedFormat(1, level)
		for depth := 1; len(nestedFormat(depth+1, level)) <= MaxKeyLength; depth++ {
			tpl = nestedFormat(depth+1, level)
		}
		if _, err := Check(FieldKey, tpl, MaxKeyLength); err == nil {
			t.Errorf("%s: accepted", tpl)
		}
	}
	// A quoted layout still renders, piped or not.
	for _, tpl := range []string{`{{ .ScheduledTime | date "1" }}`, `{{ date "1" .ScheduledTime }}`, `{{ .ScheduledTime.Format "1" }}`, `{{ (.ScheduledTime).Format "1" }}`} {
		if out, err := Render(FieldKey, tpl, MaxKeyLength, d); err != nil || out != "12" {
			t.Errorf("%s: %q, %v; want 12", tpl, out, err)
		}
	}
}
