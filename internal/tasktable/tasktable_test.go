package tasktable

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
)

var (
	created  = time.Date(2025, 1, 10, 12, 0, 0, 123456000, time.UTC)
	started  = time.Date(2025, 1, 10, 12, 0, 5, 0, time.UTC)
	updated  = time.Date(2025, 1, 10, 12, 3, 0, 500000000, time.UTC)
	finished = time.Date(2025, 1, 10, 12, 30, 0, 1000, time.UTC)
)

func sampleTask(id string, version int64) Task {
	return Task{
		TaskID:   id,
		Status:   taskstatus.ProcessingChunks,
		TaskType: TaskTypeMetabase,
		Parameters: Parameters{
			DataSource: "metabase", S3Key: "staged/239.csv", QuestionID: 239, Namespace: "v2",
			ChunkSize: 1000, BatchSize: 100, StartDate: "2025-01-10", EndDate: "2025-01-12",
		},
		TotalRecords: 3000, ProcessedRecords: 1500, FailedRecords: 2,
		ChunksTotal: 3, ChunksCompleted: 1, ChunksFailed: 0, ChunksProcessing: 2,
		ProgressPercentage: 33.33, VectorsUpserted: 1498,
		ErrorMessage: "chunk 2 retrying",
		CreatedAt:    created, UpdatedAt: updated, StartedAt: started, CompletedAt: finished,
		K8s:     K8sRef{Namespace: "ingestion", Name: "q239-2025-01-10", UID: "0b6c-uid"},
		Version: version,
	}
}

func TestPutWritesTheItemOfDesign7(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-1", 1)
	chunks := map[int]ChunkEntry{
		0: {Status: "completed", StartRow: 0, EndRow: 999, ProcessedRecords: 998, FailedRecords: 2, VectorsUpserted: 998},
		1: {Status: "processing", StartRow: 1000, EndRow: 1999, ProcessedRecords: 500, VectorsUpserted: 500},
		2: {Status: "failed", StartRow: 2000, EndRow: 2999, ErrorMessage: "PermanentError: 401 from embeddings"},
	}
	if err := c.Put(ctx, task, chunks); err != nil {
		t.Fatalf("Put: %v", err)
	}
	want := map[string]types.AttributeValue{
		"task_id": s("task-1"), "status": s("processing_chunks"), "task_type": s("metabase_processing"),
		"parameters": m(map[string]types.AttributeValue{
			"data_source": s("metabase"), "s3_key": s("staged/239.csv"), "question_id": n("239"), "namespace": s("v2"),
			"chunk_size": n("1000"), "batch_size": n("100"), "start_date": s("2025-01-10"), "end_date": s("2025-01-12"),
		}),
		"total_records": n("3000"), "processed_records": n("1500"), "failed_records": n("2"),
		"chunks_total": n("3"), "chunks_completed": n("1"), "chunks_failed": n("0"), "chunks_processing": n("2"),
		"progress_percentage": n("33.33"), "vectors_upserted": n("1498"), "error_message": s("chunk 2 retrying"),
		"created_at": s("2025-01-10T12:00:00.123456Z"), "updated_at": s("2025-01-10T12:03:00.500000Z"),
		"started_at": s("2025-01-10T12:00:05.000000Z"), "completed_at": s("2025-01-10T12:30:00.000001Z"),
		"k8s":     m(map[string]types.AttributeValue{"namespace": s("ingestion"), "name": s("q239-2025-01-10"), "uid": s("0b6c-uid")}),
		"version": n("1"),
		"chunks": m(map[string]types.AttributeValue{
			"chunk_0000": m(map[string]types.AttributeValue{"status": s("completed"), "start_row": n("0"), "end_row": n("999"),
				"processed_records": n("998"), "failed_records": n("2"), "vectors_upserted": n("998")}),
			"chunk_0001": m(map[string]types.AttributeValue{"status": s("processing"), "start_row": n("1000"), "end_row": n("1999"),
				"processed_records": n("500"), "failed_records": n("0"), "vectors_upserted": n("500")}),
			"chunk_0002": m(map[string]types.AttributeValue{"status": s("failed"), "start_row": n("2000"), "end_row": n("2999"),
				"processed_records": n("0"), "failed_records": n("0"), "vectors_upserted": n("0"),
				"error_message": s("PermanentError: 401 from embeddings")}),
		}),
	}
	if got, exp := renderMap(rawItem(t, table, "task-1")), renderMap(want); got != exp {
		t.Fatalf("item after Put:\n got %s\nwant %s", got, exp)
	}

	// Get reads back what was written.
	got, gotChunks, err := c.Get(ctx, "task-1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(*got, task) {
		t.Errorf("Get task:\n got %+v\nwant %+v", *got, task)
	}
	wantChunks := map[string]ChunkEntry{"chunk_0000": chunks[0], "chunk_0001": chunks[1], "chunk_0002": chunks[2]}
	if !reflect.DeepEqual(gotChunks, wantChunks) {
		t.Errorf("Get chunks:\n got %+v\nwant %+v", gotChunks, wantChunks)
	}

	// A later state without an error or completion time removes them; an identity attribute the
	// caller leaves empty (created_at) stays.
	next := sampleTask("task-1", 2)
	next.ErrorMessage, next.CompletedAt, next.CreatedAt = "", time.Time{}, time.Time{}
	next.ProcessedRecords = 2000
	if err := c.Put(ctx, next, nil); err != nil {
		t.Fatalf("second Put: %v", err)
	}
	item := rawItem(t, table, "task-1")
	for _, gone := range []string{"error_message", "completed_at"} {
		if v, ok := item[gone]; ok {
			t.Errorf("%s still stored after a state without it: %s", gone, render(v))
		}
	}
	for name, exp := range map[string]string{
		"created_at": render(want["created_at"]), "k8s": render(want["k8s"]), "processed_records": "N(2000)",
		"version": "N(2)", "chunks": render(want["chunks"]),
	} {
		if got := render(item[name]); got != exp {
			t.Errorf("%s = %s, want %s", name, got, exp)
		}
	}
}

