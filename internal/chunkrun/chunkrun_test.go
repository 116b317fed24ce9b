package chunkrun_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/exitcode"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// checkIngested asserts that every row became exactly one vector with id 239.<id>, in the
// namespace its record_type names (v2 when empty), holding the embedding of the expected
// sanitized text and the metadata of DESIGN §6.
func checkIngested(t *testing.T, e *env, rows []legacyRow, fixed map[string]any, rowsPerChunk int) {
	t.Helper()
	if n := e.index.Count(); n != len(rows) {
		t.Fatalf("index holds %d vectors, want %d", n, len(rows))
	}
	byNS := map[string]map[string]fakeVector{}
	for _, ns := range e.index.Namespaces() {
		byNS[ns] = map[string]fakeVector{}
		for id, v := range e.index.Vectors(ns) {
			byNS[ns][id] = fakeVector{values: v.Values, metadata: v.Metadata}
		}
	}
	for i, r := range rows {
		ns := r.recordType()
		if ns == "" {
			ns = "v2"
		}
		id := "239." + r.id()
		v, ok := byNS[ns][id]
		if !ok {
			t.Fatalf("row %d: no vector %s in namespace %q", i, id, ns)
		}
		want := map[string]any{
			"title": r.fields[3], "price": r.fields[4], "city": r.fields[5], "created_at": r.fields[6], "is_active": r.fields[7],
			"text": r.wantText, "chunk_id": float64(i / rowsPerChunk), "record_index": float64(i), "row_id": r.id(),
			"processed_at": "2025-01-10T22:45:23Z",
		}
		for k, v := range fixed {
			want[k] = v
		}
		if r.recordType() != "" {
			want["record_type"] = r.recordType()
		}
		if !reflect.DeepEqual(v.metadata, want) {
			t.Fatalf("row %d (%s) metadata\n got %v\nwant %v", i, id, v.metadata, want)
		}
		if wantVec := fakeopenai.Vector(r.wantText, dims); !slices.Equal(v.values, wantVec) {
			t.Fatalf("row %d (%s): the vector is not the embedding of %q", i, id, r.wantText)
		}
	}
}

// s3Fixed is the metadata every record of an S3 source carries besides its columns.
func s3Fixed(key string, ing worker.Ingestion) map[string]any {
	return map[string]any{"source": "s3_csv", "s3_key": key, "task_id": ing.TaskID, "question_id": 239.0}
}

type fakeVector struct {
	values   []float32
	metadata map[string]any
}

func TestLegacyFileTenThousandRows(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(10000, 239)
	key := e.prefix + "exports/239-200-300.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	// A budget that does not make the test wait (the storm test covers waiting for it).
	ing.Spec.Embedding.TokensPerMinute = 10000000

	plan := e.plan(ing)
	if plan.TotalRows != 10000 || plan.Chunks() != 10 || plan.Compression != "none" || !slices.Equal(plan.Header, legacyHeader) {
		t.Fatalf("plan: %d rows, %d chunks, compression %q, header %q", plan.TotalRows, plan.Chunks(), plan.Compression, plan.Header)
	}
	results, err := e.runChunks(ing, plan, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Role != worker.RoleChunk || r.Chunk != i || r.RowsRead != 1000 || r.Processed != 1000 || r.VectorsUpserted != 1000 || r.Failed != 0 {
			t.Fatalf("chunk %d result %+v", i, r)
		}
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 1000)

	// The namespaces are exactly the record types (v2 for the rows without one).
	want := map[string]int{}
	for _, r := range rows {
		ns := r.recordType()
		if ns == "" {
			ns = "v2"
		}
		want[ns]++
	}
	for ns, n := range want {
		if got := len(e.index.Vectors(ns)); got != n {
			t.Errorf("namespace %q holds %d vectors, want %d", ns, got, n)
		}
	}

	// Tokens: what the chunks report is what the API billed, and the plan's estimate (exact for
	// the first 2,000 texts, sampled after) is close to it.
	billed := e.openai.Stats().Tokens
	if got := sum(results, func(r worker.Result) int64 { return r.Tokens }); got != billed {
		t.Errorf("chunks report %d tokens, the API billed %d", got, billed)
	}
	if diff := math.Abs(float64(plan.EstimatedTokens-billed)) / float64(billed); diff > 0.05 {
		t.Errorf("plan estimated %d tokens, %d were billed (off by %.1f%%)", plan.EstimatedTokens, billed, 100*diff)
	}
	if e.openai.Stats().RateLimited != 0 {
		t.Errorf("the budgets split across 3 chunks still drew %d 429s", e.openai.Stats().RateLimited)
	}
	// No dead letter without failed rows.
	if _, err := e.get(ing.Spec.DeadLetter.KeyPrefix + ing.ObjectID() + "/chunk-0000.csv"); err == nil {
		t.Error("a dead-letter object was written although no row failed")
	}
}

