package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// incrementalRows is the file size of the pass/fail test: 20,000 rows rather than the demo's
// 100,000 keeps the suite's share of this 2-core machine small; docs/benchmarks.md has the
// 100,000-row figures (bench -only incremental).
const incrementalRows = 20000

// A file ingested in full, then again incrementally after 1 % of its rows changed and 0.5 % were
// removed: only the changed rows are embedded and upserted (the OpenAI fake bills about 1 % of
// the full run's tokens), the rest count as skipped, and unchanged vectors are not rewritten.
func TestIncrementalReingestEmbedsOnlyChangedRows(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	ns := "incremental"
	stats, key := scenario(t, ns, csvgen.Options{Rows: incrementalRows, Seed: 239, IDOffset: 5000000})
	full := st.LegacyIngestion(ns, "q239-full", key)
	full.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}
	oa0 := st.OpenAI.Stats()
	apply(t, full)
	done := waitTerminal(t, full, 10*time.Minute)
	if done.Status.Phase != v1alpha1.PhaseCompleted || done.Status.Records.Processed != stats.Good {
		t.Fatalf("full run: %s, %+v: %s", done.Status.Phase, done.Status.Records, done.Status.Message)
	}
	oa1, pc1 := st.OpenAI.Stats(), st.Pinecone.Index(stack.Index).Stats()
	fullTokens := oa1.Tokens - oa0.Tokens
	before := vectorsFor(done.Status.TaskID)["v2"]
	for id, md := range before {
		if h, _ := md["content_hash"].(string); len(h) != 32 {
			t.Fatalf("vector %s has no content hash: %v", id, md)
		}
	}

	// 1 % changed, 0.5 % removed.
	orig, err := st.Object(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	changedFile, ch, err := csvgen.Mutate(orig, 10, 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	key2 := strings.TrimSuffix(key, ".csv") + "-day2.csv"
	if err := st.Upload(ctx, key2, changedFile); err != nil {
		t.Fatal(err)
	}
	inc := st.LegacyIngestion(ns, "q239-incremental", key2)
	inc.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental}
	start := time.Now()
	apply(t, inc)
	done2 := waitTerminal(t, inc, 10*time.Minute)
	oa2, pc2 := st.OpenAI.Stats(), st.Pinecone.Index(stack.Index).Stats()
	incTokens := oa2.Tokens - oa1.Tokens
	changed, removed := int64(len(ch.Changed)), int64(len(ch.Removed))
	t.Logf("full run: %d tokens, %d requests; incremental (%d changed, %d removed): %d tokens, %d requests, %d fetches, %s",
		fullTokens, oa1.Requests-oa0.Requests, changed, removed, incTokens, oa2.Requests-oa1.Requests,
		pc2.Calls["Fetch"]-pc1.Calls["Fetch"], time.Since(start).Round(time.Second))

	r := done2.Status.Records
	if done2.Status.Phase != v1alpha1.PhaseCompleted || r.Processed != changed || r.Skipped != stats.Good-changed-removed || r.Failed != 0 {
		t.Fatalf("incremental run: %s, records %+v, want %d processed and %d skipped: %s", done2.Status.Phase, r,
			changed, stats.Good-changed-removed, done2.Status.Message)
	}
	if share := float64(incTokens) / float64(fullTokens); share < 0.008 || share > 0.013 {
		t.Fatalf("the incremental run billed %d tokens, %.2f %% of the full run's %d; want about 1 %%", incTokens, 100*share, fullTokens)
	}
	if up := pc2.UpsertedVectors - pc1.UpsertedVectors; up != changed {
		t.Fatalf("%d vectors upserted, want only the %d changed rows", up, changed)
	}
	// Pinecone was asked for the stored hashes about once per 128 rows, not once per row.
	if f := pc2.Calls["Fetch"] - pc1.Calls["Fetch"]; f == 0 || f > int64(stats.Good)/100 {
		t.Fatalf("%d fetch calls for %d rows", f, stats.Good)
	}

	// Changed rows hold the new text and hash; unchanged rows were not rewritten (still the first
	// run's task id and hash).
	isChanged := map[string]bool{}
	for _, id := range ch.Changed {
		isChanged["239."+id] = true
	}
	idx := st.Pinecone.Index(stack.Index)
	after := idx.Vectors("v2")
	var sawChanged, sawUnchanged int
	for id, old := range before {
		v, ok := after[id]
		if !ok {
			t.Fatalf("vector %s disappeared", id)
		}
		md := v.Metadata
		if isChanged[id] {
			sawChanged++
			// (The stored text is cut at textMaxChars, so the appended note may not show in it.)
			if md["content_hash"] == old["content_hash"] || md["task_id"] != done2.Status.TaskID {
				t.Fatalf("changed vector %s: %v", id, md)
			}
			continue
		}
		sawUnchanged++
		if md["task_id"] != done.Status.TaskID || md["content_hash"] != old["content_hash"] {
			t.Fatalf("unchanged vector %s was rewritten: %v", id, md)
		}
	}
	if int64(sawChanged) != changed || sawUnchanged == 0 {
		t.Fatalf("saw %d changed, %d unchanged", sawChanged, sawUnchanged)
	}
}