func TestPutDefaultsUpdatedAtToNow(t *testing.T) {
	c, _ := newTable(t)
	task := sampleTask("task-now", 1)
	task.UpdatedAt = time.Time{}
	before := time.Now().UTC().Truncate(time.Microsecond)
	if err := c.Put(context.Background(), task, nil); err != nil {
		t.Fatalf("Put: %v", err)
	}
	got, _, err := c.Get(context.Background(), "task-now")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.UpdatedAt.Before(before) || got.UpdatedAt.After(time.Now()) {
		t.Errorf("updated_at = %s, want the time of the Put (after %s)", got.UpdatedAt, before)
	}
}

func TestStaleWritesAreRefused(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	v5 := sampleTask("task-s", 5)
	v5.ProcessedRecords = 500
	if err := c.Put(ctx, v5, map[int]ChunkEntry{0: {Status: "processing", EndRow: 999}}); err != nil {
		t.Fatalf("Put v5: %v", err)
	}
	before := renderMap(rawItem(t, table, "task-s"))
	other := newClient(t, table) // another process: an old leader
	for _, v := range []int64{1, 4, 5} {
		for _, status := range []string{taskstatus.Failed, v5.Status} {
			if v == 5 && status == v5.Status {
				continue // an idempotent re-write, below
			}
			old := sampleTask("task-s", v)
			old.Status, old.ProcessedRecords = status, 1
			err := other.Put(ctx, old, map[int]ChunkEntry{0: {Status: "failed", EndRow: 999}, 1: {Status: "failed", EndRow: 10}})
			if !errors.Is(err, ErrStale) {
				t.Errorf("Put of version %d (%s) over version 5: err = %v, want ErrStale", v, status, err)
			}
		}
		if err := other.MarkCancelled(ctx, "task-s", "0b6c-uid", v, time.Now()); !errors.Is(err, ErrStale) {
			t.Errorf("MarkCancelled of version %d over version 5: err = %v, want ErrStale", v, err)
		}
	}
	if after := renderMap(rawItem(t, table, "task-s")); after != before {
		t.Fatalf("refused writes changed the item:\nbefore %s\n after %s", before, after)
	}
	// A re-write of version 5 with the same status is idempotent and accepted.
	if err := other.Put(ctx, v5, map[int]ChunkEntry{0: {Status: "processing", EndRow: 999}}); err != nil {
		t.Fatalf("re-write of version 5: %v", err)
	}
	if after := renderMap(rawItem(t, table, "task-s")); after != before {
		t.Fatalf("an idempotent re-write changed the item:\nbefore %s\n after %s", before, after)
	}
	v6 := sampleTask("task-s", 6)
	if err := other.Put(ctx, v6, nil); err != nil {
		t.Fatalf("Put v6 over v5: %v", err)
	}
	// A cancellation is a new state; a write of its version with another status cannot undo it.
	if err := other.MarkCancelled(ctx, "task-s", "0b6c-uid", 7, time.Now()); err != nil {
		t.Fatalf("MarkCancelled v7: %v", err)
	}
	v7 := sampleTask("task-s", 7)
	if err := c.Put(ctx, v7, nil); !errors.Is(err, ErrStale) {
		t.Fatalf("Put of version 7 over its cancellation: err = %v, want ErrStale", err)
	}
	if got, _, err := c.Get(ctx, "task-s"); err != nil || got.Status != taskstatus.Cancelled {
		t.Fatalf("after the refused write: %+v, %v; want it still cancelled", got, err)
	}
}

