package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"hash/fnv"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// Batch mode end to end: the same 20,000-row file ingested online and through the Batch API
// into two Pinecone namespaces of the stack's index gives the same vectors (ids, values,
// metadata but the run's own task_id and processed_at), and every batch is created once.
func TestBatchModeIndexEqualsOnline(t *testing.T) {
	skipShort(t)
	const rows = 20000
	stats, key := scenario(t, "batch", csvgen.Options{Rows: rows, Seed: 2027})
	// The fake's batch limit is the chunk size, so the run needs several batches and a client
	// that put more than a chunk's rows in one would see it fail.
	st.OpenAI.SetBatchLimits(fakeopenai.BatchLimits{MaxRequests: 5000, MaxInputs: 5000})
	t.Cleanup(func() { st.OpenAI.SetBatchLimits(fakeopenai.BatchLimits{}) })
	before := st.OpenAI.BatchStats()
	mk := func(name, ns, mode string) *v1alpha1.CsvIngestion {
		obj := st.LegacyIngestion("batch", name, key)
		obj.Spec.Target.Pinecone.Namespace = ns
		obj.Spec.Chunking.RowsPerChunk = 5000
		obj.Spec.Embedding.Mode = mode
		if mode == v1alpha1.EmbeddingBatch {
			obj.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{PollInterval: metav1.Duration{Duration: time.Second}}
		}
		return obj
	}
	batch := apply(t, mk("q239-batch", "e2e-batch", v1alpha1.EmbeddingBatch))
	online := apply(t, mk("q239-online", "e2e-online", v1alpha1.EmbeddingOnline))
	for _, obj := range []*v1alpha1.CsvIngestion{batch, online} {
		final := waitTerminal(t, obj, 10*time.Minute)
		if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != rows || final.Status.Records.Failed != 0 {
			t.Fatalf("%s (%s): %+v", obj.Name, obj.Spec.Embedding.Mode, final.Status)
		}
	}

	idx := st.Pinecone.Index(stack.Index)
	got, want := idx.Vectors("e2e-batch"), idx.Vectors("e2e-online")
	if int64(len(got)) != stats.Good || len(want) != len(got) {
		t.Fatalf("batch run stored %d vectors, online %d, want %d", len(got), len(want), stats.Good)
	}
	for id, o := range want {
		b, ok := got[id]
		if !ok {
			t.Fatalf("vector %s of the online run is missing from the batch run", id)
		}
		if !slices.Equal(b.Values, o.Values) {
			t.Fatalf("vector %s: values differ between batch and online", id)
		}
		bm, om := maps.Clone(b.Metadata), maps.Clone(o.Metadata)
		for _, k := range []string{"task_id", "processed_at"} {
			delete(bm, k)
			delete(om, k)
		}
		if !reflect.DeepEqual(bm, om) {
			t.Fatalf("vector %s metadata\nbatch  %v\nonline %v", id, bm, om)
		}
	}

	// Each batch created once: as many batches as batch files (no second submission of one),
	// at least one per chunk, every line run once, and every file deleted once the vectors are in.
	after := st.OpenAI.BatchStats()
	created, uploaded := after.BatchesCreated-before.BatchesCreated, after.FilesUploaded-before.FilesUploaded
	if created < 4 || created != uploaded {
		t.Errorf("%d batches created from %d uploaded files for 4 chunks", created, uploaded)
	}
	if d := after.LinesEmbedded - before.LinesEmbedded; d != rows {
		t.Errorf("%d lines embedded for %d rows", d, rows)
	}
	if d := after.FilesDeleted - before.FilesDeleted; d != 2*created {
		t.Errorf("%d files deleted, want %d (inputs and outputs)", d, 2*created)
	}
	// The status counts the batches the fake created, all completed, every line done.
	if b := get(t, batch).Status.Batch; b == nil || int64(b.Batches) != created || int64(b.Completed) != created ||
		b.Lines != rows || b.LinesDone != rows || b.LinesFailed != 0 {
		t.Errorf("status.batch %+v for %d batches of %d rows", b, created, rows)
	}
	if b := get(t, online).Status.Batch; b != nil {
		t.Errorf("online run with status.batch %+v", b)
	}
}

