package embedding

import (
	"testing"
	"time"
)

// TestOwnWindowAtTheFirstGrant: at the instant of a pod's first grant the window's limit has
// grown from zero to zero; that is the most limited it can be, not "no limit" (admit's 0), so a
// request waits until the limit has grown to it, even into the empty window.
func TestOwnWindowAtTheFirstGrant(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, time.Nanosecond, time.Second} {
		var w ownWindow
		w.setGrant(t0, 60, 60_000)
		now := t0.Add(at)
		rpm, tpm, lone := w.limits(now)
		if rpm <= 0 || tpm <= 0 {
			t.Errorf("%v after the first grant: limits %g/%g mean unlimited", at, rpm, tpm)
		}
		if s, _ := w.admit(now, 100, rpm, tpm, lone); s != nil {
			t.Errorf("%v after the first grant: a request admitted into a window still growing from zero", at)
		}
	}
}
