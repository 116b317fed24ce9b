package chunkrun_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// batchIngestion is e.ingestion in batch mode, polling fast.
func batchIngestion(e *env, key string) worker.Ingestion {
	ing := e.ingestion(key)
	ing.Spec.Embedding.Mode = v1alpha1.EmbeddingBatch
	ing.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{PollInterval: metav1.Duration{Duration: 5 * time.Millisecond}}
	return ing
}

// snapshot is an index's every vector by namespace and id.
func snapshot(e *env) map[string]map[string]fakeVector {
	out := map[string]map[string]fakeVector{}
	for _, ns := range e.index.Namespaces() {
		out[ns] = map[string]fakeVector{}
		for id, v := range e.index.Vectors(ns) {
			out[ns][id] = fakeVector{values: v.Values, metadata: v.Metadata}
		}
	}
	return out
}

// deadLetters maps a dead-lettered row number to its reason.
func deadLetters(t *testing.T, e *env, ing worker.Ingestion, chunks int) map[string]string {
	t.Helper()
	got := map[string]string{}
	for c := range chunks {
		data, err := e.get(fmt.Sprintf("%s%s/chunk-%04d.csv", ing.Spec.DeadLetter.KeyPrefix, ing.ObjectID(), c))
		if err != nil {
			continue
		}
		for _, rec := range readCSV(t, data)[1:] {
			got[rec[len(rec)-3]] = rec[len(rec)-2]
		}
	}
	return got
}

func TestBatchModeIndexEqualsOnline(t *testing.T) {
	rows := genLegacy(3000, 27)
	// Row texts the API refuses: online bisects them out, batch gets them in the error file.
	for _, i := range []int{5, 1400, 2999} {
		rows[i].fields[1] = "REFUSED " + rows[i].fields[1]
	}
	data := csvBytes(t, legacyCSV(rows))
	run := func(batch bool) (*env, worker.Ingestion, []worker.Result) {
		e := newEnv(t, fakeopenai.Options{RefuseMarker: "REFUSED"})
		// The fake's batch limit is the chunk size: a client that packed two chunks, or more than
		// the limit, into one batch would see it fail.
		e.openai.SetBatchLimits(fakeopenai.BatchLimits{MaxRequests: 1000, MaxInputs: 1000})
		key := e.prefix + "exports/239.csv"
		e.put(key, data)
		ing := e.ingestion(key)
		if batch {
			ing = batchIngestion(e, key)
			// Another object with the same task id and file: its dead letters, markers and batch
			// records (named by the UID too) do not meet the online run's; the metadata is the same.
			ing.UID += "-batch"
		}
		ing.Spec.Embedding.TokensPerMinute = 10000000
		results, err := e.runChunks(ing, e.plan(ing), 3)
		if err != nil {
			t.Fatal(err)
		}
		return e, ing, results
	}
	online, onIng, onRes := run(false)
	batch, bIng, bRes := run(true)

	if got, want := snapshot(batch), snapshot(online); !reflect.DeepEqual(got, want) {
		for ns, vecs := range want {
			for id, o := range vecs {
				b, ok := got[ns][id]
				switch {
				case !ok:
					t.Errorf("%s/%s missing from the batch run", ns, id)
				case !slices.Equal(b.values, o.values):
					t.Errorf("%s/%s: values differ", ns, id)
				case !reflect.DeepEqual(b.metadata, o.metadata):
					t.Errorf("%s/%s: metadata\nbatch  %v\nonline %v", ns, id, b.metadata, o.metadata)
				}
			}
		}
		t.Fatalf("batch-mode index differs from the online run's (%d vs %d vectors)", batch.index.Count(), online.index.Count())
	}
	if batch.index.Count() != len(rows)-3 {
		t.Fatalf("%d vectors", batch.index.Count())
	}
	if got, want := deadLetters(t, batch, bIng, 3), deadLetters(t, online, onIng, 3); !reflect.DeepEqual(got, want) || len(got) != 3 {
		t.Fatalf("dead letters: batch %v, online %v", got, want)
	}
	for i := range bRes {
		b, o := bRes[i], onRes[i]
		if b.Processed != o.Processed || b.Failed != o.Failed || b.RowsRead != o.RowsRead || b.VectorsUpserted != o.VectorsUpserted {
			t.Fatalf("chunk %d: batch %+v, online %+v", i, b, o)
		}
	}
	st := batch.openai.BatchStats()
	if st.BatchesCreated != 3 || st.LinesEmbedded != int64(len(rows)-3) || st.LinesFailed != 3 || batch.openai.Stats().Requests != 0 {
		t.Fatalf("one batch per chunk, each line once, nothing online: %+v, online requests %d", st, batch.openai.Stats().Requests)
	}
	if got := sum(bRes, func(r worker.Result) int64 { return r.Tokens }); got != st.Tokens {
		t.Errorf("chunks report %d tokens, the Batch API billed %d", got, st.Tokens)
	}
	// Each chunk reports its batches (the status adds them up) as the fake counted them.
	var batches v1alpha1.BatchStatus
	for i, r := range bRes {
		if r.Batch == nil {
			t.Fatalf("chunk %d reported no batch summary", i)
		}
		batches.Add(*r.Batch)
	}
	if want := (v1alpha1.BatchStatus{Batches: int32(st.BatchesCreated), Completed: int32(st.BatchesCreated),
		Lines: st.LinesEmbedded + st.LinesFailed, LinesDone: st.LinesEmbedded, LinesFailed: st.LinesFailed}); batches != want {
		t.Errorf("batch summaries add up to %+v, the fake counted %+v", batches, want)
	}
	for _, r := range onRes {
		if r.Batch != nil {
			t.Errorf("online chunk with a batch summary: %+v", r.Batch)
		}
	}
	if ids := batch.openai.FileIDs(); len(ids) != 0 {
		t.Errorf("files left at OpenAI after the chunks succeeded: %v", ids)
	}
	// The batch record is kept, marked done.
	if _, err := batch.get(chunkrun.BatchRecordKey(bIng.Spec.DeadLetter.KeyPrefix, bIng, 0)); err != nil {
		t.Errorf("batch record: %v", err)
	}
}