// A write whose later calls failed is completed by a retry at the same version.
func TestRetryCompletesAPartlyAppliedWrite(t *testing.T) {
	c, _ := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-retry", 1)
	task.ChunksTotal = 300
	chunks := map[int]ChunkEntry{}
	for i := 0; i < 300; i++ {
		chunks[i] = ChunkEntry{Status: "completed", StartRow: int64(i), EndRow: int64(i), ProcessedRecords: 1}
	}
	top, err := topLevel(task, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sel, err := selectChunks(task, chunks)
	if err != nil {
		t.Fatal(err)
	}
	calls := planCalls(task.Version, task.Status, task.K8s.UID, top, sel, false)
	if len(calls) < 2 {
		t.Fatalf("want a write of several calls, got %d", len(calls))
	}
	if err := c.run(ctx, "task-retry", calls[:2]); err != nil { // the rest is lost, say to a timeout
		t.Fatalf("first calls: %v", err)
	}
	_, partial, err := c.Get(ctx, "task-retry")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(partial) == 0 || len(partial) >= 300 {
		t.Fatalf("after the first calls the map has %d entries, want some but not all", len(partial))
	}
	if err := c.Put(ctx, task, chunks); err != nil {
		t.Fatalf("retry at the same version: %v", err)
	}
	_, got, err := c.Get(ctx, "task-retry")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(got) != 300 {
		t.Fatalf("after the retry the map has %d entries, want 300", len(got))
	}
}

// Two controllers race: an old leader writing versions 1..60 and a new leader writing 31..90,
// each write spanning two UpdateItem calls. A reader watches the item throughout.
func TestRacingWritersNeverMoveBackwards(t *testing.T) {
	_, table := newTable(t)
	ctx := context.Background()
	const id, perWrite = "task-race", 150
	type outcome struct {
		version    int64
		accepted   bool
		start, end int64
	}
	var (
		seq      atomic.Int64
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
		errs     = make(chan error, 1000)
	)
	write := func(c *Client, from, to int64, status string) {
		defer wg.Done()
		for v := from; v <= to; v++ {
			task := sampleTask(id, v)
			task.Status, task.ChunksTotal, task.ProcessedRecords = status, 2*perWrite, v*7
			chunks := map[int]ChunkEntry{}
			base := int(v%2) * perWrite
			for i := base; i < base+perWrite; i++ {
				// The entry carries the version that wrote it.
				chunks[i] = ChunkEntry{Status: status, StartRow: int64(i) * 10, EndRow: int64(i)*10 + 9, ProcessedRecords: v}
			}
			start := seq.Add(1)
			err := c.Put(ctx, task, chunks)
			end := seq.Add(1)
			if err != nil && !errors.Is(err, ErrStale) {
				errs <- fmt.Errorf("version %d: %w", v, err)
			}
			mu.Lock()
			outcomes = append(outcomes, outcome{version: v, accepted: err == nil, start: start, end: end})
			mu.Unlock()
		}
	}
	done := make(chan struct{})
	var readerErr error
	var reads int
	readerDone := make(chan struct{})
	reader := newClient(t, table)
	go func() { // the reader: the item it sees never goes back and is never a mix of two writes
		defer close(readerDone)
		var last int64
		lastTag := map[string]int64{}
		for {
			select {
			case <-done:
				return
			default:
			}
			task, chunks, err := reader.Get(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				readerErr = err
				return
			}
			reads++
			if task.Version < last {
				readerErr = fmt.Errorf("item went back from version %d to %d", last, task.Version)
				return
			}
			last = task.Version
			if task.ProcessedRecords != task.Version*7 {
				readerErr = fmt.Errorf("version %d holds processed_records %d of another write", task.Version, task.ProcessedRecords)
				return
			}
			for k, e := range chunks {
				if e.ProcessedRecords > task.Version {
					readerErr = fmt.Errorf("item at version %d holds %s written by version %d", task.Version, k, e.ProcessedRecords)
					return
				}
				if e.ProcessedRecords < lastTag[k] {
					readerErr = fmt.Errorf("%s went back from version %d's entry to version %d's", k, lastTag[k], e.ProcessedRecords)
					return
				}
				lastTag[k] = e.ProcessedRecords
			}
		}
	}()
	oldLeader, newLeader := newClient(t, table), newClient(t, table)
	wg.Add(2)
	go write(oldLeader, 1, 60, taskstatus.Processing)
	go write(newLeader, 31, 90, taskstatus.ProcessingChunks)
	wg.Wait()
	close(done)
	<-readerDone
	close(errs)
	for err := range errs {
		t.Errorf("unexpected write error: %v", err)
	}
	if readerErr != nil {
		t.Fatalf("reader: %v", readerErr)
	}
	accepted := 0
	for _, o := range outcomes {
		if o.accepted {
			accepted++
		}
	}
	t.Logf("%d writes (%d accepted), %d reads", len(outcomes), accepted, reads)

	// An accepted write never began after a write of a higher version had been accepted. (Both
	// writers write versions 31..60 with different statuses; of each such pair only the first lands.)
	for _, a := range outcomes {
		for _, b := range outcomes {
			if a.accepted && b.accepted && b.version > a.version && b.end < a.start {
				t.Errorf("version %d was accepted after version %d had been", a.version, b.version)
			}
		}
	}
	final, chunks, err := newClient(t, table).Get(ctx, id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if final.Version != 90 || final.ProcessedRecords != 630 || final.Status != taskstatus.ProcessingChunks {
		t.Errorf("final item: version %d processed %d status %s, want the new leader's version 90 (630, processing_chunks)",
			final.Version, final.ProcessedRecords, final.Status)
	}
	// Version 90 wrote chunks 0..149 whole.
	for i := 0; i < perWrite; i++ {
		if e := chunks[ChunkKey(i)]; e.ProcessedRecords != 90 || e.Status != taskstatus.ProcessingChunks {
			t.Fatalf("%s = %+v, want the entry of version 90", ChunkKey(i), e)
		}
	}
}

// A write spread over several calls is overtaken between its calls by a newer writer: the rest of
// the older write must be refused and leave the newer writer's entries alone.
func TestOvertakenMultiCallWriteStops(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-o", 1)
	task.ChunksTotal = 300
	if err := c.Put(ctx, task, nil); err != nil { // the item and its chunk map exist
		t.Fatalf("Put v1: %v", err)
	}
	entries := func(v int64) map[int]ChunkEntry {
		m := map[int]ChunkEntry{}
		for i := 0; i < 300; i++ {
			m[i] = ChunkEntry{Status: "processing", EndRow: 1, ProcessedRecords: v}
		}
		return m
	}
	// The old writer's version 2, call by call.
	task.Version = 2
	top, err := topLevel(task, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sel, err := selectChunks(task, entries(2))
	if err != nil {
		t.Fatal(err)
	}
	calls := planCalls(2, task.Status, task.K8s.UID, top, sel, true)
	if len(calls) < 3 {
		t.Fatalf("want a write of at least 3 calls, got %d", len(calls))
	}
	if err := c.run(ctx, "task-o", calls[:1]); err != nil {
		t.Fatalf("first call: %v", err)
	}
	// The new writer's version 3 lands whole.
	newer := sampleTask("task-o", 3)
	newer.ChunksTotal = 300
	if err := newClient(t, table).Put(ctx, newer, entries(3)); err != nil {
		t.Fatalf("Put v3: %v", err)
	}
	if err := c.run(ctx, "task-o", calls[1:]); !errors.Is(err, ErrStale) {
		t.Fatalf("rest of the overtaken write: err = %v, want ErrStale", err)
	}
	got, chunks, err := c.Get(ctx, "task-o")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Version != 3 || len(chunks) != 300 {
		t.Fatalf("item at version %d with %d chunks, want version 3 with 300", got.Version, len(chunks))
	}
	for k, e := range chunks {
		if e.ProcessedRecords != 3 {
			t.Fatalf("%s holds version %d's entry, want version 3's", k, e.ProcessedRecords)
		}
	}
}

func TestChunkUpdatesByKey(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-k", 1)
	task.ChunksTotal = 10
	all := map[int]ChunkEntry{}
	for i := 0; i < 10; i++ {
		all[i] = ChunkEntry{Status: "pending", StartRow: int64(i) * 100, EndRow: int64(i)*100 + 99}
	}
	if err := c.Put(ctx, task, all); err != nil {
		t.Fatalf("Put: %v", err)
	}
	// The remembered path: one chunk changes.
	task.Version = 2
	changed := ChunkEntry{Status: "completed", StartRow: 300, EndRow: 399, ProcessedRecords: 100, VectorsUpserted: 100}
	if err := c.Put(ctx, task, map[int]ChunkEntry{3: changed}); err != nil {
		t.Fatalf("Put delta: %v", err)
	}
	all[3] = changed
	// A fresh process (nothing remembered) writes another chunk; its if_not_exists must not wipe
	// the map.
	task.Version = 3
	failed := ChunkEntry{Status: "failed", StartRow: 700, EndRow: 799, ErrorMessage: "PermanentError"}
	if err := newClient(t, table).Put(ctx, task, map[int]ChunkEntry{7: failed}); err != nil {
		t.Fatalf("Put from a fresh client: %v", err)
	}
	all[7] = failed
	// A write without chunks leaves them alone.
	task.Version = 4
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatalf("Put without chunks: %v", err)
	}
	_, got, err := c.Get(ctx, "task-k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	want := map[string]ChunkEntry{}
	for i, e := range all {
		want[ChunkKey(i)] = e
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("chunks:\n got %+v\nwant %+v", got, want)
	}

	// The item vanishes behind the client's back (deleted by hand, or a TTL): the client that
	// remembers its chunk map must still write it, map included.
	if _, err := dyn.Client().DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key("task-k")}); err != nil {
		t.Fatalf("DeleteItem: %v", err)
	}
	task.Version = 5
	if err := c.Put(ctx, task, map[int]ChunkEntry{3: changed}); err != nil {
		t.Fatalf("Put after the item was deleted: %v", err)
	}
	_, got, err = c.Get(ctx, "task-k")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(got, map[string]ChunkEntry{"chunk_0003": changed}) {
		t.Fatalf("chunks after re-creation = %+v", got)
	}
}

func TestChunkBoundsKeepTheItemSmall(t *testing.T) {
	ctx := context.Background()
	// The longest message, in multi-byte runes so cutting must respect UTF-8.
	long := strings.Repeat("é", 400)
	entry := func(i int, status string) ChunkEntry {
		return ChunkEntry{Status: status, StartRow: int64(i) * 1_000_000, EndRow: int64(i)*1_000_000 + 999_999,
			ProcessedRecords: 999_999, FailedRecords: 999_999, VectorsUpserted: 999_999, ErrorMessage: long}
	}
	checkEntries := func(t *testing.T, chunks map[string]ChunkEntry) {
		for k, e := range chunks {
			if len(e.ErrorMessage) > MaxChunkMessageBytes || !utf8.ValidString(e.ErrorMessage) || !strings.HasPrefix(long, e.ErrorMessage) {
				t.Fatalf("%s message is %d bytes (valid UTF-8: %v), want a prefix of at most %d bytes", k, len(e.ErrorMessage), utf8.ValidString(e.ErrorMessage), MaxChunkMessageBytes)
			}
		}
	}

	t.Run("5000 chunks keep failed ones only, at most 1000", func(t *testing.T) {
		c, table := newTable(t)
		task := sampleTask("task-5000", 1)
		task.ErrorMessage = strings.Repeat("x", 10_000)
		task.ChunksTotal, task.ChunksFailed = 5000, 1000
		chunks := map[int]ChunkEntry{}
		wantKeys := map[string]bool{}
		for i := 0; i < 5000; i++ {
			status := "completed"
			if i%5 == 2 { // 1000 failed chunks spread over the file
				status = "failed"
				wantKeys[ChunkKey(i)] = true
			}
			chunks[i] = entry(i, status)
		}
		if err := c.Put(ctx, task, chunks); err != nil {
			t.Fatalf("Put: %v", err)
		}
		// One more chunk fails: 1001 failed is past the bound, so the map does not grow.
		task.Version, task.ChunksFailed = 2, 1001
		if err := c.Put(ctx, task, map[int]ChunkEntry{4000: entry(4000, "failed")}); err != nil {
			t.Fatalf("second Put: %v", err)
		}
		got, gotChunks, err := c.Get(ctx, "task-5000")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if len(gotChunks) != len(wantKeys) {
			t.Fatalf("chunk map has %d entries, want the %d failed ones", len(gotChunks), len(wantKeys))
		}
		for k, e := range gotChunks {
			if !wantKeys[k] || e.Status != "failed" {
				t.Fatalf("unexpected entry %s (%s)", k, e.Status)
			}
		}
		checkEntries(t, gotChunks)
		if len(got.ErrorMessage) != MaxErrorMessageBytes {
			t.Errorf("error_message is %d bytes, want it cut to %d", len(got.ErrorMessage), MaxErrorMessageBytes)
		}
		size := itemSize(rawItem(t, table, "task-5000"))
		t.Logf("item size with %d failed chunk entries: %d bytes", len(gotChunks), size)
		if size >= 350*1024 {
			t.Fatalf("item is %d bytes, want < 350 KB", size)
		}
	})

	t.Run("1000 chunks are kept whole", func(t *testing.T) {
		c, table := newTable(t)
		task := sampleTask("task-1000", 1)
		task.ChunksTotal, task.ChunksFailed = 1000, 1000
		chunks := map[int]ChunkEntry{}
		for i := 0; i < 1000; i++ {
			chunks[i] = entry(i, "failed")
		}
		chunks[10] = entry(10, "completed")
		if err := c.Put(ctx, task, chunks); err != nil {
			t.Fatalf("Put: %v", err)
		}
		_, gotChunks, err := c.Get(ctx, "task-1000")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if len(gotChunks) != 1000 || gotChunks["chunk_0010"].Status != "completed" || gotChunks["chunk_0999"].Status != "failed" {
			t.Fatalf("chunk map has %d entries (chunk_0010 %q), want all 1000", len(gotChunks), gotChunks["chunk_0010"].Status)
		}
		checkEntries(t, gotChunks)
		size := itemSize(rawItem(t, table, "task-1000"))
		t.Logf("item size with 1000 chunk entries: %d bytes", size)
		if size >= 350*1024 {
			t.Fatalf("item is %d bytes, want < 350 KB", size)
		}
	})
}

// planCalls must respect DynamoDB's per-expression limits however many chunks a write carries, and
// place every chunk exactly once.
func TestPlanCallsRespectLimits(t *testing.T) {
	task := sampleTask("task-plan", 7)
	task.ChunksTotal = 1000
	top, err := topLevel(task, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	chunks := map[int]ChunkEntry{}
	for i := 0; i < 1000; i++ {
		chunks[i] = ChunkEntry{Status: "completed", EndRow: 1}
	}
	sel, err := selectChunks(task, chunks)
	if err != nil {
		t.Fatal(err)
	}
	for _, exists := range []bool{false, true} {
		calls := planCalls(task.Version, task.Status, task.K8s.UID, top, sel, exists)
		seen := map[string]int{}
		for i, cl := range calls {
			if len(cl.update) > 4096 {
				t.Errorf("exists=%v call %d: update expression is %d bytes", exists, i, len(cl.update))
			}
			if actions := strings.Count(cl.update, "="); actions > 300 {
				t.Errorf("exists=%v call %d: %d actions", exists, i, actions)
			}
			wantCond := condContinue
			if i == 0 {
				wantCond = condClaim
			}
			if cl.condition != wantCond {
				t.Errorf("exists=%v call %d: condition %q, want %q", exists, i, cl.condition, wantCond)
			}
			for p, name := range cl.names {
				if !strings.Contains(cl.update+" "+cl.condition, p) {
					t.Errorf("call %d: name %s (%s) unused", i, p, name)
				}
				if strings.HasPrefix(name, "chunk_") {
					seen[name]++
				}
			}
			for p := range cl.values {
				if !strings.Contains(cl.update+" "+cl.condition, p) {
					t.Errorf("call %d: value %s unused", i, p)
				}
			}
		}
		if !exists && strings.Contains(calls[0].update, ".") {
			t.Errorf("first call sets nested chunk paths while the chunk map may be missing: %s", calls[0].update)
		}
		if len(seen) != 1000 {
			t.Errorf("exists=%v: %d chunk keys placed, want 1000", exists, len(seen))
		}
		for k, times := range seen {
			if times != 1 {
				t.Errorf("%s placed %d times", k, times)
			}
		}
		t.Logf("exists=%v: %d calls", exists, len(calls))
	}
}

func TestMarkCancelled(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	running := sampleTask("task-run", 3)
	running.CompletedAt = time.Time{}
	if err := c.Put(ctx, running, map[int]ChunkEntry{1: {Status: "processing", StartRow: 1000, EndRow: 1999}}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	at := time.Date(2025, 1, 10, 13, 0, 0, 0, time.UTC)
	if err := c.MarkCancelled(ctx, "task-run", "0b6c-uid", 4, at); err != nil {
		t.Fatalf("MarkCancelled: %v", err)
	}
	item := rawItem(t, table, "task-run")
	for name, exp := range map[string]string{
		"status": `S("cancelled")`, "completed_at": `S("2025-01-10T13:00:00.000000Z")`, "updated_at": `S("2025-01-10T13:00:00.000000Z")`,
		"chunks_processing": "N(0)", "version": "N(4)", "processed_records": "N(1500)",
	} {
		if got := render(item[name]); got != exp {
			t.Errorf("%s = %s, want %s", name, got, exp)
		}
	}
	if _, ok := item["chunks"].(*types.AttributeValueMemberM).Value["chunk_0001"]; !ok {
		t.Error("MarkCancelled lost the chunk map")
	}
	// Again, newer: the task is finished now.
	if err := c.MarkCancelled(ctx, "task-run", "0b6c-uid", 5, at); !errors.Is(err, ErrFinished) {
		t.Errorf("MarkCancelled of a cancelled task: err = %v, want ErrFinished", err)
	}

	done := sampleTask("task-done", 1)
	done.Status = taskstatus.Completed
	if err := c.Put(ctx, done, nil); err != nil {
		t.Fatalf("Put: %v", err)
	}
	before := renderMap(rawItem(t, table, "task-done"))
	if err := c.MarkCancelled(ctx, "task-done", "0b6c-uid", 2, at); !errors.Is(err, ErrFinished) {
		t.Errorf("MarkCancelled of a completed task: err = %v, want ErrFinished", err)
	}
	if after := renderMap(rawItem(t, table, "task-done")); after != before {
		t.Errorf("MarkCancelled changed a completed task:\nbefore %s\n after %s", before, after)
	}
	if err := c.MarkCancelled(ctx, "task-absent", "0b6c-uid", 1, at); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkCancelled of an absent task: err = %v, want ErrNotFound", err)
	}
	if item := rawItem(t, table, "task-absent"); len(item) != 0 {
		t.Errorf("MarkCancelled created an item: %s", renderMap(item))
	}
}

// Tenants choose spec.taskID freely: an ingestion in namespace B that reuses A's task id and table
// must not change A's item, by any write or a cancellation, at any version.
func TestAnotherIngestionCannotChangeTheItem(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	a := sampleTask("shared-id", 3)
	a.CompletedAt = time.Time{}
	a.Status = taskstatus.ProcessingChunks
	if err := c.Put(ctx, a, map[int]ChunkEntry{0: {Status: "completed", EndRow: 999, ProcessedRecords: 1000}}); err != nil {
		t.Fatalf("Put of A: %v", err)
	}
	before := renderMap(rawItem(t, table, "shared-id"))

	b := newClient(t, table) // tenant B's ingestion, mirrored by the same controller
	for _, v := range []int64{1, 3, 4, 1000} {
		tb := sampleTask("shared-id", v)
		tb.Status = taskstatus.ProcessingChunks
		tb.K8s = K8sRef{Namespace: "team-b", Name: "mine", UID: "b-uid"}
		tb.ProcessedRecords = 7
		err := b.Put(ctx, tb, map[int]ChunkEntry{0: {Status: "failed", EndRow: 999, ErrorMessage: "overwritten"}})
		if !errors.Is(err, ErrOwnedElsewhere) {
			t.Errorf("B's Put at version %d: err = %v, want ErrOwnedElsewhere", v, err)
		}
		if errors.Is(err, ErrStale) {
			t.Errorf("B's Put at version %d is reported stale, which the tracker treats as done: %v", v, err)
		}
		if err := b.MarkCancelled(ctx, "shared-id", "b-uid", v, time.Now()); !errors.Is(err, ErrOwnedElsewhere) {
			t.Errorf("B's MarkCancelled at version %d: err = %v, want ErrOwnedElsewhere", v, err)
		}
	}
	if after := renderMap(rawItem(t, table, "shared-id")); after != before {
		t.Fatalf("B's writes changed A's item:\nbefore %s\n after %s", before, after)
	}
	// A multi-call write whose later calls would follow B's first: B never gets the first one,
	// but check the continuation condition on its own too.
	top, err := topLevel(a, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range planCalls(4, a.Status, "b-uid", top, []chunkUpdate{{key: ChunkKey(0), value: s("x")}}, true) {
		cl.condition = condContinue
		delete(cl.names, "#id") // only the claim names the key
		_, err := dyn.Client().UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: aws.String(table), Key: key("shared-id"), UpdateExpression: aws.String(cl.update),
			ConditionExpression: aws.String(cl.condition), ExpressionAttributeNames: cl.names, ExpressionAttributeValues: cl.values,
		})
		var ccf *types.ConditionalCheckFailedException
		if !errors.As(err, &ccf) {
			t.Errorf("a continuation call with another owner: err = %v, want ConditionalCheckFailed", err)
		}
	}

	// An item without an owner (written by something else) is nobody's to take over.
	if _, err := dyn.Client().PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: map[string]types.AttributeValue{
		"task_id": s("legacy-id"), "status": s("completed"), "version": n("1"),
	}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, sampleTask("legacy-id", 2), nil); !errors.Is(err, ErrOwnedElsewhere) {
		t.Errorf("Put over an item without k8s.uid: err = %v, want ErrOwnedElsewhere", err)
	}

	// A itself still writes, and cancels.
	a.Version = 4
	if err := c.Put(ctx, a, nil); err != nil {
		t.Fatalf("A's own next write: %v", err)
	}
	if err := c.MarkCancelled(ctx, "shared-id", a.K8s.UID, 5, time.Now()); err != nil {
		t.Fatalf("A's own cancellation: %v", err)
	}
}

