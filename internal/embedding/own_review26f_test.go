package embedding

import (
	"context"
	"testing"
	"time"

	"golang.org/x/time/rate"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// TestRenewedTinyGrantSends: a lease is renewed every few seconds, and each renewal sets the
// grant again (SetRates), the same or a little different as holders come and go. A grant below
// one request (RPM < 1) or one input per minute must still send one request at a time into an
// empty window once the pod has held grants for a whole window; only a newcomer, whose limit still
// counts the time before its first grant as zero, waits. (When settled meant "the latest grant was
// set a window ago", a renewed pod never settled, and such a pod never sent at all.)
func TestRenewedTinyGrantSends(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	const renew = 5 * time.Second
	for _, c := range []struct {
		name     string
		rpm, tpm func(i int) float64 // the grant set at the i-th renewal
		n        int                 // the request's tokens
	}{
		{"below one request a minute, renewed unchanged", func(int) float64 { return 0.5 }, func(int) float64 { return 100_000 }, 100},
		{"below one input a minute, renewed unchanged", func(int) float64 { return 60 }, func(int) float64 { return 100 }, 500},
		{"below one input a minute, changing at each renewal", func(int) float64 { return 60 }, func(i int) float64 { return float64(90 + i%3*5) }, 500},
		{"requests only, below one a minute", func(i int) float64 { return 0.3 + float64(i%2)*0.1 }, func(int) float64 { return 0 }, 100},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w ownWindow
			i := 0
			at := func(d time.Duration) {
				for ; time.Duration(i)*renew <= d; i++ {
					w.setGrant(t0.Add(time.Duration(i)*renew), c.rpm(i), c.tpm(i))
				}
			}
			// A newcomer: not before its grants have held a whole window.
			at(ownWindowSize - time.Second)
			now := t0.Add(ownWindowSize - time.Second)
			rpm, tpm, lone := w.limits(now)
			if s, _ := w.admit(now, c.n, rpm, tpm, lone); s != nil {
				t.Fatalf("a newcomer's request of %d tokens went into its empty window above its limits %g/%g", c.n, rpm, tpm)
			}
			// Renewed for two windows: one request at a time.
			end := 2*ownWindowSize + 3*time.Second
			at(end)
			now = t0.Add(end)
			rpm, tpm, lone = w.limits(now)
			if s, _ := w.admit(now, c.n, rpm, tpm, lone); s == nil {
				t.Fatalf("after %s of renewals the pod's request of %d tokens does not go into its empty window (limits %g/%g, lone %v): it never sends", end, c.n, rpm, tpm, lone)
			}
			// ...and only one.
			rpm, tpm, lone = w.limits(now.Add(time.Second))
			if s, _ := w.admit(now.Add(time.Second), c.n, rpm, tpm, lone); s != nil {
				t.Fatal("a second request above the limits went into the window")
			}
		})
	}
}

// TestRenewedPodBelowOneInputSends: the same through an Embedder: a pod that has held a grant
// below one input a minute for a whole window, renewed a moment ago (SetRates again, as every
// renewal does), sends its input into its empty window instead of waiting for ever.
func TestRenewedPodBelowOneInputSends(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL()})
	batches, rejected := e.Split(texts(1))
	if len(batches) != 1 || len(rejected) != 0 {
		t.Fatalf("split into %d batches, %d rejected; want one batch", len(batches), len(rejected))
	}
	grant := float64(batches[0].Tokens) / 2 // half the input a minute
	leasedAt(e, grant)                      // held for two windows
	e.SetRates(0, grant, 0)                 // renewed now
	e.tokens.SetLimit(rate.Inf)             // only the own window paces it here
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	outs, refused, err := e.EmbedBatch(ctx, batches[0])
	if err != nil || len(outs) != 1 || len(refused) != 0 {
		t.Fatalf("a renewed pod granted half an input a minute: %d outputs, %d refused, %v; want its input sent into its empty window", len(outs), len(refused), err)
	}
}