func TestBatchModePodKilledWhilePollingResumes(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(600, 5)
	key := e.prefix + "exports/239.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := batchIngestion(e, key)
	ing.Spec.Chunking.RowsPerChunk = 1000
	plan := e.plan(ing)
	args, err := plan.Chunk(0)
	if err != nil {
		t.Fatal(err)
	}
	e.openai.HoldBatches(true)
	// The pod is killed while its batch runs.
	if err := runUntilBatches(e, ing, args, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("want the kill, got %v", err)
	}
	if e.index.Count() != 0 || e.openai.BatchStats().BatchesCreated != 1 {
		t.Fatalf("before the batch ended: %d vectors, %+v", e.index.Count(), e.openai.BatchStats())
	}
	// Half of it runs, then it goes on by itself; the next pod resumes from the record.
	id := e.openai.BatchIDs()[0]
	e.openai.StepBatch(id, 0)
	e.openai.StepBatch(id, 300)
	e.openai.HoldBatches(false)
	res, err := chunkrun.Run(context.Background(), ing, args, e.deps())
	if err != nil {
		t.Fatal(err)
	}
	if res.VectorsUpserted != 600 || e.index.Count() != 600 {
		t.Fatalf("result %+v, %d vectors", res, e.index.Count())
	}
	if st := e.openai.BatchStats(); st.BatchesCreated != 1 || st.LinesEmbedded != 600 || st.FilesUploaded != 1 {
		t.Fatalf("submitted again: %+v", st)
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 1000)
}