func TestLegacyHandRowsSanitized(t *testing.T) {
	// The hand-written expectations on their own, so a failure points at the sanitizer.
	e := newEnv(t, fakeopenai.Options{})
	rows := handRows()
	key := e.prefix + "hand.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Chunking.RowsPerChunk = 4
	plan := e.plan(ing)
	if _, err := e.runChunks(ing, plan, 2); err != nil {
		t.Fatal(err)
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 4)
}

// A gzip object is inflated once by the planner into a staged plain copy; chunks read that copy
// with ranged GETs (pinned to its ETag) and the metadata still names the source object.
func TestGzipChunksReadTheStagedCopy(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(1200, 7)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(csvBytes(t, legacyCSV(rows))); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	key := e.prefix + "exports/239.csv" // no .gz suffix: auto looks at the bytes
	e.put(key, gz.Bytes())
	ing := e.ingestion(key)
	ing.Spec.Chunking.RowsPerChunk = 250
	plan := e.plan(ing)
	if plan.Compression != "gzip" || plan.Chunks() != 5 || plan.TotalRows != 1200 || plan.Staged == nil {
		t.Fatalf("plan: compression %q, %d chunks, %d rows, staged %+v", plan.Compression, plan.Chunks(), plan.TotalRows, plan.Staged)
	}
	if plan.Offsets[len(plan.Offsets)-1] != plan.Staged.SizeBytes || plan.Staged.SizeBytes <= plan.SizeBytes {
		t.Fatalf("offsets end at %d; staged copy %d bytes, source %d", plan.Offsets[len(plan.Offsets)-1], plan.Staged.SizeBytes, plan.SizeBytes)
	}
	args, _ := plan.Chunk(3)
	if flags := args.Flags(); !slices.Contains(flags, "--compression=none") || !slices.Contains(flags, "--key="+plan.Staged.Key) {
		t.Fatalf("chunk flags %q do not name the staged copy", flags)
	}
	if _, err := e.runChunks(ing, plan, 2); err != nil {
		t.Fatal(err)
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 250)
}

