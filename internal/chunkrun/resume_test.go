package chunkrun_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// A chunk killed at about 90 % (its context cancelled once 900 of its 1,000 rows are done, as
// when the pod dies) and retried embeds only the rows the first attempt did not upsert: the
// OpenAI fake bills exactly their tokens, Pinecone gets exactly their vectors, the result
// counts the first attempt's rows as processed (resumed), and the index ends with every row once,
// each the embedding of its own text. The first attempt, which found no marker, did not look
// anything up; the retry did, and removed the marker when it succeeded.
func TestRetryEmbedsOnlyTheRemainingRows(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(1000, 29)
	key := e.prefix + "export.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Chunking.RowsPerChunk = 1000
	ing.Spec.Embedding.TokensPerMinute = 100000000
	ing.Spec.Embedding.MaxInputsPerRequest = 50 // many batches, so the kill lands mid-chunk
	plan := e.plan(ing)
	if plan.Chunks() != 1 {
		t.Fatalf("%d chunks", plan.Chunks())
	}
	args, err := plan.Chunk(0)
	if err != nil {
		t.Fatal(err)
	}
	args.RequestsPerMinute, args.TokensPerMinute = 100000, 100000000

	// Attempt 1: killed at ~90 %.
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	var done atomic.Int64
	deps := e.deps()
	deps.Progress = func(n int64) {
		if done.Add(n) >= 900 {
			kill()
		}
	}
	if _, err := chunkrun.Run(ctx, ing, args, deps); !errors.Is(err, context.Canceled) {
		t.Fatalf("attempt 1: %v, want it cancelled", err)
	}
	stored := e.index.Count()
	if stored < 900 || stored >= 1000 {
		t.Fatalf("attempt 1 stored %d vectors, want 900–999", stored)
	}
	if n := e.index.Stats().Calls["Fetch"]; n != 0 {
		t.Errorf("attempt 1 (no marker: a first attempt) made %d fetch calls, want none", n)
	}
	marker := chunkrun.MarkerKey(ing.Spec.DeadLetter.KeyPrefix, ing, 0)
	if _, err := e.get(marker); err != nil {
		t.Fatalf("attempt 1 left no marker at %s: %v", marker, err)
	}

	// What the retry must embed: the rows not stored, no more.
	var wantInputs, wantTokens int64
	have := map[string]bool{}
	for _, ns := range e.index.Namespaces() {
		for id := range e.index.Vectors(ns) {
			have[id] = true
		}
	}
	for _, r := range rows {
		if !have["239."+r.id()] {
			wantInputs++
			wantTokens += int64(tokens.Count(r.wantText))
		}
	}
	oa, pc := e.openai.Stats(), e.index.Stats()

	// Attempt 2.
	res, err := chunkrun.Run(context.Background(), ing, args, e.deps())
	if err != nil {
		t.Fatalf("attempt 2: %v", err)
	}
	oa2, pc2 := e.openai.Stats(), e.index.Stats()
	if in, tok := oa2.Inputs-oa.Inputs, oa2.Tokens-oa.Tokens; in != wantInputs || tok != wantTokens {
		t.Errorf("the retry embedded %d inputs (%d tokens), want the %d remaining rows (%d tokens)", in, tok, wantInputs, wantTokens)
	}
	if up := pc2.UpsertedVectors - pc.UpsertedVectors; up != wantInputs {
		t.Errorf("the retry upserted %d vectors, want %d", up, wantInputs)
	}
	if res.Resumed != int64(stored) || res.Processed != 1000 || res.VectorsUpserted != 1000 || res.Failed != 0 || res.Skipped != 0 {
		t.Errorf("attempt 2 result: resumed %d (want %d), processed %d, upserted %d, failed %d, skipped %d",
			res.Resumed, stored, res.Processed, res.VectorsUpserted, res.Failed, res.Skipped)
	}
	if res.Tokens != wantTokens {
		t.Errorf("attempt 2 reports %d tokens, want %d", res.Tokens, wantTokens)
	}
	if pc2.Calls["Fetch"] == 0 {
		t.Error("the retry looked nothing up")
	}
	if e.index.Count() != 1000 {
		t.Fatalf("index holds %d vectors, want 1000", e.index.Count())
	}
	for _, r := range rows {
		v, ok := e.index.Vectors(cmp.Or(r.recordType(), "v2"))["239."+r.id()]
		if !ok || !slices.Equal(v.Values, fakeopenai.Vector(r.wantText, dims)) || v.Metadata["task_id"] != ing.TaskID {
			t.Fatalf("row %s: stored %v, not the embedding of its text with this task's metadata", r.id(), ok)
		}
	}
	if _, err := e.get(marker); err == nil {
		t.Error("the marker is still there after the chunk succeeded")
	}
}

