package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// withRateLeases restarts the stack's manager with the lease service on, and back without it
// when the test ends.
func withRateLeases(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	keyFile := filepath.Join(st.WorkDir, "rate-lease-key")
	if err := os.WriteFile(keyFile, []byte("e2e-rate-lease-key-0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"--rate-lease-bind-address=" + addr, "--rate-lease-url=http://" + addr + ratelease.Path,
		"--rate-lease-key-file=" + keyFile, "--rate-lease-renew=2s"}
	before := slices.Clone(st.ManagerArgs)
	if err := st.StopManager(); err != nil {
		t.Fatal(err)
	}
	st.ManagerArgs = append(st.ManagerArgs, args...)
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.StopManager(); err != nil {
			t.Error(err)
		}
		st.ManagerArgs = before
		if err := st.StartManager(context.Background()); err != nil {
			t.Error(err)
		}
	})
}

// TestRateLeasesHoldTheKeysBudget: one ingestion whose request budget binds; mid-run its
// parallelism goes from 2 to 6 and the manager is killed and comes back. Without leases the new
// chunk Jobs' frozen shares add up to more than the budget (E2E_NO_LEASES=1 runs it so, and it
// fails); with them the key's busiest minute at the fake stays within the budget, nothing is
// refused, and every vector is written once.
func TestRateLeasesHoldTheKeysBudget(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	if os.Getenv("E2E_NO_LEASES") == "" {
		withRateLeases(t)
	}
	// The request budget binds (the stack's fake counts a token per 8 bytes, the embedder exact
	// cl100k tokens, so tokens would compare different units): 1,200 rows in requests of 20
	// are ~70 requests, about 1.7 budget-minutes at 40 per minute, so the busiest window is a
	// full minute of budget-bound traffic.
	const budget = 40
	stats, key := scenario(t, "leases", csvgen.Options{Rows: 1200, Seed: 26, MinText: 60, MaxText: 120})
	// The fake allows twice the budget: an overshoot shows in its peak instead of as 429s.
	st.OpenAI.SetLimits(2*budget, 0)
	st.OpenAI.ResetWindow()
	t.Cleanup(func() { st.OpenAI.SetLimits(0, 0) })
	before := st.OpenAI.Stats()

	obj := st.LegacyIngestion("leases", "q239", key)
	obj.Spec.Embedding.RequestsPerMinute = budget
	obj.Spec.Embedding.TokensPerMinute = 1_000_000_000
	obj.Spec.Embedding.MaxInputsPerRequest = 20
	obj.Spec.Chunking.RowsPerChunk = 100
	obj.Spec.Chunking.Parallelism = 2
	apply(t, obj)
	t.Logf("applied at %s", time.Now().Format("15:04:05"))
	t.Cleanup(func() { // the pods' lease logs explain a failure (runs before the ingestion's deletion)
		if !t.Failed() {
			return
		}
		for _, p := range pods(t, obj) {
			for _, line := range strings.Split(st.Runner.Logs(p.Namespace, p.Name), "\n") {
				if strings.Contains(line, "rate lease") {
					t.Logf("%s: %.300s", p.Name, line)
				}
			}
		}
	})

	waitFor(t, "the first chunk done", 2*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Chunks.Succeeded >= 1, cur.Status.Progress
	})
	t.Logf("first chunk done at %s", time.Now().Format("15:04:05"))
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 6 })
	waitFor(t, "6 chunks running", time.Minute, func() (bool, string) {
		n := 0
		for _, name := range st.Runner.Running() {
			if strings.HasPrefix(name, "leases/q239-chunk-") {
				n++
			}
		}
		return n >= 5, fmt.Sprint(st.Runner.Running())
	})
	// Once the leader has heard from the new pods and they have renewed a few times (so each
	// holds a sixth, and a sixth as its fallback), the manager dies: the pods keep their leases
	// while it is away, then fall back to those shares.
	if os.Getenv("E2E_NO_LEASES") == "" {
		waitFor(t, "the leader counting the new pods", time.Minute, func() (bool, string) {
			m, err := st.Metrics()
			if err != nil {
				return false, err.Error()
			}
			for _, line := range strings.Split(m, "\n") {
				var n float64
				if strings.HasPrefix(line, "vectordb_rate_budget_holders{") {
					_, _ = fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &n)
					return n >= 5, line
				}
			}
			return false, "no holders series"
		})
		time.Sleep(3 * 2 * time.Second) // three renewals
	}
	t.Logf("killing the manager at %s", time.Now().Format("15:04:05"))
	if err := st.KillManager(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the manager is down for a renewal or two
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}

	final := waitTerminal(t, obj, 5*time.Minute)
	for _, j := range chunkJobs(t, obj) {
		if j.Status.StartTime != nil && j.Status.CompletionTime != nil {
			t.Logf("%s: %s → %s (%s)", j.Name, j.Status.StartTime.Format("15:04:05"), j.Status.CompletionTime.Format("15:04:05"),
				j.Status.CompletionTime.Sub(j.Status.StartTime.Time))
		}
	}
	checkExactVectors(t, final, stats, false)
	peak, after := st.OpenAI.Peak(), st.OpenAI.Stats()
	t.Logf("busiest minute: %d requests, %d tokens; budget %d RPM; %d requests, %d refused",
		peak.Requests, peak.Tokens, budget, after.Requests-before.Requests, after.RateLimited-before.RateLimited)
	// Each pod's request bucket holds one request (burst 1), which it may send on top of its
	// rate at a window's edge: up to one per pod running in the window. Without leases the new
	// Jobs' frozen shares add a third of the budget and more on top.
	if limit := budget + 6; peak.Requests > limit {
		t.Errorf("the key's busiest minute had %d requests, above the budget of %d (+ one per pod: %d)", peak.Requests, budget, limit)
	}
	if n := after.RateLimited - before.RateLimited; n != 0 {
		t.Errorf("%d requests refused", n)
	}
}
