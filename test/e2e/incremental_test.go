package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/incremental"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// incrementalRows is the file size of the pass/fail test: 20,000 rows rather than the demo's
// 100,000 keeps the suite's share of this 2-core machine small (the whole test takes about two
// minutes); docs/benchmarks.md has the 100,000-row figures (bench -only incremental).
const incrementalRows = 20000

// incPrefix is this test's id prefix: deleteMissing works under it, and no other test of the
// suite writes ids with it into the shared namespace.
const incPrefix = "inc239."

// A file ingested in full, then again incrementally with deleteMissing after 1 % of its rows
// changed and 0.5 % were removed: a dry run first reports what the run will embed, skip and
// delete; the run embeds and upserts only the changed rows (the OpenAI fake bills about 1 % of the
// full run's tokens), counts the rest as skipped, deletes exactly the removed rows' vectors, and
// leaves the index equal to the new file (ids, metadata, vectors). Then a truncated export (40 %
// of the rows) stops at the delete guard and deletes nothing.
func TestIncrementalReingestEmbedsOnlyChangedRows(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	ns := "incremental"
	idx := st.Pinecone.Index(stack.Index)
	// Vector values are compared at the end: keep them for this test's writes (the suite's
	// other vectors stay value-less to bound the fake's memory).
	idx.SetDiscardValues(false)
	t.Cleanup(func() { idx.SetDiscardValues(true) })

	stats, key := scenario(t, ns, csvgen.Options{Rows: incrementalRows, Seed: 239, IDOffset: 5000000})
	full := st.LegacyIngestion(ns, "q239-full", key)
	full.Spec.Mapping.IDPrefix = incPrefix
	full.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}
	oa0 := st.OpenAI.Stats()
	apply(t, full)
	done := waitTerminal(t, full, 10*time.Minute)
	if done.Status.Phase != v1alpha1.PhaseCompleted || done.Status.Records.Processed != stats.Good {
		t.Fatalf("full run: %s, %+v: %s", done.Status.Phase, done.Status.Records, done.Status.Message)
	}
	oa1, pc1 := st.OpenAI.Stats(), idx.Stats()
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
	changed, removed := int64(len(ch.Changed)), int64(len(ch.Removed))
	unchanged := stats.Good - changed - removed
	sync := func(o *v1alpha1.CsvIngestion) {
		o.Spec.Mapping.IDPrefix = incPrefix
		o.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](10)}
	}

	// The dry run: what the run will embed, skip and delete, and what it costs; nothing written.
	preview := st.LegacyIngestion(ns, "q239-preview", key2)
	sync(preview)
	preview.Spec.DryRun = true
	apply(t, preview)
	pv := waitTerminal(t, preview, 5*time.Minute)
	se := pv.Status.Estimate.Sync
	if pv.Status.Phase != v1alpha1.PhaseCompleted || se == nil {
		t.Fatalf("dry run: %s, estimate %+v: %s", pv.Status.Phase, pv.Status.Estimate, pv.Status.Message)
	}
	if se.RowsToEmbed != changed || se.RowsToSkip != unchanged || se.VectorsUnderPrefix != stats.Good || se.VectorsToDelete != removed ||
		se.DeleteGuard != v1alpha1.DeleteGuardPass || se.Tokens <= 0 || se.CostUSD == "" || se.LookupRequests == 0 {
		t.Fatalf("dry run estimate %+v; want %d to embed, %d to skip, %d of %d to delete, guard Pass", se, changed, unchanged, removed, stats.Good)
	}
	// Tokens are the tokenizer's count of the changed rows' text: about 1 % of the plan's estimate
	// for the whole file (the fake bills a cruder count, so its figures are not compared).
	if share := float64(se.Tokens) / float64(pv.Status.Estimate.Tokens); share < 0.008 || share > 0.013 {
		t.Errorf("dry run: %d tokens to embed are %.2f %% of the file's %d; want about 1 %%", se.Tokens, 100*share, pv.Status.Estimate.Tokens)
	}
	if !strings.Contains(pv.Status.Message, "to delete (delete guard: Pass)") {
		t.Errorf("dry run message %q does not report the sync preview", pv.Status.Message)
	}
	if pcPv := idx.Stats(); pcPv.UpsertedVectors != pc1.UpsertedVectors || pcPv.Calls["Delete"] != pc1.Calls["Delete"] {
		t.Fatalf("the dry run wrote: %d upserted, %d delete calls", pcPv.UpsertedVectors-pc1.UpsertedVectors, pcPv.Calls["Delete"]-pc1.Calls["Delete"])
	}
	oa1, pc1 = st.OpenAI.Stats(), idx.Stats() // the dry run embeds nothing but the vector-space guard's sample

	inc := st.LegacyIngestion(ns, "q239-incremental", key2)
	sync(inc)
	start := time.Now()
	apply(t, inc)
	done2 := waitTerminal(t, inc, 10*time.Minute)
	oa2, pc2 := st.OpenAI.Stats(), idx.Stats()
	incTokens := oa2.Tokens - oa1.Tokens
	t.Logf("full run: %d tokens, %d requests; incremental (%d changed, %d removed): %d tokens, %d requests, %d fetches, %d list, %d delete calls, %s; dry-run estimate %d tokens",
		fullTokens, oa1.Requests-oa0.Requests, changed, removed, incTokens, oa2.Requests-oa1.Requests,
		pc2.Calls["Fetch"]-pc1.Calls["Fetch"], pc2.Calls["List"]-pc1.Calls["List"], pc2.Calls["Delete"]-pc1.Calls["Delete"],
		time.Since(start).Round(time.Second), se.Tokens)

	r := done2.Status.Records
	if done2.Status.Phase != v1alpha1.PhaseCompleted || r.Processed != changed || r.Skipped != unchanged || r.Failed != 0 || r.Deleted != removed {
		t.Fatalf("incremental run: %s, records %+v, want %d processed, %d skipped, %d deleted: %s", done2.Status.Phase, r,
			changed, unchanged, removed, done2.Status.Message)
	}
	if c := meta.FindStatusCondition(done2.Status.Conditions, v1alpha1.ConditionMissingDeleted); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("MissingDeleted %+v", c)
	}
	if share := float64(incTokens) / float64(fullTokens); share < 0.008 || share > 0.013 {
		t.Fatalf("the incremental run billed %d tokens, %.2f %% of the full run's %d; want about 1 %%", incTokens, 100*share, fullTokens)
	}
	if up := pc2.UpsertedVectors - pc1.UpsertedVectors; up != changed {
		t.Fatalf("%d vectors upserted, want only the %d changed rows", up, changed)
	}
	if del := pc2.DeletedVectors - pc1.DeletedVectors; del != removed {
		t.Fatalf("%d vectors deleted, want the %d removed rows", del, removed)
	}
	// Pinecone was asked for the stored hashes about once per 128 rows, not once per row.
	if f := pc2.Calls["Fetch"] - pc1.Calls["Fetch"]; f == 0 || f > int64(stats.Good)/100 {
		t.Fatalf("%d fetch calls for %d rows", f, stats.Good)
	}
	waitFor(t, "task item with the deletions", 30*time.Second, func() (bool, string) {
		task, _, err := st.Tasks.Get(ctx, done2.Status.TaskID)
		if err != nil {
			return false, err.Error()
		}
		return task.Status == "completed" && task.DeletedRecords == removed, fmt.Sprintf("%+v", task)
	})

	// Changed rows hold the new text and hash; unchanged rows were not rewritten (still the first
	// run's task id and hash); removed rows are gone.
	isChanged, isRemoved := map[string]bool{}, map[string]bool{}
	for _, id := range ch.Changed {
		isChanged[incPrefix+id] = true
	}
	for _, id := range ch.Removed {
		isRemoved[incPrefix+id] = true
	}
	after := idx.Vectors("v2")
	var sawChanged, sawUnchanged int
	for id, old := range before {
		v, ok := after[id]
		if isRemoved[id] {
			if ok {
				t.Fatalf("vector %s of a removed row is still stored", id)
			}
			continue
		}
		if !ok {
			t.Fatalf("vector %s disappeared", id)
		}
		md := v.Metadata
		if isChanged[id] {
			sawChanged++
			// (The stored text is cut at textMaxChars, so the appended note may not show in it.)
			if md["content_hash"] == old["content_hash"] || md["task_id"] != done2.Status.TaskID || md[ownership.Key] != incPrefix {
				t.Fatalf("changed vector %s: %v", id, md)
			}
			continue
		}
		sawUnchanged++
		if md["task_id"] != done.Status.TaskID || md["content_hash"] != old["content_hash"] {
			t.Fatalf("unchanged vector %s was rewritten: %v", id, md)
		}
	}
	if int64(sawChanged) != changed || int64(sawUnchanged) != unchanged {
		t.Fatalf("saw %d changed, %d unchanged", sawChanged, sawUnchanged)
	}
	checkIndexEqualsFile(t, get(t, inc), changedFile, after)

	// A truncated export: 40 % of the day-2 rows. Its rows are unchanged (all skipped), and the
	// sync step finds 60 % of the prefix missing: it stops at the guard and deletes nothing.
	truncated, _, err := csvgen.Mutate(changedFile, 0, 0, 40)
	if err != nil {
		t.Fatal(err)
	}
	key3 := strings.TrimSuffix(key, ".csv") + "-truncated.csv"
	if err := st.Upload(ctx, key3, truncated); err != nil {
		t.Fatal(err)
	}
	trunc := st.LegacyIngestion(ns, "q239-truncated", key3)
	sync(trunc)
	apply(t, trunc)
	done3 := waitTerminal(t, trunc, 10*time.Minute)
	pc3 := idx.Stats()
	cond := meta.FindStatusCondition(done3.Status.Conditions, v1alpha1.ConditionMissingDeleted)
	if done3.Status.Phase != v1alpha1.PhaseFailed || cond == nil || cond.Reason != worker.ReasonDeleteGuard || done3.Status.Records.Deleted != 0 {
		t.Fatalf("truncated export: %s, MissingDeleted %+v, deleted %d: %s", done3.Status.Phase, cond, done3.Status.Records.Deleted, done3.Status.Message)
	}
	for _, want := range []string{"nothing was deleted", "maxDeletePercent (10%)", "at least 60", incPrefix} {
		if !strings.Contains(cond.Message, want) {
			t.Errorf("guard message %q lacks %q", cond.Message, want)
		}
	}
	if pc3.Calls["Delete"] != pc2.Calls["Delete"] || len(idx.Vectors("v2")) != len(after) {
		t.Fatalf("the guard let deletes through: %d delete calls, %d vectors (was %d)", pc3.Calls["Delete"]-pc2.Calls["Delete"], len(idx.Vectors("v2")), len(after))
	}
	waitEvents(t, trunc, worker.ReasonDeleteGuard)
}