func TestMalformedRowsAreDeadLetteredAndTheRestUpserted(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	good := genLegacy(40, 11)
	big := strings.Repeat("x", 41*1024)
	type bad struct {
		line   string // raw CSV line
		reason string
	}
	bads := []bad{
		{"2001,only three,lot\n", "wrong_field_count"},
		{",no id here,lot,t,1,Reno,2025-01-01,true\n", "missing_id"},
		{"2003,<br/><p> </p>,lot,t,1,Reno,2025-01-01,true\n", "empty_text"},
		{"2004,fine text,lot," + big + ",1,Reno,2025-01-01,true\n", "metadata_too_large"},
		{`2005,"closed"then text,lot,t,1,Reno,2025-01-01,true` + "\n", "unbalanced_quote"},
	}
	var b bytes.Buffer
	b.Write(csvBytes(t, legacyCSV(good[:20])))
	for _, x := range bads {
		b.WriteString(x.line)
	}
	b.Write(csvBytes(t, legacyCSV(good[20:]))[len(strings.Join(legacyHeader, ","))+1:])
	// An unclosed quote in the last row runs to the end of the file: one more failed row.
	b.WriteString("2006,\"never closed,lot,t,1,Reno,2025-01-01,true\n")
	bads = append(bads, bad{reason: "unbalanced_quote"})

	key := e.prefix + "malformed.csv"
	e.put(key, b.Bytes())
	ing := e.ingestion(key)
	ing.Spec.Chunking.RowsPerChunk = 1000
	plan := e.plan(ing)
	if plan.TotalRows != int64(len(good)+len(bads)) {
		t.Fatalf("plan counts %d rows, want %d", plan.TotalRows, len(good)+len(bads))
	}
	results, err := e.runChunks(ing, plan, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := results[0]
	if r.Failed != int64(len(bads)) || r.Processed != int64(len(good)) || r.RowsRead != plan.TotalRows {
		t.Fatalf("result %+v: want %d failed, %d processed", r, len(bads), len(good))
	}
	if n := e.index.Count(); n != len(good) {
		t.Fatalf("index holds %d vectors, want %d", n, len(good))
	}
	if len(r.FailedSamples) != worker.MaxSamples {
		t.Fatalf("%d failed samples, want %d", len(r.FailedSamples), worker.MaxSamples)
	}
	if len(r.Encode()) > worker.MaxMessageBytes {
		t.Fatalf("result encodes to %d bytes", len(r.Encode()))
	}

	wantKey := ing.Spec.DeadLetter.KeyPrefix + ing.ObjectID() + "/chunk-0000.csv"
	if r.DeadLetterKey != wantKey {
		t.Fatalf("dead letter key %q, want %q", r.DeadLetterKey, wantKey)
	}
	data, err := e.get(wantKey)
	if err != nil {
		t.Fatalf("dead letter object: %v", err)
	}
	dl := readCSV(t, data)
	if !slices.Equal(dl[0], append(slices.Clone(legacyHeader), "_row", "_reason", "_detail")) {
		t.Fatalf("dead letter header %q", dl[0])
	}
	got := map[string]string{} // row number → reason
	for _, rec := range dl[1:] {
		got[rec[len(rec)-3]] = rec[len(rec)-2]
		if rec[len(rec)-1] == "" {
			t.Errorf("dead letter row %q has no detail", rec)
		}
	}
	want := map[string]string{}
	for i, x := range bads[:5] {
		want[strconv.Itoa(20+i)] = x.reason
	}
	want[strconv.Itoa(len(good)+5)] = "unbalanced_quote"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("dead-lettered rows %v, want %v", got, want)
	}
	// The original fields are kept: the metadata_too_large row carries its big title.
	for _, rec := range dl[1:] {
		if rec[len(rec)-2] == "metadata_too_large" && (rec[0] != "2004" || rec[3] != big) {
			t.Errorf("metadata_too_large row kept as %q...", rec[0])
		}
	}
}

