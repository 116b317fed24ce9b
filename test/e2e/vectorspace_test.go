package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

const (
	modelX = "text-embedding-ada-002" // what the index was filled with (the old service's model)
	modelY = "text-embedding-3-small" // same 1,536 dimensions, another vector space
)

// TestVectorSpaceGuard: a namespace pre-filled with vectors of model X (as the old service left
// clickbid-prod/v2). An ingestion configured with model Y fails VectorSpaceMismatch in the planner,
// before any chunk Job and any upsert; with model X it runs to Completed; so does a file of only
// new ids (a daily delta), whose guard compares vectors listed from the namespace; with Y and
// allowMixedVectorSpaces it runs and its status says the guard was skipped.
func TestVectorSpaceGuard(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	stats, key := scenario(t, "vspace", csvgen.Options{Rows: 2500, Seed: 41})

	// An index of its own that keeps vector values (the stack's discards them), at ada-002's
	// 1,536 dimensions, reached through spec.target.pinecone.host.
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"legacy-index": 1536}, APIKeys: []string{stack.PineconeKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	idx := pc.Index("legacy-index")

	// Pre-fill v2 with model X's vectors of the file's first 40 rows, stored as the old service
	// stored them: id "239.<id>", the sanitized text in metadata.
	body, err := st.Object(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	san, err := mapping.NewSanitizer("legacy")
	if err != nil {
		t.Fatal(err)
	}
	var seed []pinecone.Vector
	for _, r := range rows[1:41] {
		text, err := san.Sanitize(r[col["formatted_text"]])
		if err != nil {
			t.Fatal(err)
		}
		md, err := structpb.NewStruct(map[string]any{"text": text, "source": "s3_csv", "row_id": r[col["id"]]})
		if err != nil {
			t.Fatal(err)
		}
		seed = append(seed, pinecone.Vector{ID: "239." + strings.TrimSpace(r[col["id"]]), Values: fakeopenai.ModelVector(modelX, text, 1536), Metadata: md})
	}
	up, err := pinecone.New(ctx, pinecone.Config{APIKey: stack.PineconeKey, Host: idx.Host(), Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if rejected, err := up.Upsert(ctx, "v2", seed); err != nil || len(rejected) > 0 {
		t.Fatalf("pre-fill upsert: rejected %+v, err %v", rejected, err)
	}
	_ = up.Close()
	prefilled := idx.UpsertCalls()

	ingestionOf := func(key, name, model string, allowMixed bool) *v1alpha1.CsvIngestion {
		obj := st.LegacyIngestion("vspace", name, key)
		obj.Spec.Mapping.Metadata.Format = mapping.FormatLegacy
		obj.Spec.Embedding.Model, obj.Spec.Embedding.Dimensions = model, 0 // ada-002 takes no dimensions
		obj.Spec.Target.Pinecone.Index, obj.Spec.Target.Pinecone.Host = "legacy-index", idx.Host()
		obj.Spec.Target.Pinecone.AllowMixedVectorSpaces = allowMixed
		obj.Spec.Tracking = nil
		return obj
	}
	ingestion := func(name, model string, allowMixed bool) *v1alpha1.CsvIngestion {
		return ingestionOf(key, name, model, allowMixed)
	}

	// A dry run runs the guard too (it writes nothing), and its estimate counts the guard's tokens.
	dry := ingestion("dry-run-x", modelX, false)
	dry.Spec.DryRun = true
	apply(t, dry)
	final := waitTerminal(t, dry, 5*time.Minute)
	if vs := final.Status.VectorSpace; final.Status.Phase != v1alpha1.PhaseCompleted || vs == nil || vs.Result != v1alpha1.VectorSpaceMatched ||
		vs.Tokens <= 0 || final.Status.Estimate == nil || final.Status.Estimate.Tokens < vs.Tokens {
		t.Fatalf("dry run with model X: %s, vectorSpace %+v, estimate %+v", final.Status.Phase, vs, final.Status.Estimate)
	}
	if n := idx.UpsertCalls(); n != prefilled {
		t.Fatalf("the dry run wrote: %d upsert calls after the pre-fill's %d", n, prefilled)
	}

	// Model Y: refused before any write.
	y := apply(t, ingestion("model-y", modelY, false))
	final = waitTerminal(t, y, 5*time.Minute)
	cond := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
	if final.Status.Phase != v1alpha1.PhaseFailed || cond == nil || cond.Reason != worker.ReasonVectorSpaceMismatch {
		t.Fatalf("model Y: phase %s, Failed condition %+v, want Failed with reason VectorSpaceMismatch", final.Status.Phase, cond)
	}
	if !strings.Contains(cond.Message, modelY) || !strings.Contains(cond.Message, "cosine similarity as low as") {
		t.Errorf("the message does not name the model configured and what was measured: %s", cond.Message)
	}
	if n := idx.UpsertCalls(); n != prefilled {
		t.Errorf("model Y: %d upsert calls after the pre-fill's %d, want none", n, prefilled)
	}
	if jobs := chunkJobs(t, y); len(jobs) != 0 {
		t.Errorf("model Y: %d chunk Jobs created, want none", len(jobs))
	}
	t.Logf("model Y refused: %s", cond.Message)

	// Model X: the guard matches and the file is ingested.
	x := apply(t, ingestion("model-x", modelX, false))
	final = waitTerminal(t, x, 10*time.Minute)
	vs := final.Status.VectorSpace
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != stats.Good {
		t.Fatalf("model X: %s, %d of %d rows: %s", final.Status.Phase, final.Status.Records.Processed, stats.Good, final.Status.Message)
	}
	if vs == nil || vs.Result != v1alpha1.VectorSpaceMatched || vs.Compared == 0 || vs.MinCosine != "1.0000" || vs.Tokens <= 0 || vs.Model != modelX {
		t.Fatalf("model X: status.vectorSpace %+v", vs)
	}
	if final.Status.Estimate == nil || final.Status.Estimate.Tokens < vs.Tokens {
		t.Errorf("model X: the estimate %+v does not include the guard's %d tokens", final.Status.Estimate, vs.Tokens)
	}
	if n := int64(len(idx.Vectors("v2"))); n != stats.Good {
		t.Errorf("model X: %d vectors in v2, want %d", n, stats.Good)
	}
	// The vectors carry the old service's metadata (metadata.format legacy).
	firstID := strings.TrimSpace(rows[1][col["id"]])
	if md := idx.Vectors("v2")["239."+firstID].Metadata; md["chunk_id"] != "chunk_0000" || md["record_index"] != 0.0 ||
		md["id"] != rows[1][col["id"]] || md["row_id"] != rows[1][col["id"]] || md["source"] != "s3_csv" || md["task_id"] != final.Status.TaskID {
		t.Errorf("model X: metadata of the first row %v", md)
	}
	t.Logf("model X matched (%d tokens, estimate %d tokens): %s", vs.Tokens, final.Status.Estimate.Tokens, vs.Message)

	// A daily delta: a file of only new ids, none of them stored. The guard lists what the
	// namespace holds and re-embeds that: model Y is refused before any write (a guard that only
	// looked up the file's ids saw nothing to compare and wrote 1,000 foreign vectors), model X
	// runs to Completed.
	var delta bytes.Buffer
	dstats, err := csvgen.Write(&delta, csvgen.Options{Rows: 1000, Seed: 43, IDOffset: 500000})
	if err != nil {
		t.Fatal(err)
	}
	deltaKey := "exports/vspace-delta.csv"
	if err := st.Upload(ctx, deltaKey, delta.Bytes()); err != nil {
		t.Fatal(err)
	}
	before := idx.UpsertCalls()
	yd := apply(t, ingestionOf(deltaKey, "delta-model-y", modelY, false))
	final = waitTerminal(t, yd, 5*time.Minute)
	cond = meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
	if final.Status.Phase != v1alpha1.PhaseFailed || cond == nil || cond.Reason != worker.ReasonVectorSpaceMismatch {
		t.Fatalf("new ids, model Y: phase %s, Failed condition %+v, want Failed with reason VectorSpaceMismatch", final.Status.Phase, cond)
	}
	if !strings.Contains(cond.Message, "cosine similarity as low as") || !strings.Contains(cond.Message, "listed from the namespace") {
		t.Errorf("new ids, model Y: the message does not say what was compared: %s", cond.Message)
	}
	if n := idx.UpsertCalls(); n != before {
		t.Errorf("new ids, model Y: %d upsert calls, want none", n-before)
	}
	if jobs := chunkJobs(t, yd); len(jobs) != 0 {
		t.Errorf("new ids, model Y: %d chunk Jobs created, want none", len(jobs))
	}
	xd := apply(t, ingestionOf(deltaKey, "delta-model-x", modelX, false))
	final = waitTerminal(t, xd, 10*time.Minute)
	if vs := final.Status.VectorSpace; final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != dstats.Good ||
		vs == nil || vs.Result != v1alpha1.VectorSpaceMatched || vs.MinCosine != "1.0000" {
		t.Fatalf("new ids, model X: %s, %d of %d rows, vectorSpace %+v: %s", final.Status.Phase, final.Status.Records.Processed, dstats.Good, vs, final.Status.Message)
	}
	if n := int64(len(idx.Vectors("v2"))); n != stats.Good+dstats.Good {
		t.Errorf("new ids, model X: %d vectors in v2, want %d", n, stats.Good+dstats.Good)
	}

	// Model Y with the override: written anyway, and the status says the guard was skipped.
	before = idx.UpsertCalls()
	o := apply(t, ingestion("model-y-override", modelY, true))
	final = waitTerminal(t, o, 10*time.Minute)
	vs = final.Status.VectorSpace
	if final.Status.Phase != v1alpha1.PhaseCompleted || idx.UpsertCalls() == before {
		t.Fatalf("override: %s, %d upserts: %s", final.Status.Phase, idx.UpsertCalls()-before, final.Status.Message)
	}
	if vs == nil || vs.Result != v1alpha1.VectorSpaceSkipped || !strings.Contains(vs.Message, "skipped") {
		t.Fatalf("override: status.vectorSpace %+v, want Skipped", vs)
	}
	// The vectors are model Y's now: the override wrote what it was told to.
	if v, ok := idx.Vectors("v2")[seed[0].ID]; !ok || !equal(v.Values, fakeopenai.ModelVector(modelY, seedText(seed[0]), 1536)) {
		t.Errorf("override: vector %s is not model Y's", seed[0].ID)
	}
}

func seedText(v pinecone.Vector) string { return v.Metadata.Fields["text"].GetStringValue() }

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
