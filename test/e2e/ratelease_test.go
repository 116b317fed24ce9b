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

// TestRateLeasesHoldTheKeysBudget: one ingestion whose token budget binds; mid-run its
// parallelism goes from 2 to 6 and then the manager is killed and comes back. Without leases
// the new chunk Jobs' frozen shares would add up to more than the budget; with them the key's
// busiest minute at the fake stays within the budget, nothing is refused, and every vector is
// written once.
func TestRateLeasesHoldTheKeysBudget(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	if os.Getenv("E2E_NO_LEASES") == "" {
		withRateLeases(t)
	}
	// 2,400 short rows of ~12 tokens (the stack's token counter: a token per 8 bytes): about 1.5
	// budget-minutes, so the busiest window is a full minute of budget-bound traffic.
	const budget = 20_000
	stats, key := scenario(t, "leases", csvgen.Options{Rows: 2400, Seed: 26, MinText: 60, MaxText: 120})
	// The fake allows twice the budget: an overshoot shows in its peak instead of as 429s.
	st.OpenAI.SetLimits(0, 2*budget)
	st.OpenAI.ResetWindow()
	t.Cleanup(func() { st.OpenAI.SetLimits(0, 0) })
	before := st.OpenAI.Stats()

	obj := st.LegacyIngestion("leases", "q239", key)
	obj.Spec.Embedding.RequestsPerMinute = 6000
	obj.Spec.Embedding.TokensPerMinute = budget
	obj.Spec.Embedding.MaxInputsPerRequest = 20
	obj.Spec.Chunking.RowsPerChunk = 200
	obj.Spec.Chunking.Parallelism = 2
	apply(t, obj)
	t.Logf("applied at %s", time.Now().Format("15:04:05"))

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
	// The pods keep their leases while the manager is away, then fall back to static shares.
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
	for _, p := range pods(t, obj) {
		for _, line := range strings.Split(st.Runner.Logs(p.Namespace, p.Name), "\n") {
			if strings.Contains(line, "rate lease") {
				t.Logf("%s: %.300s", p.Name, line)
			}
		}
	}
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 2400 {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	peak, after := st.OpenAI.Peak(), st.OpenAI.Stats()
	t.Logf("busiest minute: %d tokens, %d requests; budget %d TPM; %d requests, %d refused",
		peak.Tokens, peak.Requests, budget, after.Requests-before.Requests, after.RateLimited-before.RateLimited)
	if peak.Tokens > budget {
		t.Errorf("the key's busiest minute had %d tokens, above the budget of %d", peak.Tokens, budget)
	}
	if n := after.RateLimited - before.RateLimited; n != 0 {
		t.Errorf("%d requests refused", n)
	}
}