// TestLoneWindowTakesAPartFirst: a settled pod's empty window takes a request above its limit
// (lone) only when nothing smaller will do: a batch larger than the limit (packed for a higher
// grant before it was lowered) sends the inputs that fit the limit, or its first input alone
// when not even that fits, instead of the whole batch above the limit into the provider's minute.
func TestLoneWindowTakesAPartFirst(t *testing.T) {
	batch := func(counts ...int) Batch {
		b := Batch{counts: counts}
		for i, c := range counts {
			b.Inputs = append(b.Inputs, Input{ID: int64(i), Text: "x"})
			b.Tokens += c
		}
		return b
	}
	for _, c := range []struct {
		name   string
		b      Batch
		limit  float64
		k      int // inputs admitted
		tokens int // tokens in the window after
	}{
		{"half fits the limit", batch(400, 400, 400, 400), 1000, 2, 800},
		{"not a quarter fits: the first input alone", batch(600, 600, 600, 600), 500, 1, 600},
		{"all fit: all", batch(200, 200), 1000, 2, 400},
		{"one input above the limit: alone", batch(5000), 1000, 1, 5000},
		{"counts unknown: the whole batch", Batch{Inputs: make([]Input, 4), Tokens: 2400}, 500, 4, 2400},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: "http://127.0.0.1:1"})
			leasedAt(e, c.limit) // settled
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s, k, err := e.waitOwnFit(ctx, c.b)
			if err != nil || s == nil {
				t.Fatalf("nothing admitted into the settled pod's empty window: %v", err)
			}
			if k != c.k || s.tokens != c.tokens {
				t.Fatalf("admitted %d inputs, %d tokens; want %d, %d (limit %g)", k, s.tokens, c.k, c.tokens, c.limit)
			}
		})
	}
}

// TestPartsOfConcurrentBatches: two batches in flight at once, the own window with room for part
// of one: each input is embedded once and comes back in its batch's order, the window holds each
// batch's tokens once (parts add up to the batch), and no in-flight slot is left taken.
func TestPartsOfConcurrentBatches(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), MaxInputsPerRequest: 8, MaxInFlight: 2})
	in := texts(16)
	batches, rejected := e.Split(in)
	if len(batches) != 2 || len(rejected) != 0 {
		t.Fatalf("split into %d batches, %d rejected; want two", len(batches), len(rejected))
	}
	head := 0
	for _, c := range batches[0].counts[:4] {
		head += c
	}
	const limit = 10_000
	leasedAt(e, limit)
	filler, _ := e.own.admit(time.Now(), limit-head, 0, 0, true) // room for four inputs of one batch
	type result struct {
		outs []Output
		err  error
	}
	done := make(chan result, 2)
	for _, b := range batches {
		go func() {
			o, _, err := e.EmbedBatch(context.Background(), b)
			done <- result{o, err}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Accepted < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no part was sent while the window had room for four inputs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := srv.Stats(); st.Inputs == 0 || st.Inputs >= 8 {
		t.Fatalf("the first request embedded %d inputs, want a part of a batch", st.Inputs)
	}
	e.own.refund(filler)
	seen := map[int64]int{}
	for range batches {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatal(r.err)
			}
			for i := 1; i < len(r.outs); i++ {
				if r.outs[i].ID <= r.outs[i-1].ID {
					t.Fatalf("outputs out of the batch's order: %d after %d", r.outs[i].ID, r.outs[i-1].ID)
				}
			}
			for _, o := range r.outs {
				seen[o.ID]++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a batch did not finish once the window had room")
		}
	}
	for _, x := range in {
		if seen[x.ID] != 1 {
			t.Fatalf("input %d came back %d times, want once", x.ID, seen[x.ID])
		}
	}
	if st := srv.Stats(); st.Inputs != 16 {
		t.Fatalf("the fake embedded %d inputs, want 16", st.Inputs)
	}
	e.own.mu.Lock()
	toks := 0
	for _, s := range e.own.events {
		if !s.refunded {
			toks += s.tokens
		}
	}
	e.own.mu.Unlock()
	if want := batches[0].Tokens + batches[1].Tokens; toks != want {
		t.Fatalf("the own window holds %d tokens, want the two batches' %d once", toks, want)
	}
	if n := len(e.inFlight); n != 0 {
		t.Fatalf("%d in-flight slots still taken", n)
	}
}