func TestGetNotFound(t *testing.T) {
	c, _ := newTable(t)
	if _, _, err := c.Get(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an absent task: err = %v, want ErrNotFound", err)
	}
}

func TestPutRejectsInvalidInput(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	cases := map[string]struct {
		mutate func(*Task)
		chunks map[int]ChunkEntry
	}{
		"empty task id":      {mutate: func(t *Task) { t.TaskID = "" }},
		"unknown status":     {mutate: func(t *Task) { t.Status = "running" }},
		"unknown task type":  {mutate: func(t *Task) { t.TaskType = "csv" }},
		"zero version":       {mutate: func(t *Task) { t.Version = 0 }},
		"no owner uid":       {mutate: func(t *Task) { t.K8s.UID = "" }},
		"negative count":     {mutate: func(t *Task) { t.FailedRecords = -1 }},
		"progress over 100":  {mutate: func(t *Task) { t.ProgressPercentage = 101 }},
		"chunk out of range": {chunks: map[int]ChunkEntry{3: {Status: "pending"}}},
		"negative chunk":     {chunks: map[int]ChunkEntry{-1: {Status: "pending"}}},
		"chunk status":       {chunks: map[int]ChunkEntry{0: {Status: "done"}}},
		"chunk rows":         {chunks: map[int]ChunkEntry{0: {Status: "pending", StartRow: 10, EndRow: 5}}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := sampleTask("task-invalid", 1)
			if tc.mutate != nil {
				tc.mutate(&task)
			}
			err := c.Put(ctx, task, tc.chunks)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if item := rawItem(t, table, "task-invalid"); len(item) != 0 {
				t.Fatalf("an invalid Put wrote %s", renderMap(item))
			}
		})
	}
}

