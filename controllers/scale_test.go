package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dynamodbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// finishAllRunning finishes every running chunk Job, repeatedly, until the ingestion is terminal.
func finishAllRunning(t *testing.T, obj *v1alpha1.CsvIngestion, result func(i int) (worker.Result, int32, string)) *v1alpha1.CsvIngestion {
	t.Helper()
	done := map[string]bool{}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		cur := get(t, obj)
		if cur.Status.Phase.Terminal() {
			return cur
		}
		running := runningChunkJobs(t, obj)
		if n := len(running); n > int(cur.Spec.Chunking.Parallelism) {
			t.Fatalf("%d chunk jobs running, parallelism %d", n, cur.Spec.Chunking.Parallelism)
		}
		var batch []*batchv1.Job
		for i := range running {
			if !done[running[i].Name] {
				batch = append(batch, &running[i])
				done[running[i].Name] = true
			}
		}
		progressed := len(batch) > 0
		// Finish the batch from several goroutines: the test plays kubelet and Job controller
		// for hundreds of Jobs and must not be the bottleneck.
		var wg sync.WaitGroup
		errs := make(chan error, len(batch))
		work := make(chan *batchv1.Job)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range work {
					var idx int
					fmt.Sscan(j.Labels[worker.LabelChunk], &idx)
					res, code, reason := result(idx)
					if err := finishJobErr(j, res, code, reason); err != nil {
						errs <- err
					}
				}
			}()
		}
		for _, j := range batch {
			work <- j
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if !progressed {
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Fatalf("not terminal after 10 minutes: %s", get(t, obj).Status.Message)
	return nil
}

// With 2,000 chunks at parallelism 50, the controller's API writes per chunk stay bounded.
func TestFanOutAPICallsPerChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	ns := newNamespace(t)
	calls := &callCounter{byVerb: map[string]int{}}
	startManager(t, calls, ns)
	obj := create(t, newIngestion(ns, "fanout", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Chunking.Parallelism = 50
		o.Spec.Chunking.RowsPerChunk = 10
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 20000, 10)
	start := time.Now()
	final := finishAllRunning(t, obj, func(int) (worker.Result, int32, string) { return okResult(10), 0, "" })
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 20000 || final.Status.CompletedChunks != "0-1999" {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
	// The last chunks are released just after the final status write.
	eventually(t, "every chunk released", 60*time.Second, func() (bool, string) {
		n := 0
		for _, j := range listJobs(t, obj, worker.RoleChunk) {
			if j.Spec.TTLSecondsAfterFinished == nil {
				n++
			}
		}
		return n == 0, fmt.Sprintf("%d jobs without TTL", n)
	})
	byVerb := calls.snapshot()
	total := calls.total()
	perChunk := float64(total) / 2000
	t.Logf("2,000 chunks at parallelism 50 in %s: %d API writes, %.2f per chunk: %v", time.Since(start).Round(time.Second), total, perChunk, byVerb)
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 2000 {
		t.Errorf("%d chunk jobs exist, want 2000", n)
	}
	if byVerb["create *v1.Job"] != 2001 {
		t.Errorf("%d job creates sent, want 2001 (planner + 2,000 chunks, each once)", byVerb["create *v1.Job"])
	}
	// Once recorded, each chunk Job gets its TTL in one patch.
	// One TTL per recorded chunk and one finalizer removal per pod; a pass on a cache that has
	// not yet seen a release may send it again (idempotent), hence the small allowance.
	for _, verb := range []string{"patch *v1.Job", "patch *v1.Pod"} {
		if n := byVerb[verb]; n < 2000 || n > 2100 {
			t.Errorf("%d %s sent, want 2000 (at most 5%% repeated)", n, verb)
		}
	}
	// One Job create, one TTL patch, one finalizer removal per pod and at most a few status
	// writes per chunk; anything proportional to chunks × parallelism would be far above this.
	if perChunk > 6 {
		t.Errorf("%.2f API writes per chunk, want at most 6", perChunk)
	}
}

// With 2,004 chunks, every other one failed, the resource's status and the task item stay small.
// 1,002 failed chunks pass both of the task item's thresholds (tasktable.MaxWholeChunks: only failed
// chunks are kept; tasktable.MaxChunkEntries: none once more have failed), so the item goes through
// its largest form (1,000 failed entries) on the way; the status keeps 50 failed chunks and compact
// ranges of 1,002 gaps. (api/v1alpha1's statussize_test bounds the status at any size.)
func TestStatusAndTaskItemStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "bounded", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Chunking.Parallelism = 1000
		o.Spec.Chunking.RowsPerChunk = 1
		o.Spec.Chunking.MaxFailedRowsPercent = 100
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	const chunks = 2*tasktable.MaxChunkEntries + 4
	writePlan(t, obj, chunks, 1)
	final := finishAllRunning(t, obj, func(i int) (worker.Result, int32, string) {
		if i%2 == 1 { // alternate, the worst case for compact ranges
			return worker.Result{Role: "chunk", Reason: "RetryableError", Error: "pinecone: unavailable after 8 attempts; the index is overloaded, try again later"}, 1, "BackoffLimitExceeded"
		}
		return okResult(1), 0, ""
	})
	if final.Status.Phase != v1alpha1.PhasePartiallyCompleted || final.Status.Chunks.Failed != chunks/2 || len(final.Status.FailedChunks) != 50 {
		t.Fatalf("status %s", mustJSON(final.Status)[:2000])
	}
	raw, _ := json.Marshal(final.Status)
	t.Logf("status of %d chunks (%d failed, alternating): %d bytes", chunks, chunks/2, len(raw))
	if len(raw) > 64<<10 {
		t.Errorf("status is %d bytes, over 64 KiB", len(raw))
	}
	// The task item, measured the way DynamoDB sizes items (names + values).
	var size int
	eventually(t, "task item final", 30*time.Second, func() (bool, string) {
		out, err := dyn.Client().GetItem(context.Background(), &dynamodb.GetItemInput{
			TableName: ptrTo(taskTable), ConsistentRead: ptrTo(true),
			Key: map[string]dynamodbtypes.AttributeValue{"task_id": &dynamodbtypes.AttributeValueMemberS{Value: final.Spec.TaskID}},
		})
		if err != nil || out.Item == nil {
			return false, fmt.Sprint(err)
		}
		status := out.Item["status"].(*dynamodbtypes.AttributeValueMemberS).Value
		size = itemSize(out.Item)
		return status == "partially_completed", status
	})
	t.Logf("task item of %d chunks: %d bytes", chunks, size)
	if size > 350_000 {
		t.Errorf("task item is %d bytes, over 350 KB", size)
	}
}

func ptrTo[T any](v T) *T { return &v }

func itemSize(m map[string]dynamodbtypes.AttributeValue) int {
	n := 0
	for k, v := range m {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v dynamodbtypes.AttributeValue) int {
	switch x := v.(type) {
	case *dynamodbtypes.AttributeValueMemberS:
		return len(x.Value)
	case *dynamodbtypes.AttributeValueMemberN:
		return (len(x.Value)+1)/2 + 1
	case *dynamodbtypes.AttributeValueMemberBOOL, *dynamodbtypes.AttributeValueMemberNULL:
		return 1
	case *dynamodbtypes.AttributeValueMemberM:
		return 3 + itemSize(x.Value) + len(x.Value)
	case *dynamodbtypes.AttributeValueMemberL:
		n := 3
		for _, e := range x.Value {
			n += 1 + valueSize(e)
		}
		return n
	}
	return 0
}