func TestRateLimitStormLosesNothingAndKeepsTheBudget(t *testing.T) {
	// The fake enforces the ingestion's budget (10 requests and 10,000 tokens a second) over a
	// 4-second window, shorter than the minute the budget is metered in, so it refuses the bursts
	// a budget may send within a minute; on top of that a storm of 429s is injected. Every 429
	// must be waited out and retried: no row may be lost.
	const window = 4 * time.Second
	e := newEnv(t, fakeopenai.Options{Window: window, RPM: 40, TPM: 40000})
	rows := genLegacy(5000, 3)
	key := e.prefix + "storm.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Embedding.RequestsPerMinute = 600
	ing.Spec.Embedding.TokensPerMinute = 600000
	ing.Spec.Embedding.MaxInputsPerRequest = 50
	ing.Spec.Chunking.RowsPerChunk = 1700
	plan := e.plan(ing)
	if plan.EstimatedTokens < 2*40000 {
		t.Fatalf("the file has only about %d tokens: too few to outlast the rate window", plan.EstimatedTokens)
	}
	const storm = 12
	e.openai.RateLimitNext(storm, 300*time.Millisecond)
	results, err := e.runChunks(ing, plan, 3)
	if err != nil {
		t.Fatal(err)
	}
	if failed := sum(results, func(r worker.Result) int64 { return r.Failed }); failed != 0 {
		t.Fatalf("%d rows failed", failed)
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 1700)
	st, peak := e.openai.Stats(), e.openai.Peak()
	if st.RateLimited < storm {
		t.Errorf("the fake answered %d 429s, fewer than the %d injected", st.RateLimited, storm)
	}
	if got := sum(results, func(r worker.Result) int64 { return r.RateLimited }); got != st.RateLimited {
		t.Errorf("chunks report %d rate-limited requests, the fake sent %d 429s", got, st.RateLimited)
	}
	if got := sum(results, func(r worker.Result) int64 { return r.Retries }); got < st.RateLimited {
		t.Errorf("chunks report %d retries for %d 429s", got, st.RateLimited)
	}
	if got := sum(results, func(r worker.Result) int64 { return r.Tokens }); got != st.Tokens {
		t.Errorf("chunks report %d tokens, the fake accepted %d", got, st.Tokens)
	}
	// The fake refuses whatever would exceed its limits, so its peak shows how close the
	// budget ran to them.
	t.Logf("%d requests, %d 429s (%d injected), peak window %+v of %d requests and %d tokens", st.Requests, st.RateLimited, storm, peak, 40, 40000)
}

func TestUnauthorizedIsPermanentWithoutRetries(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(600, 5)
	key := e.prefix + "401.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Embedding.MaxInputsPerRequest = 20
	plan := e.plan(ing)
	e.openai.SetUnauthorized(true)
	args, _ := plan.Chunk(0)
	res, err := chunkrun.Run(context.Background(), ing, args, e.deps())
	code, reason := exitcode.Of(err)
	if code != worker.ExitPermanent || reason != worker.ReasonUnauthorized {
		t.Fatalf("exit %d reason %q (%v), want %d %s", code, reason, err, worker.ExitPermanent, worker.ReasonUnauthorized)
	}
	// At most the requests already in flight when the first 401 came back: no retry storm.
	if n := e.openai.Stats().Requests; n > 3 {
		t.Fatalf("%d requests reached the API after a 401", n)
	}
	if res.Retries != 0 || e.index.Count() != 0 {
		t.Fatalf("result %+v, %d vectors", res, e.index.Count())
	}
	if strings.Contains(err.Error(), openaiKey) {
		t.Fatal("the error message holds the API key")
	}
}

func TestPineconeUnavailableBurstsAreRetried(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(900, 9)
	key := e.prefix + "unavailable.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Chunking.RowsPerChunk = 300
	plan := e.plan(ing)
	e.index.FailNextUpserts(6, codes.Unavailable)
	results, err := e.runChunks(ing, plan, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkIngested(t, e, rows, s3Fixed(key, ing), 300)
	if got := e.index.Stats().Errors["Unavailable"]; got != 6 {
		t.Fatalf("fake failed %d upserts with Unavailable, want 6", got)
	}
	if got := sum(results, func(r worker.Result) int64 { return r.Retries }); got < 6 {
		t.Fatalf("chunks report %d retries, want at least 6", got)
	}
}

func TestObjectChangedAfterPlanIsPermanent(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(100, 13)
	key := e.prefix + "changing.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	plan := e.plan(ing)
	e.put(key, csvBytes(t, legacyCSV(genLegacy(100, 14))))
	args, _ := plan.Chunk(0)
	_, err := chunkrun.Run(context.Background(), ing, args, e.deps())
	code, reason := exitcode.Of(err)
	if code != worker.ExitPermanent || reason != worker.ReasonSourceChanged {
		t.Fatalf("exit %d reason %q, want %d %s: %v", code, reason, worker.ExitPermanent, worker.ReasonSourceChanged, err)
	}
	if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "ETag") {
		t.Fatalf("error does not name the object and its ETag: %v", err)
	}
	if e.openai.Stats().Requests != 0 {
		t.Fatal("the chunk embedded rows of a changed object")
	}
}

