package poll

import (
	"fmt"
	"testing"
	"time"
)

// recorder is a testing.TB that records a fatal failure instead of ending the goroutine.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(r)
}

func run(cond func() (bool, string), d time.Duration) (failed string) {
	r := &recorder{TB: &testing.T{}}
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
		failed = r.failed
	}()
	Holds(r, "cond", d, time.Millisecond, cond)
	return ""
}

func TestHolds(t *testing.T) {
	calls := 0
	if f := run(func() (bool, string) { calls++; return true, "" }, 20*time.Millisecond); f != "" || calls < 2 {
		t.Fatalf("always true: failed %q after %d looks, want no failure and several looks", f, calls)
	}
	calls = 0
	if f := run(func() (bool, string) { calls++; return calls < 3, fmt.Sprint("look ", calls) }, time.Second); f != "cond no longer holds: look 3" {
		t.Fatalf("false at the third look: failed %q", f)
	}
}
