package embedding

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// TestOwnWindowFitting: how many of a batch's first inputs fit the room the own window has, when
// that is not all of them and at least a quarter of the batch's tokens.
func TestOwnWindowFitting(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	batch := func(counts ...int) Batch {
		b := Batch{counts: counts}
		for i, c := range counts {
			b.Inputs = append(b.Inputs, Input{ID: int64(i), Text: "x"})
			b.Tokens += c
		}
		return b
	}
	for _, c := range []struct {
		name     string
		sent     []int // tokens sent at t0, in the window
		refunded bool  // ...and refused (429): they count for nothing
		b        Batch
		rpm, tpm float64
		k, n     int
	}{
		{"half fits", []int{500}, false, batch(100, 100, 100, 100, 100, 100), 0, 800, 3, 300},
		{"all fit: not a part", []int{200}, false, batch(100, 100, 100), 0, 800, 0, 0},
		{"less than a quarter fits", []int{700}, false, batch(100, 100, 100, 100, 100, 100), 0, 800, 0, 0},
		{"exactly a quarter fits", []int{700}, false, batch(100, 100, 100, 100), 0, 800, 1, 100},
		{"nothing fits", []int{800}, false, batch(100, 100), 0, 800, 0, 0},
		{"a refused send leaves its room", []int{500}, true, batch(100, 100, 100, 100, 100, 100, 100, 100, 100, 100), 0, 800, 8, 800},
		{"no room for another request", []int{100, 100}, false, batch(100, 100, 100, 100, 100, 100, 100, 100), 2, 800, 0, 0},
		{"room for another request", []int{100, 100}, false, batch(100, 100, 100, 100, 100, 100, 100, 100), 3, 800, 6, 600},
		{"one input: cannot be cut", []int{500}, false, batch(400), 0, 800, 0, 0},
		{"counts unknown: cannot be cut", []int{500}, false, Batch{Inputs: make([]Input, 4), Tokens: 400}, 0, 800, 0, 0},
		{"tokens unlimited", []int{500}, false, batch(100, 100), 0, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w ownWindow
			for _, n := range c.sent {
				s, _ := w.admit(t0, n, 0, 0, true)
				if c.refunded {
					w.refund(s)
				}
			}
			k, n := w.fitting(t0.Add(time.Second), c.b, c.rpm, c.tpm)
			if k != c.k || n != c.n {
				t.Fatalf("fitting: %d inputs, %d tokens; want %d, %d", k, n, c.k, c.n)
			}
		})
	}
}

// leasedAt makes e leased at a settled token grant of tpm a minute (its own window's limit is
// tpm, grown into), with unlimited buckets, so only the own window paces it.
func leasedAt(e *Embedder, tpm float64) {
	e.SetRates(0, tpm, 0)
	e.own.mu.Lock()
	for i := range e.own.tpm.grants {
		e.own.tpm.grants[i].at = e.own.tpm.grants[i].at.Add(-2 * ownWindowSize)
	}
	for i := range e.own.rpm.grants {
		e.own.rpm.grants[i].at = e.own.rpm.grants[i].at.Add(-2 * ownWindowSize)
	}
	e.own.mu.Unlock()
	e.tokens.SetLimit(rate.Inf)
}

// TestBatchGoesInPartsToFitTheOwnWindow: under a lease, a batch the own window has room for only
// in part sends the inputs that fit at once and the rest when room frees up, instead of leaving
// the room unused until all of it fits; every input is embedded once. When a later part is
// refused for an input, the parts already sent are kept: only the rest is bisected.
func TestBatchGoesInPartsToFitTheOwnWindow(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		name := map[bool]string{false: "all embedded", true: "a later part refused"}[refuse]
		t.Run(name, func(t *testing.T) {
			srv := startFake(t, fakeopenai.Options{})
			if refuse {
				srv.RefuseMarker("REFUSE-ME", "")
			}
			e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 100})
			in := texts(8)
			if refuse {
				in[6].Text += " REFUSE-ME"
			}
			batches, rejected := e.Split(in)
			if len(batches) != 1 || len(rejected) != 0 {
				t.Fatalf("split into %d batches, %d rejected; want one batch", len(batches), len(rejected))
			}
			b := batches[0]
			head := 0
			for _, c := range b.counts[:4] {
				head += c
			}
			const limit = 10_000
			leasedAt(e, limit)
			// The window holds what leaves room for the first four inputs only.
			filler, _ := e.own.admit(time.Now(), limit-head, 0, 0, true)

			type result struct {
				outs    []Output
				refused []InputError
				err     error
			}
			done := make(chan result, 1)
			go func() {
				o, r, err := e.EmbedBatch(context.Background(), b)
				done <- result{o, r, err}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for srv.Stats().Accepted < 1 {
				if time.Now().After(deadline) {
					t.Fatal("no part was sent while the window had room for four inputs")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if st := srv.Stats(); st.Inputs != 4 {
				t.Fatalf("the first request embedded %d inputs, want the 4 that fit", st.Inputs)
			}
			select {
			case r := <-done:
				t.Fatalf("EmbedBatch returned before the window had room for the rest: %+v", r)
			case <-time.After(500 * time.Millisecond):
			}
			e.own.refund(filler) // room for the rest
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the rest was not sent once the window had room")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			wantOut := 8
			if refuse {
				wantOut = 7
				if len(r.refused) != 1 || r.refused[0].ID != in[6].ID || !strings.Contains(r.refused[0].Detail, "") {
					t.Fatalf("refused %+v, want input %d alone", r.refused, in[6].ID)
				}
			}
			got := map[int64]bool{}
			for _, o := range r.outs {
				got[o.ID] = true
			}
			if len(r.outs) != wantOut || len(got) != wantOut {
				t.Fatalf("%d outputs (%d distinct), want %d", len(r.outs), len(got), wantOut)
			}
			// Each input embedded once: the first part's four were not sent again when a later
			// part was refused and bisected.
			if st := srv.Stats(); st.Inputs != int64(wantOut) {
				t.Fatalf("the fake embedded %d inputs, want %d (each once)", st.Inputs, wantOut)
			}
		})
	}
}

// TestTakeDoesNotChargeAPaidRest: the rest of a batch sent in parts was drawn from the token
// bucket with the batch; taking it again draws only a request, so a pod does not pay its tokens
// twice.
func TestTakeDoesNotChargeAPaidRest(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), TokensPerMinute: 600})
	e.SetRates(0, 60, 0) // a token a second, the bucket empty at the first grant
	e.own.mu.Lock()
	e.own.tpm.grants[0].at = e.own.tpm.grants[0].at.Add(-2 * ownWindowSize)
	e.own.rpm.grants[0].at = e.own.rpm.grants[0].at.Add(-2 * ownWindowSize)
	e.own.mu.Unlock()
	b := Batch{Inputs: []Input{{ID: 1, Text: "a"}}, Tokens: 30, counts: []int{30}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, _, _, err := e.take(ctx, b, true); err != nil {
		t.Fatalf("taking a paid rest waited for its tokens: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if _, _, _, err := e.take(ctx2, Batch{Inputs: []Input{{ID: 2, Text: "b"}}, Tokens: 30, counts: []int{30}}, false); err == nil {
		t.Fatal("an unpaid batch of 30 tokens went at once from an empty bucket filling at a token a second")
	}
}
