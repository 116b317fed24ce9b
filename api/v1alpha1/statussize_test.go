package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ranges"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// etcdLimit is the largest object etcd stores by default (--max-request-bytes).
const etcdLimit = 1536 << 10

// statusStrings renders a status's two range strings for an assignment of every chunk.
func statusStrings(state func(i int) byte, chunks int) (completed, failed string) {
	var c, f ranges.Set
	for i := range chunks {
		switch state(i) {
		case 'c':
			c.Add(i)
		case 'f':
			f.Add(i)
		}
	}
	return c.String(), f.String()
}

// Whatever the outcome of each chunk of the largest plan, the two range strings together stay
// within 6 bytes a chunk: an index below 100,000 has at most 5 digits, a single "i," costs at
// most 6 bytes for one chunk and "i-j," at most 12 for two or more.
func TestRangeStringsBoundedForTheLargestPlan(t *testing.T) {
	const chunks = worker.MaxChunks
	bound := 6 * chunks
	patterns := map[string]func(i int) byte{
		"every other chunk failed":        func(i int) byte { return "cf"[i%2] },
		"pairs completed, one failed":     func(i int) byte { return "ccf"[i%3] },
		"all completed":                   func(int) byte { return 'c' },
		"every other chunk failed or not": func(i int) byte { return "cfc_"[i%4] },
	}
	r := rand.New(rand.NewSource(7))
	for n := range 20 {
		seed := r.Int63()
		patterns[fmt.Sprintf("random %d", n)] = func(i int) byte { return "cf_"[mix(uint64(seed)+uint64(i))%3] }
	}
	longest := 0
	for name, p := range patterns {
		c, f := statusStrings(p, chunks)
		if n := len(c) + len(f); n > bound {
			t.Errorf("%s: %d bytes of ranges, over %d", name, n, bound)
		} else {
			longest = max(longest, n)
		}
	}
	t.Logf("longest range strings for %d chunks: %d bytes (bound %d)", chunks, longest, bound)
}

// The worst status of the largest plan (50,000 chunks, every other one failed, the 50 failed
// chunk details and every condition at their longest) is stored by the real API server and stays
// far below etcd's object limit.
func TestWorstCaseStatusFitsInEtcd(t *testing.T) {
	ctx := context.Background()
	u := loadSample(t, legacy)
	u.SetName("worst-status")
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	obj := &v1alpha1.CsvIngestion{}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), obj); err != nil {
		t.Fatal(err)
	}
	const chunks = worker.MaxChunks
	completed, failed := statusStrings(func(i int) byte { return "cf"[i%2] }, chunks)
	long := strings.Repeat("x", 1000) + "…" // what the controller keeps of a message
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	st := v1alpha1.CsvIngestionStatus{
		Phase: v1alpha1.PhasePartiallyCompleted, TaskID: strings.Repeat("t", 128), ObservedGeneration: 1,
		Source: &v1alpha1.SourceStatus{ETag: `"` + strings.Repeat("e", 64) + `"`, Bucket: "csv-storage", Key: strings.Repeat("k", 1024), SizeBytes: 1 << 40, TotalRows: 50_000_000_000},
		Plan: &v1alpha1.PlanFingerprint{ETag: `"` + strings.Repeat("e", 64) + `"`, Rows: 50_000_000_000, RowsPerChunk: 1_000_000, Chunks: chunks,
			OffsetsSHA256: strings.Repeat("0", 64)},
		Estimate:        &v1alpha1.Estimate{Tokens: 1 << 40, CostUSD: "123456.78", MinDuration: "8760h0m0s", Requests: 1 << 30},
		Chunks:          v1alpha1.ChunkCounts{Total: chunks, Succeeded: chunks / 2, Failed: chunks / 2},
		Progress:        fmt.Sprintf("%d/%d", chunks, chunks),
		CompletedChunks: completed, FailedChunkIndexes: failed,
		Records:         v1alpha1.RecordCounts{Total: 50_000_000_000, Processed: 25_000_000_000, Failed: 25_000_000_000},
		Usage:           &v1alpha1.Usage{VectorsUpserted: 1 << 40, Tokens: 1 << 50, Requests: 1 << 40, Retries: 1 << 30, RateLimited: 1 << 30},
		TrackingVersion: 1 << 40,
		StartTime:       &now, CompletionTime: &now, LastProgressTime: &now,
		Message: long,
	}
	for i := range 50 {
		idx := 2*i + 1
		st.FailedChunks = append(st.FailedChunks, v1alpha1.FailedChunk{Index: int32(idx),
			Rows: fmt.Sprintf("%d-%d", idx*1_000_000, idx*1_000_000+999_999), Reason: "PermanentErrorWithALongReason", Message: long})
	}
	for i := range 16 {
		st.Conditions = append(st.Conditions, metav1.Condition{Type: fmt.Sprintf("Condition%02d", i), Status: metav1.ConditionTrue,
			Reason: "SomeReason", Message: long, LastTransitionTime: now, ObservedGeneration: 1})
	}
	obj.Status = st
	if err := cluster.Client.Status().Update(ctx, obj); err != nil {
		t.Fatalf("the API server refused the worst-case status: %v", err)
	}
	back := &v1alpha1.CsvIngestion{}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), back); err != nil {
		t.Fatal(err)
	}
	if back.Status.CompletedChunks != completed || back.Status.FailedChunkIndexes != failed || len(back.Status.FailedChunks) != 50 {
		t.Fatal("the stored status differs from the one written")
	}
	raw, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst-case object for %d chunks: %d bytes (ranges %d + %d), etcd limit %d", chunks, len(raw), len(completed), len(failed), etcdLimit)
	if len(raw) > etcdLimit/3 {
		t.Errorf("the object is %d bytes, over a third of etcd's %d-byte limit", len(raw), etcdLimit)
	}
}

// mix is splitmix64's finalizer: a cheap, well-spread hash of i.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
