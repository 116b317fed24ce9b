package openai

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestWindowAgainstBruteForce drives the window with random arrivals and checks every decision,
// the peaks and the waits against a direct count over the accepted history.
func TestWindowAgainstBruteForce(t *testing.T) {
	const size = time.Second
	for seed := uint64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		w := window{size: size, rpm: 1 + rng.IntN(8), tpm: 10 + rng.IntN(40)}
		var accepted []event
		load := func(now time.Duration) (n, tok int) {
			for _, e := range accepted {
				if e.at > now-size && e.at <= now {
					n++
					tok += e.tokens
				}
			}
			return n, tok
		}
		peakReq, peakTok := 0, 0
		now := time.Duration(0)
		for i := 0; i < 1500; i++ {
			now += time.Duration(rng.IntN(int(size / 10)))
			if rng.IntN(10) == 0 {
				now += size // let the window drain now and then
			}
			tok := 1 + rng.IntN(12)
			n, used := load(now)
			fits := n+1 <= w.rpm && used+tok <= w.tpm
			v := w.admit(now, tok)
			if v.ok != fits {
				t.Fatalf("seed %d step %d: admit=%v, brute force says %v (n=%d used=%d tok=%d rpm=%d tpm=%d)", seed, i, v.ok, fits, n, used, tok, w.rpm, w.tpm)
			}
			if v.ok {
				accepted = append(accepted, event{at: now, tokens: tok})
				n, used = load(now)
				peakReq, peakTok = max(peakReq, n), max(peakTok, used)
				continue
			}
			if v.tooLarge {
				if tok <= w.tpm {
					t.Fatalf("seed %d step %d: tooLarge for %d tokens with tpm %d", seed, i, tok, w.tpm)
				}
				continue
			}
			// The wait is exact: one nanosecond earlier it still would not fit, at the wait it would.
			at := now + v.wait
			n1, u1 := load(at - 1)
			n2, u2 := load(at)
			if v.wait <= 0 || (n1+1 <= w.rpm && u1+tok <= w.tpm) || n2+1 > w.rpm || u2+tok > w.tpm {
				t.Fatalf("seed %d step %d: wait %v is not the first moment the request fits", seed, i, v.wait)
			}
		}
		if w.peakRequests != peakReq || w.peakTokens != peakTok {
			t.Fatalf("seed %d: peaks %d/%d, brute force %d/%d", seed, w.peakRequests, w.peakTokens, peakReq, peakTok)
		}
		if peakReq > w.rpm || peakTok > w.tpm {
			t.Fatalf("seed %d: peaks %d/%d above limits %d/%d", seed, peakReq, peakTok, w.rpm, w.tpm)
		}
	}
}

// TestResetWindow: after a reset the peak measures only what follows, and the limit counts only
// what follows.
func TestResetWindow(t *testing.T) {
	s, err := newServer(Options{TPM: 10, CountTokens: func(string) int { return 4 }})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Duration(0)
	for range 2 {
		if v := s.win.admit(now, 4); !v.ok {
			t.Fatalf("refused %+v", v)
		}
	}
	if v := s.win.admit(now, 4); v.ok {
		t.Fatal("a third request of 4 tokens fit a limit of 10")
	}
	s.ResetWindow()
	if p := s.Peak(); p.Tokens != 0 || p.Requests != 0 {
		t.Fatalf("peak after reset %+v", p)
	}
	if v := s.win.admit(now, 4); !v.ok {
		t.Fatalf("refused after reset: %+v", v)
	}
	if p := s.Peak(); p.Tokens != 4 || p.Requests != 1 {
		t.Fatalf("peak %+v, want 4 tokens in 1 request", p)
	}
}