func TestList(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	put := func(id, status string, createdAt time.Time) {
		task := sampleTask(id, 1)
		task.Status, task.CreatedAt, task.ChunksTotal = status, createdAt, 2
		if err := c.Put(ctx, task, map[int]ChunkEntry{0: {Status: "completed", EndRow: 9}}); err != nil {
			t.Fatalf("Put %s: %v", id, err)
		}
	}
	put("a", taskstatus.Completed, created.Add(1*time.Hour))
	put("b", taskstatus.Failed, created.Add(2*time.Hour))
	put("c", taskstatus.Completed, created.Add(3*time.Hour))
	put("d", taskstatus.Completed, created.Add(3*time.Hour)) // same time as c: task id breaks the tie
	// An item the old system wrote: zone-less times, no version, no k8s.
	legacy := map[string]types.AttributeValue{
		"task_id": s("legacy"), "status": s("completed"), "task_type": s("s3_csv_processing"),
		"parameters":    m(map[string]types.AttributeValue{"data_source": s("s3_csv"), "s3_key": s("exports/1.csv"), "question_id": n("1")}),
		"total_records": n("10"), "processed_records": n("10"), "created_at": s("2024-12-01T08:00:00.250000"),
		"completed_at": s("2024-12-01T08:05:00"),
	}
	// An item that is not a task at all is skipped, not fatal.
	junk := map[string]types.AttributeValue{"task_id": s("junk"), "status": s("completed"), "total_records": s("many")}
	for _, item := range []map[string]types.AttributeValue{legacy, junk} {
		if _, err := dyn.Client().PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: item}); err != nil {
			t.Fatalf("PutItem: %v", err)
		}
	}
	ids := func(tasks []Task) string {
		var out []string
		for _, t := range tasks {
			out = append(out, t.TaskID)
		}
		return strings.Join(out, ",")
	}
	// pages reads every page of q, Need at a time, following the horizon; it checks what each
	// page read stays within Need per task type.
	pages := func(q PageQuery) ([]Task, int) {
		var out []Task
		n := 0
		for {
			p, err := c.ListPage(ctx, q)
			if err != nil {
				t.Fatalf("ListPage(%+v): %v", q, err)
			}
			n++
			// Items created in one microsecond (c and d) are read together.
			if p.ItemsRead > (q.Need+2)*len(TaskTypes) {
				t.Errorf("a page of %d read %d items", q.Need, p.ItemsRead)
			}
			out = append(out, p.Tasks...)
			if p.Horizon == nil {
				return out, n
			}
			q.After = p.Horizon
			if n > 20 {
				t.Fatal("no end of pages")
			}
		}
	}
	all, _ := pages(PageQuery{Need: 10})
	if got := ids(all); got != "c,d,b,a,legacy" {
		t.Errorf("ListPage() = %s, want c,d,b,a,legacy (junk has no task_type, so it is in no index)", got)
	}
	for _, task := range all {
		if task.TaskID == "legacy" {
			wantCreated := time.Date(2024, 12, 1, 8, 0, 0, 250000000, time.UTC)
			if !task.CreatedAt.Equal(wantCreated) || task.Parameters.S3Key != "exports/1.csv" || task.Version != 0 {
				t.Errorf("legacy task decoded as %+v", task)
			}
		}
	}
	for need := 1; need <= 3; need++ {
		got, n := pages(PageQuery{Need: need})
		if ids(got) != "c,d,b,a,legacy" {
			t.Errorf("pages of %d: %s in %d pages, want c,d,b,a,legacy", need, ids(got), n)
		}
	}
	completed, _ := pages(PageQuery{StatusFilter: taskstatus.Completed, Need: 2})
	if got := ids(completed); got != "c,d,a,legacy" {
		t.Errorf("completed, by 2 = %s, want c,d,a,legacy", got)
	}
	failed, _ := pages(PageQuery{StatusFilter: taskstatus.Failed, TaskType: TaskTypeMetabase, Need: 10})
	if got := ids(failed); got != "b" {
		t.Errorf("failed = %s, want b", got)
	}
	if got, _ := pages(PageQuery{TaskType: TaskTypeS3CSV, Need: 10}); ids(got) != "legacy" {
		t.Errorf("s3 tasks: %s, want legacy", ids(got))
	}
	if _, err := c.ListPage(ctx, PageQuery{StatusFilter: "done", Need: 10}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ListPage with an unknown status: err = %v, want ErrInvalid", err)
	}
}