// A dead-letter bucket that does not exist fails the chunk before it embeds anything (the attempt
// marker goes there first), permanently, with the reason and the location in the message.
func TestUnwritableDeadLetterFailsTheChunkUnpaid(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(300, 31)
	key := e.prefix + "export.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	plan := e.plan(ing) // the planner's probe would refuse the bucket below: plan first
	ing.Spec.DeadLetter.Bucket = "no-such-dead-letter-bucket"
	args, err := plan.Chunk(0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = chunkrun.Run(context.Background(), ing, args, e.deps())
	p, ok := worker.AsPermanent(err)
	if !ok || p.Reason != worker.ReasonDeadLetterUnwritable {
		t.Fatalf("chunk error %v, want permanent %s", err, worker.ReasonDeadLetterUnwritable)
	}
	if msg := err.Error(); !strings.Contains(msg, "no-such-dead-letter-bucket") || !strings.Contains(msg, "spec.deadLetter") {
		t.Errorf("the message does not name the bucket and the field to fix: %v", err)
	}
	if st := e.openai.Stats(); st.Inputs != 0 {
		t.Errorf("%d inputs embedded before the chunk failed, want none", st.Inputs)
	}
}

// A Windows-1252 file whose row holds an unassigned byte (0x81): that row is dead-lettered as
// invalid_utf8, as it would be in a UTF-8 file, and the others are ingested; no text is embedded
// with a replacement character nobody counted.
func TestUndecodableBytesAreDeadLettered(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	key := e.prefix + "cp1252.csv"
	e.put(key, []byte("id,formatted_text,record_type,title,price,city,created_at,is_active\n"+
		"1,caf\xe9 \x93ok\x94,lot,t,1,Reno,2025-01-01,true\n"+
		"2,bad \x81 byte,lot,t,1,Reno,2025-01-01,true\n"+
		"3,na\xefve,lot,t,1,Reno,2025-01-01,true\n"))
	ing := e.ingestion(key)
	ing.Spec.Source.CSV.Encoding = "windows-1252"
	res, err := e.runChunks(ing, e.plan(ing), 1)
	if err != nil {
		t.Fatal(err)
	}
	if p, f := sum(res, func(r worker.Result) int64 { return r.Processed }), sum(res, func(r worker.Result) int64 { return r.Failed }); p != 2 || f != 1 {
		t.Fatalf("processed %d, failed %d; want 2 and 1", p, f)
	}
	if s := res[0].FailedSamples; len(s) != 1 || s[0].Row != 1 || s[0].Reason != "invalid_utf8" {
		t.Fatalf("failed samples %+v, want row 1 as invalid_utf8", s)
	}
	if v, ok := e.index.Vectors("lot")["239.1"]; !ok || v.Metadata["text"] != "café ok" { // the legacy filter drops the quotes
		t.Fatalf("row 0: %v", v.Metadata)
	}
}

// A task id is not unique to one CsvIngestion (spec.taskID is chosen freely and may be reused,
// say after deleting a run to fix its mapping). Ingestion A, killed at ~90 %, leaves vectors
// stored with task id T and, with a dead-letter location, its attempt marker. Ingestion B, another
// object with the same task id over a changed file (every text differs), is not a retry of A: its
// first attempt must embed and write every row, with or without a dead-letter location, instead
// of counting A's stale vectors as its own.
func TestSameTaskIDOfAnotherIngestionIsNotARetry(t *testing.T) {
	for _, withDeadLetter := range []bool{true, false} {
		t.Run(map[bool]string{true: "dead letter", false: "no dead letter"}[withDeadLetter], func(t *testing.T) {
			e := newEnv(t, fakeopenai.Options{})
			rows := genLegacy(1000, 37)
			keyA := e.prefix + "a.csv"
			e.put(keyA, csvBytes(t, legacyCSV(rows)))
			a := e.ingestion(keyA)
			a.Spec.Embedding.TokensPerMinute = 100000000
			a.Spec.Embedding.MaxInputsPerRequest = 50
			if !withDeadLetter {
				a.Spec.DeadLetter = nil
			}
			argsA, err := e.plan(a).Chunk(0)
			if err != nil {
				t.Fatal(err)
			}
			argsA.RequestsPerMinute, argsA.TokensPerMinute = 100000, 100000000
			ctx, kill := context.WithCancel(context.Background())
			defer kill()
			var done atomic.Int64
			deps := e.deps()
			deps.Progress = func(n int64) {
				if done.Add(n) >= 900 {
					kill()
				}
			}
			if _, err := chunkrun.Run(ctx, a, argsA, deps); !errors.Is(err, context.Canceled) {
				t.Fatalf("ingestion A: %v, want it cancelled", err)
			}
			if n := e.index.Count(); n < 900 {
				t.Fatalf("ingestion A stored %d vectors, want at least 900", n)
			}

			// B: the same ids, every text changed.
			changed := make([]legacyRow, len(rows))
			for i, r := range rows {
				r.fields = slices.Clone(r.fields)
				r.fields[1] = "revised " + r.fields[1]
				r.wantText = "revised " + r.wantText
				changed[i] = r
			}
			keyB := e.prefix + "b.csv"
			e.put(keyB, csvBytes(t, legacyCSV(changed)))
			b := e.ingestion(keyB)
			b.UID = a.UID + "-b"
			b.Spec.DeadLetter = a.Spec.DeadLetter
			argsB, err := e.plan(b).Chunk(0)
			if err != nil {
				t.Fatal(err)
			}
			argsB.RequestsPerMinute, argsB.TokensPerMinute = 100000, 100000000
			oa := e.openai.Stats()
			res, err := chunkrun.Run(context.Background(), b, argsB, e.deps())
			if err != nil {
				t.Fatalf("ingestion B: %v", err)
			}
			if res.Resumed != 0 {
				t.Errorf("ingestion B counted %d rows of ingestion A as its own upserts", res.Resumed)
			}
			if in := e.openai.Stats().Inputs - oa.Inputs; in != int64(len(changed)) {
				t.Errorf("ingestion B embedded %d rows, want all %d", in, len(changed))
			}
			stale := 0
			for _, r := range changed {
				v, ok := e.index.Vectors(cmp.Or(r.recordType(), "v2"))["239."+r.id()]
				if !ok || !slices.Equal(v.Values, fakeopenai.Vector(r.wantText, dims)) {
					stale++
				}
			}
			if stale > 0 {
				t.Errorf("%d of %d vectors are not the embedding of ingestion B's text", stale, len(changed))
			}
		})
	}
}
