package localrun

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// NewBar shows a progress bar on a terminal: rows done of the total, rows/s and the time left.
func NewBar(w io.Writer) Progress { return &bar{w: w} }

type bar struct {
	w   io.Writer
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func (b *bar) Start(total int64, chunks int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%d chunks", chunks)),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("rows"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }),
	)
}

func (b *bar) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Add64(n)
	}
}

func (b *bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Finish()
	}
}

// NewLines prints a plain progress line every interval (and at the end), for logs and pipes
// where a redrawn bar would be noise.
func NewLines(w io.Writer, every time.Duration) Progress {
	return &lines{w: w, every: every, now: time.Now}
}

type lines struct {
	w     io.Writer
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex
	total  int64
	done   int64
	chunks int
	start  time.Time
	last   time.Time
}

func (l *lines) Start(total int64, chunks int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total, l.chunks, l.start, l.last = total, chunks, l.now(), l.now()
	fmt.Fprintf(l.w, "progress: 0/%d rows in %d chunks\n", total, chunks)
}

func (l *lines) Add(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done += n
	if now := l.now(); now.Sub(l.last) >= l.every {
		l.last = now
		l.print(now)
	}
}

func (l *lines) Finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.print(l.now())
}

func (l *lines) print(now time.Time) {
	elapsed := now.Sub(l.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(l.done) / elapsed.Seconds()
	}
	pct := 100.0
	if l.total > 0 {
		pct = 100 * float64(l.done) / float64(l.total)
	}
	eta := "unknown"
	if rate > 0 && l.done <= l.total {
		eta = time.Duration(float64(l.total-l.done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Fprintf(l.w, "progress: %d/%d rows (%.1f%%), %.0f rows/s, elapsed %s, eta %s\n",
		l.done, l.total, pct, rate, elapsed.Round(time.Second), eta)
}
