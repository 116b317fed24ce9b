package embedding

import (
	"testing"
	"time"
)

// TestOwnWindowAtTheFirstGrant: at the instant of a pod's first grant the window's limit has
// grown from zero to zero; that is the most limited it can be, not "no limit" (admit's 0), so a
// second request at that instant waits like at any instant after it.
func TestOwnWindowAtTheFirstGrant(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, time.Nanosecond, time.Second} {
		var w ownWindow
		w.setGrant(t0, 60, 60_000)
		now := t0.Add(at)
		rpm, tpm := w.limits(now)
		if rpm <= 0 || tpm <= 0 {
			t.Errorf("%v after the first grant: limits %g/%g mean unlimited", at, rpm, tpm)
		}
		if s, _ := w.admit(now, 100, rpm, tpm); s == nil {
			t.Fatalf("%v after the first grant: the first request must fit an empty window", at)
		}
		if s, _ := w.admit(now, 100, rpm, tpm); s != nil {
			t.Errorf("%v after the first grant: a second request admitted into a window still growing from zero", at)
		}
	}
}
