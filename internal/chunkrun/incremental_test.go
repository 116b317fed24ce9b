package chunkrun_test

import (
	"slices"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// A file ingested with sync full, then a new export of it with 30 changed texts and 20 new rows
// ingested incrementally: only those 50 rows are embedded and upserted, the rest are skipped,
// and the index holds the new texts with their new hashes.
func TestIncrementalSkipsUnchangedRows(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(3000, 16)
	key1, key2 := e.prefix+"day1.csv", e.prefix+"day2.csv"
	e.put(key1, csvBytes(t, legacyCSV(rows)))

	ing := e.ingestion(key1)
	ing.Spec.Embedding.TokensPerMinute = 10000000
	ing.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}
	oa0 := e.openai.Stats()
	res, err := e.runChunks(ing, e.plan(ing), 3)
	if err != nil {
		t.Fatal(err)
	}
	if p := sum(res, func(r worker.Result) int64 { return r.Processed }); p != 3000 {
		t.Fatalf("full run processed %d", p)
	}
	fullTokens := e.openai.Stats().Tokens - oa0.Tokens
	hashes := map[string]any{}
	for _, ns := range e.index.Namespaces() {
		for id, v := range e.index.Vectors(ns) {
			h, _ := v.Metadata["content_hash"].(string)
			if len(h) != 32 {
				t.Fatalf("vector %s without a content hash: %v", id, v.Metadata)
			}
			hashes[id] = h
		}
	}

	// Day 2: every 100th text changed, 20 new rows.
	day2 := slices.Clone(rows)
	var changed []string
	for i := 5; i < len(day2); i += 100 {
		r := day2[i]
		r.fields = slices.Clone(r.fields)
		r.fields[1] += " Sold out."
		r.wantText += " Sold out."
		day2[i] = r
		changed = append(changed, "239."+r.id())
	}
	extra := genLegacy(3020, 17)[3000:]
	for i := range extra {
		extra[i].fields[0] = "9" + extra[i].fields[0]
	}
	day2 = append(day2, extra...)
	e.put(key2, csvBytes(t, legacyCSV(day2)))

	ing2 := e.ingestion(key2)
	ing2.TaskID += "-day2"
	ing2.Spec.Embedding.TokensPerMinute = 10000000
	ing2.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental}
	oa1, pc1 := e.openai.Stats(), e.index.Stats()
	res, err = e.runChunks(ing2, e.plan(ing2), 3)
	if err != nil {
		t.Fatal(err)
	}
	processed := sum(res, func(r worker.Result) int64 { return r.Processed })
	skipped := sum(res, func(r worker.Result) int64 { return r.Skipped })
	upserted := e.index.Stats().UpsertedVectors - pc1.UpsertedVectors
	want := int64(len(changed) + len(extra))
	if processed != want || skipped != 3020-want || upserted != want {
		t.Fatalf("incremental: processed %d, skipped %d, upserted %d; want %d, %d, %d", processed, skipped, upserted, want, 3020-want, want)
	}
	oa2 := e.openai.Stats()
	if inputs := oa2.Inputs - oa1.Inputs; inputs != want {
		t.Fatalf("%d inputs embedded, want %d", inputs, want)
	}
	if tok := oa2.Tokens - oa1.Tokens; tok <= 0 || tok*20 > fullTokens {
		t.Fatalf("incremental run billed %d tokens, full run %d", tok, fullTokens)
	}
	if tok := sum(res, func(r worker.Result) int64 { return r.Tokens }); tok != oa2.Tokens-oa1.Tokens {
		t.Fatalf("chunks report %d tokens, the API billed %d", tok, oa2.Tokens-oa1.Tokens)
	}
	for _, ns := range e.index.Namespaces() {
		vecs := e.index.Vectors(ns)
		for _, id := range changed {
			if v, ok := vecs[id]; ok && v.Metadata["content_hash"] == hashes[id] {
				t.Fatalf("changed vector %s kept its old hash", id)
			}
		}
	}
	if e.index.Count() != 3020 {
		t.Fatalf("index holds %d vectors", e.index.Count())
	}

	// Without spec.sync nothing is skipped and no hash is written (legacy metadata unchanged).
	ing3 := e.ingestion(key2)
	ing3.TaskID += "-plain"
	ing3.Spec.Embedding.TokensPerMinute = 10000000
	res, err = e.runChunks(ing3, e.plan(ing3), 3)
	if err != nil {
		t.Fatal(err)
	}
	if s := sum(res, func(r worker.Result) int64 { return r.Skipped }); s != 0 {
		t.Fatalf("a run without spec.sync skipped %d rows", s)
	}
	for _, ns := range e.index.Namespaces() {
		for id, v := range e.index.Vectors(ns) {
			if _, ok := v.Metadata["content_hash"]; ok {
				t.Fatalf("vector %s has a content hash after a run without spec.sync", id)
			}
		}
	}
}