// checkIndexEqualsFile: the ids under incPrefix in v2 are exactly the file's, each stored with
// the content hash of its row as mapped now and the fake's vector of its embedded text.
func checkIndexEqualsFile(t *testing.T, obj *v1alpha1.CsvIngestion, file []byte, stored map[string]fakepinecone.Vector) {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(file))
	header, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapping.New(obj.Spec.Mapping, header, mapping.Fixed{DefaultNamespace: obj.Spec.Target.Pinecone.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	dims := int(obj.Spec.Embedding.Dimensions)
	want := map[string]bool{}
	for row := int64(0); ; row++ {
		fields, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rec, rerr := m.Map(row, fields)
		if rerr != nil {
			t.Fatalf("row %d: %v", row, rerr)
		}
		want[rec.ID] = true
		rec.Metadata = ownership.Stamp(rec.Metadata, obj.Spec.Mapping.IDPrefix) // as a chunk with spec.sync writes it
		v, ok := stored[rec.ID]
		if !ok {
			t.Fatalf("row %d's vector %s is not in the index", row, rec.ID)
		}
		if h := incremental.Hash(rec, obj.Spec.Embedding.Model, dims); v.Metadata["content_hash"] != h {
			t.Fatalf("vector %s has hash %v, the file's row %s", rec.ID, v.Metadata["content_hash"], h)
		}
		exp := fakeopenai.Vector(rec.Text, dims)
		if len(v.Values) != len(exp) {
			t.Fatalf("vector %s has %d values, want %d", rec.ID, len(v.Values), len(exp))
		}
		for i := range exp {
			if math.Abs(float64(v.Values[i]-exp[i])) > 1e-6 {
				t.Fatalf("vector %s differs from the embedding of its row's text at %d: %v vs %v", rec.ID, i, v.Values[i], exp[i])
			}
		}
	}
	n := 0
	for id := range stored {
		if strings.HasPrefix(id, incPrefix) {
			n++
			if !want[id] {
				t.Fatalf("the index holds %s, which the file does not have", id)
			}
		}
	}
	if n != len(want) {
		t.Fatalf("%d vectors under %s, the file has %d rows", n, incPrefix, len(want))
	}
}