func TestBatchModeCancelledRunCancelsBatchesAndDeletesFiles(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(900, 9)
	key := e.prefix + "exports/239.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := batchIngestion(e, key)
	ing.Spec.Chunking.RowsPerChunk = 300
	plan := e.plan(ing)
	e.openai.HoldBatches(true)
	// Chunks 0 and 1 submit and are stopped mid-batch (the run is cancelled); chunk 2 never starts.
	for c := range 2 {
		args, err := plan.Chunk(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := runUntilBatches(e, ing, args, int64(c)+1); !errors.Is(err, context.Canceled) {
			t.Fatalf("chunk %d: want the stop, got %v", c, err)
		}
	}
	ids := e.openai.BatchIDs()
	if len(ids) != 2 || len(e.openai.FileIDs()) != 2 {
		t.Fatalf("batches %v, files %v", ids, e.openai.FileIDs())
	}
	e.openai.StepBatch(ids[0], 0)
	e.openai.StepBatch(ids[0], 100) // a third of chunk 0 has run: its partial output is a file too
	e.openai.HoldBatches(false)

	n, err := chunkrun.CleanupBatches(context.Background(), ing, e.deps(), logr.Discard())
	if err != nil || n != 2 {
		t.Fatalf("cleanup: %d chunks, %v", n, err)
	}
	for _, id := range ids {
		if st := e.openai.BatchStatus(id); st != fakeopenai.BatchCancelled {
			t.Errorf("batch %s is %s", id, st)
		}
	}
	if files := e.openai.FileIDs(); len(files) != 0 {
		t.Fatalf("files left at OpenAI: %v", files)
	}
	// Two inputs and chunk 0's partial output at least; chunk 1's batch may also have stepped
	// (one step per retrieve) before the cancel reached it, and then has an output file too.
	// That every file is gone is checked above.
	if st := e.openai.BatchStats(); st.BatchesCanceled != 2 || st.FilesDeleted < 3 || st.FilesDeleted > 4 {
		t.Fatalf("%+v", st)
	}
	// Again: nothing left to do.
	if n, err := chunkrun.CleanupBatches(context.Background(), ing, e.deps(), logr.Discard()); err != nil || n != 0 {
		t.Fatalf("second cleanup: %d, %v", n, err)
	}
	if e.index.Count() != 0 {
		t.Fatalf("%d vectors upserted by a cancelled run", e.index.Count())
	}
}

// runUntilBatches runs a chunk and stops it (a pod killed) once the fake has seen the given
// number of batches created in all, or after a minute. A fixed deadline instead made the kill
// land before the first upload on a loaded machine.
func runUntilBatches(e *env, ing worker.Ingestion, args worker.ChunkArgs, batches int64) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := chunkrun.Run(ctx, ing, args, e.deps())
		done <- err
	}()
	deadline := time.After(time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return fmt.Errorf("the chunk ended before it was stopped: %v", err)
		case <-deadline:
			cancel()
			return fmt.Errorf("no %d batches created within a minute (%+v); the chunk returned %v", batches, e.openai.BatchStats(), <-done)
		case <-tick.C:
			if e.openai.BatchStats().BatchesCreated >= batches {
				cancel()
				return <-done
			}
		}
	}
}

// TestBatchModeReportsLive: a batch-mode chunk with the lease environment reports its batches
// to the lease service's report endpoint (the real handler, the real credential) while it
// polls; the last report is its batches as they ended. Without a lease it reports nothing and
// runs the same.
func TestBatchModeReportsLive(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(300, 5)
	key := e.prefix + "exports/239.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := batchIngestion(e, key)
	ing.Spec.Chunking.RowsPerChunk = 1000
	args, err := e.plan(ing).Chunk(0)
	if err != nil {
		t.Fatal(err)
	}
	leaseKey := []byte("chunkrun-test-lease-key-0123456789")
	reports, err := ratelease.NewReports(ratelease.ReportsOptions{Key: leaseKey})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := 0
	mux := http.NewServeMux()
	mux.Handle(ratelease.ReportPath, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		mu.Unlock()
		reports.ServeHTTP(w, r)
	}))
	srv := httptest.NewServer(mux) // no lease endpoint: the lease client falls back, as with a manager down
	defer srv.Close()
	deps := e.deps()
	deps.Lease = &ratelease.ClientOptions{URL: srv.URL + ratelease.Path, Credential: ratelease.Credential(leaseKey, ing.Namespace, ing.Name),
		Namespace: ing.Namespace, Ingestion: ing.Name, Job: "job-0", Holder: "pod-0", Model: ing.Spec.Embedding.Model}
	res, err := chunkrun.Run(context.Background(), ing, args, deps)
	if err != nil {
		t.Fatal(err)
	}
	got := reports.Chunks(ing.Namespace, ing.Name, ing.UID)
	if res.Batch == nil || len(got) != 1 || got[0].Summary != *res.Batch || got[0].Summary.Completed != 1 || got[0].Summary.Lines != 300 {
		t.Fatalf("reports %+v, want chunk 0's final batches %+v (1 completed, 300 lines)", got, res.Batch)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen < 2 {
		t.Errorf("%d reports, want one per change (created, in progress …, completed)", seen)
	}
}