// batchIngestion is the legacy ingestion in batch mode, one batch per chunk, polling each second.
func batchIngestion(ns, key string, rowsPerChunk int32) *v1alpha1.CsvIngestion {
	obj := st.LegacyIngestion(ns, "q239", key)
	obj.Spec.Chunking.RowsPerChunk = rowsPerChunk
	obj.Spec.Embedding.Mode = v1alpha1.EmbeddingBatch
	obj.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{
		PollInterval: metav1.Duration{Duration: time.Second}, MaxEnqueuedTokens: 100_000_000}
	return obj
}

// waitBatches waits until n batches beyond the first skip exist at the fake and returns them.
func waitBatches(t *testing.T, skip, n int) []string {
	t.Helper()
	var ids []string
	waitFor(t, fmt.Sprintf("%d batches submitted", n), 2*time.Minute, func() (bool, string) {
		ids = st.OpenAI.BatchIDs()[skip:]
		return len(ids) >= n, fmt.Sprint(ids)
	})
	return ids
}

// The manager SIGKILLed and a polling pod killed while the batches run, and one batch expiring
// half done: nothing is submitted twice, the expired half is resubmitted once, every row is
// embedded (and paid) exactly once.
func TestBatchModeKillsAndExpiryLoseNothing(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	const rows = 6000
	stats, key := scenario(t, "batchfault", csvgen.Options{Rows: rows, Seed: 31})
	st.OpenAI.HoldBatches(true)
	t.Cleanup(func() { st.OpenAI.HoldBatches(false) })
	before, skip := st.OpenAI.BatchStats(), len(st.OpenAI.BatchIDs())
	obj := apply(t, batchIngestion("batchfault", key, 2000))
	ids := waitBatches(t, skip, 3)

	if err := st.KillManager(); err != nil {
		t.Fatal(err)
	}
	var victim string
	waitFor(t, "a polling chunk pod", time.Minute, func() (bool, string) {
		for _, name := range st.Runner.Running() {
			if strings.HasPrefix(name, "batchfault/q239-chunk-") {
				victim = name
				return true, ""
			}
		}
		return false, fmt.Sprint(st.Runner.Running())
	})
	parts := strings.SplitN(victim, "/", 2)
	if err := st.Runner.Kill(parts[1], parts[0]); err != nil {
		t.Fatal(err)
	}
	// The first batch runs half its lines and expires.
	st.OpenAI.StepBatch(ids[0], 0)
	st.OpenAI.StepBatch(ids[0], 1000)
	if !st.OpenAI.ExpireBatch(ids[0]) {
		t.Fatal("could not expire the first batch")
	}
	if err := st.StartManager(ctx); err != nil {
		t.Fatal(err)
	}
	st.OpenAI.HoldBatches(false)

	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != rows || final.Status.Records.Failed != 0 {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	after := st.OpenAI.BatchStats()
	if d := after.BatchesCreated - before.BatchesCreated; d != 4 {
		t.Errorf("%d batches created, want 4 (3 chunks and one resubmission of the expired lines)", d)
	}
	if d := after.FilesUploaded - before.FilesUploaded; d != 4 {
		t.Errorf("%d files uploaded, want 4", d)
	}
	if d := after.LinesExpired - before.LinesExpired; d != 1000 {
		t.Errorf("%d lines expired, want 1000", d)
	}
	if d := after.LinesEmbedded - before.LinesEmbedded; d != rows {
		t.Errorf("%d lines embedded (and billed) for %d rows", d, rows)
	}
	// The status and the task item count the same batches: chunk 0's expired batch (half done)
	// and its resubmission, and the other chunks' batches, every row's line done once.
	want := v1alpha1.BatchStatus{Batches: 4, Completed: 3, Expired: 1, Lines: rows, LinesDone: rows}
	if b := final.Status.Batch; b == nil || *b != want {
		t.Errorf("status.batch %+v, want %+v", b, want)
	}
	waitFor(t, "the task item's batch counts", time.Minute, func() (bool, string) {
		task, _, err := st.Tasks.Get(ctx, final.Status.TaskID)
		if err != nil || task.Batch == nil {
			return false, fmt.Sprint(err)
		}
		return *task.Batch == tasktable.BatchCounts{Batches: 4, Completed: 3, Expired: 1, Lines: rows, LinesDone: rows}, fmt.Sprintf("%+v", *task.Batch)
	})
}

// Cancelling a batch-mode run mid-batch cancels its batches and deletes its files at OpenAI.
func TestBatchModeCancelCancelsBatchesAndDeletesFiles(t *testing.T) {
	skipShort(t)
	_, key := scenario(t, "batchcancel", csvgen.Options{Rows: 4000, Seed: 37})
	st.OpenAI.HoldBatches(true)
	t.Cleanup(func() { st.OpenAI.HoldBatches(false) })
	before, skip := st.OpenAI.BatchStats(), len(st.OpenAI.BatchIDs())
	obj := apply(t, batchIngestion("batchcancel", key, 2000))
	ids := waitBatches(t, skip, 2)
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	final := waitTerminal(t, obj, 2*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCancelled {
		t.Fatalf("status %+v", final.Status)
	}
	// Nobody polls the held batches now; only the cleanup Job moves them on.
	st.OpenAI.HoldBatches(false)
	waitFor(t, "batches cancelled and files deleted", 2*time.Minute, func() (bool, string) {
		after := st.OpenAI.BatchStats()
		for _, id := range ids {
			if s := st.OpenAI.BatchStatus(id); s != fakeopenai.BatchCancelled {
				return false, id + " " + s
			}
		}
		d := after.FilesDeleted - before.FilesDeleted
		return d == int64(len(ids)), fmt.Sprintf("%d files deleted", d)
	})
	if d := st.OpenAI.BatchStats().LinesEmbedded - before.LinesEmbedded; d != 0 {
		t.Errorf("%d lines embedded after the cancel", d)
	}
}

// Deleting a batch-mode run mid-batch stops it, and the batch-cleanup finalizer holds the
// ingestion until its cleanup Job has cancelled the batches and deleted their files at OpenAI.
func TestBatchModeDeleteCancelsBatchesAndDeletesFiles(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	_, key := scenario(t, "batchdelete", csvgen.Options{Rows: 4000, Seed: 41})
	st.OpenAI.HoldBatches(true)
	t.Cleanup(func() { st.OpenAI.HoldBatches(false) })
	before, skip := st.OpenAI.BatchStats(), len(st.OpenAI.BatchIDs())
	obj := apply(t, batchIngestion("batchdelete", key, 2000))
	ids := waitBatches(t, skip, 2)
	if err := st.Cluster.Client.Delete(ctx, get(t, obj)); err != nil {
		t.Fatal(err)
	}
	// Held open at the fake, the batches cannot end: the ingestion waits, stopped.
	final := waitTerminal(t, obj, 2*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCancelled || final.DeletionTimestamp.IsZero() {
		t.Fatalf("deleted run: phase %s, deletion %v: %s", final.Status.Phase, final.DeletionTimestamp, final.Status.Message)
	}
	st.OpenAI.HoldBatches(false)
	waitFor(t, "the ingestion gone", 2*time.Minute, func() (bool, string) {
		cur := &v1alpha1.CsvIngestion{}
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		var pods corev1.PodList
		_ = st.Cluster.Client.List(ctx, &pods, client.InNamespace(obj.Namespace))
		var ps []string
		for _, p := range pods.Items {
			msg := ""
			for _, c := range p.Status.ContainerStatuses {
				if c.State.Terminated != nil {
					msg = c.State.Terminated.Message
				} else if c.State.Waiting != nil {
					msg = c.State.Waiting.Reason + " " + c.State.Waiting.Message
				}
			}
			ps = append(ps, fmt.Sprintf("%s %s %s", p.Name, p.Status.Phase, msg))
		}
		return false, fmt.Sprintf("err %v, finalizers %v, conditions %v; pods %v", err, cur.Finalizers, cur.Status.Conditions, ps)
	})
	// Gone only after the cleanup: the batches are cancelled and the files deleted already.
	after := st.OpenAI.BatchStats()
	for _, id := range ids {
		if s := st.OpenAI.BatchStatus(id); s != fakeopenai.BatchCancelled {
			t.Errorf("batch %s %s after the ingestion was deleted", id, s)
		}
	}
	if d := after.FilesDeleted - before.FilesDeleted; d != int64(len(ids)) {
		t.Errorf("%d files deleted, want %d", d, len(ids))
	}
	if d := after.LinesEmbedded - before.LinesEmbedded; d != 0 {
		t.Errorf("%d lines embedded after the deletion", d)
	}
}

// deadLetters reads an ingestion's dead letters: row → reason, and row → detail.
func deadLetters(t *testing.T, obj *v1alpha1.CsvIngestion) (map[string]string, map[string]string) {
	t.Helper()
	reasons, details := map[string]string{}, map[string]string{}
	for i := 0; i < int(obj.Status.Chunks.Total); i++ {
		body, err := st.Object(context.Background(), fmt.Sprintf("failed/%s/chunk-%04d.csv", worker.FromObject(obj).ObjectID(), i))
		if err != nil {
			continue // a chunk without failed rows writes nothing
		}
		r := csv.NewReader(bytes.NewReader(body))
		r.FieldsPerRecord = -1
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatalf("dead letter of chunk %d: %v", i, err)
		}
		rowCol, reasonCol, detailCol := indexOf(recs[0], "_row"), indexOf(recs[0], "_reason"), indexOf(recs[0], "_detail")
		for _, rec := range recs[1:] {
			reasons[rec[rowCol]], details[rec[rowCol]] = rec[reasonCol], rec[detailCol]
		}
	}
	return reasons, details
}

// Inputs the API refuses come back in batch mode as error-file lines and are dead-lettered with
// OpenAI's message, the same rows with the same reasons as an online run of the file.
func TestBatchModeErrorLinesDeadLettered(t *testing.T) {
	skipShort(t)
	const refusal = "Input flagged by the e2e refusal rule."
	st.OpenAI.RefuseInputs(func(text string) bool {
		h := fnv.New32a()
		_, _ = h.Write([]byte(text))
		return h.Sum32()%400 == 0
	}, refusal)
	t.Cleanup(func() { st.OpenAI.RefuseInputs(nil, "") })
	_, key := scenario(t, "batcherr", csvgen.Options{Rows: 4000, Seed: 41})
	batch := batchIngestion("batcherr", key, 2000)
	batch.Name = "q239-batch"
	batch.Spec.Target.Pinecone.Namespace = "e2e-batcherr-batch"
	online := st.LegacyIngestion("batcherr", "q239-online", key)
	online.Spec.Target.Pinecone.Namespace = "e2e-batcherr-online"
	online.Spec.Chunking.RowsPerChunk = 2000
	var finals []*v1alpha1.CsvIngestion
	for _, obj := range []*v1alpha1.CsvIngestion{apply(t, batch), apply(t, online)} {
		final := waitTerminal(t, obj, 5*time.Minute)
		if final.Status.Phase != v1alpha1.PhasePartiallyCompleted || final.Status.Records.Failed == 0 {
			t.Fatalf("%s: %+v", obj.Name, final.Status)
		}
		finals = append(finals, final)
	}
	bReasons, bDetails := deadLetters(t, finals[0])
	oReasons, _ := deadLetters(t, finals[1])
	if !reflect.DeepEqual(bReasons, oReasons) || int64(len(bReasons)) != finals[0].Status.Records.Failed {
		t.Fatalf("dead letters\nbatch  %v\nonline %v", sortedMap(bReasons), sortedMap(oReasons))
	}
	for row, reason := range bReasons {
		if reason != "embedding_refused" || !strings.Contains(bDetails[row], "HTTP 400") || !strings.Contains(bDetails[row], refusal) {
			t.Fatalf("row %s dead-lettered as %s: %s", row, reason, bDetails[row])
		}
	}
	if finals[0].Status.Records.Processed != finals[1].Status.Records.Processed {
		t.Fatalf("processed: batch %d, online %d", finals[0].Status.Records.Processed, finals[1].Status.Records.Processed)
	}
}

// Suspending a batch-mode run stops its pods and holds its batches open (nothing is cancelled);
// resumed, the pods pick the batches up from their records and nothing is submitted twice.
func TestBatchModeSuspendHoldsBatches(t *testing.T) {
	skipShort(t)
	stats, key := scenario(t, "batchsuspend", csvgen.Options{Rows: 4000, Seed: 43})
	st.OpenAI.HoldBatches(true)
	t.Cleanup(func() { st.OpenAI.HoldBatches(false) })
	before, skip := st.OpenAI.BatchStats(), len(st.OpenAI.BatchIDs())
	obj := apply(t, batchIngestion("batchsuspend", key, 2000))
	ids := waitBatches(t, skip, 2)
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	waitFor(t, "suspended, no pods running", time.Minute, func() (bool, string) {
		cur := get(t, obj)
		running := 0
		for _, n := range st.Runner.Running() {
			if strings.HasPrefix(n, "batchsuspend/") {
				running++
			}
		}
		return meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionSuspended) && running == 0, fmt.Sprintf("%d running", running)
	})
	for _, id := range ids {
		if s := st.OpenAI.BatchStatus(id); s != fakeopenai.BatchValidating {
			t.Fatalf("batch %s is %s while the run is suspended", id, s)
		}
	}
	st.OpenAI.HoldBatches(false)
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	final := waitTerminal(t, obj, 3*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 4000 {
		t.Fatalf("status %+v", final.Status)
	}
	checkExactVectors(t, final, stats, false)
	after := st.OpenAI.BatchStats()
	if d := after.BatchesCreated - before.BatchesCreated; d != int64(len(ids)) {
		t.Errorf("%d batches created, want %d", d, len(ids))
	}
	if d := after.BatchesCanceled - before.BatchesCanceled; d != 0 {
		t.Errorf("%d batches cancelled by a suspend", d)
	}
}

// TestBatchModeLiveState: with rate leases on, the chunk pods (the real embedder) report their
// batches while the fake holds them, and status.batch shows them in progress before any chunk
// ends; once the run completes only the recorded chunks' batches remain.
func TestBatchModeLiveState(t *testing.T) {
	skipShort(t)
	withRateLeases(t)
	_, key := scenario(t, "batchlive", csvgen.Options{Rows: 2000, Seed: 47})
	st.OpenAI.HoldBatches(true)
	t.Cleanup(func() { st.OpenAI.HoldBatches(false) })
	skip := len(st.OpenAI.BatchIDs())
	obj := apply(t, batchIngestion("batchlive", key, 1000))
	ids := waitBatches(t, skip, 2)
	waitFor(t, "held batches live in status", time.Minute, func() (bool, string) {
		s := get(t, obj).Status
		return s.BatchLive != nil && s.Batch != nil && s.BatchLive.Validating == 2 && s.Batch.Validating == 2 &&
			s.Batch.Lines == 2000 && s.CompletedChunks == "", fmt.Sprintf("batch %+v live %+v", s.Batch, s.BatchLive)
	})
	// Half of one batch runs: its lines done show while it is in progress.
	st.OpenAI.StepBatch(ids[0], 0)
	st.OpenAI.StepBatch(ids[0], 500)
	waitFor(t, "an in-progress batch's lines live in status", time.Minute, func() (bool, string) {
		s := get(t, obj).Status
		return s.BatchLive != nil && s.BatchLive.InProgress == 1 && s.BatchLive.LinesDone == 500, fmt.Sprintf("live %+v", s.BatchLive)
	})
	st.OpenAI.HoldBatches(false)
	final := waitTerminal(t, obj, 3*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.BatchLive != nil || final.Status.Batch == nil ||
		final.Status.Batch.Completed != 2 || final.Status.Batch.InProgress+final.Status.Batch.Validating != 0 {
		t.Fatalf("status phase %s batch %+v live %+v", final.Status.Phase, final.Status.Batch, final.Status.BatchLive)
	}
}
