package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// A batch-mode chunk waits for the Batch API (up to its 24-hour window) and needs a writable
// spool on a read-only root filesystem; an online chunk gets neither.
func TestChunkJobBatchMode(t *testing.T) {
	r := &Reconciler{}
	r.Config.defaults()
	for _, mode := range []string{v1alpha1.EmbeddingOnline, v1alpha1.EmbeddingBatch} {
		obj := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", UID: "u1"}}
		obj.Spec.Embedding.Mode = mode
		obj.Spec.Chunking.ChunkTimeout = metav1.Duration{Duration: time.Hour}
		obj.Spec.Chunking.RetriesPerChunk = 2
		job, err := r.chunkJob(obj, worker.ChunkArgs{Index: 1, ETag: "e"})
		if err != nil {
			t.Fatal(err)
		}
		pod := job.Spec.Template.Spec
		c := pod.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		want := int64(time.Hour.Seconds())
		if mode == v1alpha1.EmbeddingBatch {
			want = int64((time.Hour + BatchWindow).Seconds())
			if len(pod.Volumes) != 1 || pod.Volumes[0].EmptyDir == nil || len(c.VolumeMounts) != 1 ||
				c.VolumeMounts[0].MountPath != BatchSpoolDir || env["TMPDIR"] != "" {
				t.Fatalf("batch spool: volumes %+v mounts %+v TMPDIR %q", pod.Volumes, c.VolumeMounts, env["TMPDIR"])
			}
		} else if len(pod.Volumes) != 0 || env["TMPDIR"] != "" {
			t.Fatalf("online chunk with a spool: %+v", pod.Volumes)
		}
		if got := *pod.ActiveDeadlineSeconds; got != want {
			t.Errorf("%s: pod deadline %ds, want %ds", mode, got, want)
		}
		if got := *job.Spec.ActiveDeadlineSeconds; got != want*3 {
			t.Errorf("%s: job deadline %ds, want %ds", mode, got, want*3)
		}
		if !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem writable", mode)
		}
	}
}

func TestEstimateBatchMode(t *testing.T) {
	plan := &worker.Plan{TotalRows: 120000, RowsPerChunk: 60000, Offsets: []int64{0, 100, 200},
		EstimatedTokens: 30_000_000, EstimatedCostUSD: "0.60"}
	cases := []struct {
		name   string
		mode   string
		maxEnq int64
		want   v1alpha1.Estimate
	}{
		{"online", v1alpha1.EmbeddingOnline, 0, v1alpha1.Estimate{Tokens: 30_000_000, CostUSD: "0.60", Requests: 100, MinDuration: "30m0s"}},
		// 15M tokens a chunk, 750,000 a chunk's share of 3M over 4 running chunks: 20 batches each.
		{"batch, default cap", v1alpha1.EmbeddingBatch, 0, v1alpha1.Estimate{Tokens: 30_000_000, CostUSD: "0.30", Requests: 40,
			Mode: "batch", Batches: 40, OnlineCostUSD: "0.60", SavedUSD: "0.30"}},
		// A cap that holds a chunk's tokens: the 50,000-line limit makes it 2 batches a chunk.
		{"batch, large cap", v1alpha1.EmbeddingBatch, 1_000_000_000, v1alpha1.Estimate{Tokens: 30_000_000, CostUSD: "0.30", Requests: 4,
			Mode: "batch", Batches: 4, OnlineCostUSD: "0.60", SavedUSD: "0.30"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj := &v1alpha1.CsvIngestion{}
			obj.Spec.Embedding = v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", Mode: tc.mode,
				RequestsPerMinute: 300, TokensPerMinute: 1_000_000, MaxInputsPerRequest: 2048}
			if tc.maxEnq > 0 {
				obj.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{MaxEnqueuedTokens: tc.maxEnq}
			}
			obj.Spec.Chunking.Parallelism = 4
			if got := estimate(obj, plan); *got != tc.want {
				t.Errorf("estimate %+v\nwant     %+v", *got, tc.want)
			}
		})
	}
}

// When FinalizerBatchCleanup is added, held and released.
func TestDecideBatchFinalizer(t *testing.T) {
	type in = batchFinalizerInput
	cases := []struct {
		name string
		in   in
		want batchFinalizerAction
	}{
		{"online, running: never added", in{}, finalizerKeep},
		{"online, deleted: nothing to hold", in{deleting: true}, finalizerKeep},
		{"online with the finalizer (edited in): removed", in{has: true, terminal: true}, finalizerRemoveNothing},
		{"batch, new: added", in{batch: true}, finalizerAdd},
		{"batch, already held: kept", in{batch: true, has: true}, finalizerKeep},
		{"batch, ended before it was added: not added", in{batch: true, terminal: true, planned: true}, finalizerKeep},
		{"batch, deleted before it was added: not added", in{batch: true, deleting: true}, finalizerKeep},
		{"batch, deleted while running: held until stopped", in{batch: true, has: true, deleting: true, planned: true}, finalizerKeep},
		{"batch, ended unplanned: nothing submitted", in{batch: true, has: true, terminal: true}, finalizerRemoveNothing},
		{"batch, ended, no cleanup Job yet: held", in{batch: true, has: true, terminal: true, planned: true}, finalizerKeep},
		{"batch, cleanup running: held", in{batch: true, has: true, terminal: true, planned: true, job: cleanupRunning}, finalizerKeep},
		{"batch, deleted, cleanup running: held", in{batch: true, has: true, deleting: true, terminal: true, planned: true, job: cleanupRunning}, finalizerKeep},
		{"batch, cleanup succeeded: removed", in{batch: true, has: true, terminal: true, planned: true, job: cleanupSucceeded}, finalizerRemoveDone},
		{"batch, deleted, cleanup succeeded: removed", in{batch: true, has: true, deleting: true, terminal: true, planned: true, job: cleanupSucceeded}, finalizerRemoveDone},
		{"batch, cleanup failed: given up", in{batch: true, has: true, terminal: true, planned: true, job: cleanupFailed}, finalizerRemoveFailed},
		{"batch, deleted, cleanup failed: given up", in{batch: true, has: true, deleting: true, terminal: true, planned: true, job: cleanupFailed}, finalizerRemoveFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideBatchFinalizer(tc.in); got != tc.want {
				t.Errorf("decideBatchFinalizer(%+v) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}