// A table without the index says so: the REST API can then answer from the cluster and log why.
func TestListPageWithoutTheIndex(t *testing.T) {
	ctx := context.Background()
	table := "no-index-" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
	if _, err := dyn.Client().CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("task_id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("task_id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = dyn.Client().DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(table)}) })
	c := NewFromAPI(dyn.Client(), table)
	if _, err := c.ListPage(ctx, PageQuery{Need: 5}); !errors.Is(err, ErrNoIndex) {
		t.Errorf("ListPage without the index: %v, want ErrNoIndex", err)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	task := sampleTask("task-u", 1)

	t.Run("missing table", func(t *testing.T) {
		c := newClient(t, "no-such-table")
		if err := c.Put(ctx, task, nil); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Put: err = %v, want ErrUnavailable", err)
		}
		if _, _, err := c.Get(ctx, "task-u"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Get: err = %v, want ErrUnavailable", err)
		}
		if _, err := c.ListPage(ctx, PageQuery{Need: 1}); !errors.Is(err, ErrUnavailable) {
			t.Errorf("ListPage: err = %v, want ErrUnavailable", err)
		}
		if err := c.CheckTable(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("CheckTable: err = %v, want ErrUnavailable", err)
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		_, table := newTable(t)
		noCreds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{}, errors.New("no credential source configured")
		})
		c, err := New(ctx, Config{Table: table, Endpoint: dyn.Endpoint, Credentials: noCreds})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if err := c.Put(ctx, task, nil); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Put: err = %v, want ErrUnavailable", err)
		}
		if err := c.CheckTable(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("CheckTable: err = %v, want ErrUnavailable", err)
		}
	})

	t.Run("table with another key", func(t *testing.T) {
		_, err := dyn.Client().CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String("wrong-key"),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
			BillingMode:          types.BillingModePayPerRequest,
		})
		if err != nil {
			t.Fatalf("CreateTable: %v", err)
		}
		if err := EnsureTable(ctx, dyn.Client(), "wrong-key"); err != nil { // waits until ACTIVE
			t.Fatalf("EnsureTable: %v", err)
		}
		if err := newClient(t, "wrong-key").CheckTable(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("CheckTable: err = %v, want ErrUnavailable", err)
		}
	})

	t.Run("healthy table", func(t *testing.T) {
		c, _ := newTable(t)
		if err := c.CheckTable(ctx); err != nil {
			t.Errorf("CheckTable: %v", err)
		}
		// EnsureTable on an existing table is a no-op.
		if err := EnsureTable(ctx, dyn.Client(), c.Table()); err != nil {
			t.Errorf("EnsureTable again: %v", err)
		}
	})
}

func TestTruncateKeepsUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"hello", 10, "hello"},
		{"hello", 3, "hel"},
		{"héllo", 2, "h"}, // é is two bytes; cutting inside it drops it
		{"日本語", 4, "日"},
		{"日本語", 6, "日本"},
	} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestDeletedRecords: deleteMissing's count is stored as deleted_records once there is one (an
// item without it is what the old system wrote and reads as 0), and Get and List read it back.
func TestDeletedRecords(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-del", 1)
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	if v, ok := rawItem(t, table, "task-del")["deleted_records"]; ok {
		t.Fatalf("deleted_records stored before anything was deleted: %s", render(v))
	}
	task.Version, task.DeletedRecords = 2, 500
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	if got := render(rawItem(t, table, "task-del")["deleted_records"]); got != "N(500)" {
		t.Fatalf("deleted_records = %s, want N(500)", got)
	}
	got, _, err := c.Get(ctx, "task-del")
	if err != nil || got.DeletedRecords != 500 {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	list, err := c.ListPage(ctx, PageQuery{Need: 10})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].DeletedRecords != 500 {
		t.Fatalf("ListPage: %+v, %v", list, err)
	}
	task.Version, task.DeletedRecords = 3, -1
	if err := c.Put(ctx, task, nil); err == nil || !strings.Contains(err.Error(), "deleted_records is negative") {
		t.Fatalf("a negative count was accepted: %v", err)
	}
}

