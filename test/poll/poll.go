// Package poll holds the tests' bounded negative check: that something does not happen.
package poll

import (
	"testing"
	"time"
)

// Holds checks that cond holds for the whole of d, polling every interval; it fails the test with
// cond's message the first time it does not. A fixed sleep followed by one look can miss a change
// that came and went, or passes only because the look came too early.
func Holds(t testing.TB, what string, d, interval time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ok, msg := cond(); !ok {
			t.Fatalf("%s no longer holds: %s", what, msg)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(interval)
	}
}