func TestDimensionMismatchIsPermanent(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(50, 17)
	key := e.prefix + "dims.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	plan := e.plan(ing)
	args, _ := plan.Chunk(0)

	t.Run("model returns another size", func(t *testing.T) {
		ing := ing
		ing.Spec.Embedding.Dimensions = 0 // the model's 1536, the index has 256
		_, err := chunkrun.Run(context.Background(), ing, args, e.deps())
		if code, reason := exitcode.Of(err); code != worker.ExitPermanent || reason != worker.ReasonDimension {
			t.Fatalf("exit %d reason %q: %v", code, reason, err)
		}
	})
	t.Run("spec asks for another size", func(t *testing.T) {
		ing := ing
		ing.Spec.Embedding.Dimensions = 512
		before := e.openai.Stats().Requests
		_, err := chunkrun.Run(context.Background(), ing, args, e.deps())
		if code, reason := exitcode.Of(err); code != worker.ExitPermanent || reason != worker.ReasonDimension {
			t.Fatalf("exit %d reason %q: %v", code, reason, err)
		}
		if e.openai.Stats().Requests != before {
			t.Fatal("requests were sent although the spec contradicts the index")
		}
	})
	if e.index.Count() != 0 {
		t.Fatalf("%d vectors upserted", e.index.Count())
	}
}

func TestRowCountMismatchIsPermanent(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(30, 19)
	key := e.prefix + "rows.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	plan := e.plan(ing)
	args, _ := plan.Chunk(0)
	args.Rows++ // a plan that disagrees with the object
	_, err := chunkrun.Run(context.Background(), ing, args, e.deps())
	if code, _ := exitcode.Of(err); code != worker.ExitPermanent || !strings.Contains(err.Error(), "31") {
		t.Fatalf("exit %d: %v", code, err)
	}
}

func TestTerminationMessageStaysSmall(t *testing.T) {
	// Whatever fails, the message the controller reads is valid JSON within 4 KiB.
	path := t.TempDir() + "/termination-log"
	huge := errors.New(strings.Repeat("é error détail ", 2000))
	res := worker.Result{Role: worker.RoleChunk, DeadLetterKey: strings.Repeat("k", 3000)}
	for i := range 50 {
		res.FailedSamples = append(res.FailedSamples, worker.FailedRow{Row: int64(i), Reason: strings.Repeat("r", 100), Detail: strings.Repeat("d", 1000)})
	}
	code, err := exitcode.Finish(path, res, worker.Permanent(worker.ReasonHeaderMismatch, huge))
	if err != nil || code != worker.ExitPermanent {
		t.Fatalf("Finish: %d, %v", code, err)
	}
	assertMessage(t, path, worker.ReasonHeaderMismatch)
}

// assertMessage checks a termination message: at most 4 KiB of valid JSON with the reason.
func assertMessage(t *testing.T, path, reason string) worker.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("termination message: %v", err)
	}
	if len(data) > worker.MaxMessageBytes {
		t.Fatalf("termination message is %d bytes, more than %d", len(data), worker.MaxMessageBytes)
	}
	res, err := worker.DecodeResult(string(data))
	if err != nil {
		t.Fatalf("termination message is not a result: %v\n%s", err, data)
	}
	if res.Reason != reason {
		t.Fatalf("termination message reason %q, want %q", res.Reason, reason)
	}
	return res
}