// With a retention, every write sets expires_at (a Number, as DynamoDB TTL needs) that long after
// the task completed, or after the write while it runs; a cancellation of a deleted ingestion
// too. Without one, no expires_at is written.
func TestRetentionSetsExpiresAt(t *testing.T) {
	ctx := context.Background()
	c, table := newTable(t)
	const keep = 48 * time.Hour
	c.WithRetention(keep)

	done := sampleTask("task-ret-done", 1)
	done.Status, done.StartedAt, done.CompletedAt = taskstatus.Completed, created.Add(time.Minute), created.Add(time.Hour)
	if err := c.Put(ctx, done, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := render(rawItem(t, table, "task-ret-done")[AttrExpiresAt]), fmt.Sprintf("N(%d)", created.Add(time.Hour+keep).Unix()); got != want {
		t.Errorf("finished task: expires_at %s, want %s", got, want)
	}

	running := sampleTask("task-ret-run", 1)
	running.CompletedAt, running.UpdatedAt = time.Time{}, created.Add(2*time.Hour)
	if err := c.Put(ctx, running, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := render(rawItem(t, table, "task-ret-run")[AttrExpiresAt]), fmt.Sprintf("N(%d)", created.Add(2*time.Hour+keep).Unix()); got != want {
		t.Errorf("running task: expires_at %s, want %s (its last write + retention)", got, want)
	}
	at := time.Now().Add(time.Minute).Truncate(time.Second)
	if err := c.MarkCancelled(ctx, "task-ret-run", running.K8s.UID, 2, at); err != nil {
		t.Fatal(err)
	}
	if got, want := render(rawItem(t, table, "task-ret-run")[AttrExpiresAt]), fmt.Sprintf("N(%d)", at.Add(keep).Unix()); got != want {
		t.Errorf("cancelled task: expires_at %s, want %s", got, want)
	}

	c.WithRetention(0)
	forever := sampleTask("task-ret-none", 1)
	if err := c.Put(ctx, forever, nil); err != nil {
		t.Fatal(err)
	}
	if v, ok := rawItem(t, table, "task-ret-none")[AttrExpiresAt]; ok {
		t.Errorf("without a retention: expires_at %s", render(v))
	}
}

// TestBatchCounts: a batch-mode task's batch counts are stored as the map batch once there are
// some (an online task's item has none, as the old system's), Get and List read them back, and
// a write without them (a cancellation) leaves them.
func TestBatchCounts(t *testing.T) {
	c, table := newTable(t)
	ctx := context.Background()
	task := sampleTask("task-batch", 1)
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	if v, ok := rawItem(t, table, "task-batch")["batch"]; ok {
		t.Fatalf("batch stored for a task without batches: %s", render(v))
	}
	want := BatchCounts{Batches: 4, Completed: 2, Expired: 1, Failed: 1, Lines: 3000, LinesDone: 1998, LinesFailed: 1002}
	task.Version, task.Batch = 2, &want
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	raw := render(rawItem(t, table, "task-batch")["batch"])
	for _, part := range []string{"batches", "completed", "expired", "lines_done", "lines_failed"} {
		if !strings.Contains(raw, part) {
			t.Errorf("stored batch %s lacks %s", raw, part)
		}
	}
	got, _, err := c.Get(ctx, "task-batch")
	if err != nil || got.Batch == nil || *got.Batch != want {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	list, err := c.ListPage(ctx, PageQuery{Need: 10})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].Batch == nil || *list.Tasks[0].Batch != want {
		t.Fatalf("ListPage: %+v, %v", list, err)
	}
	task.Version, task.Batch, task.Status = 3, nil, "cancelled"
	if err := c.Put(ctx, task, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Get(ctx, "task-batch"); err != nil || got.Batch == nil || *got.Batch != want {
		t.Fatalf("after a write without counts: %+v, %v", got, err)
	}
}
