package syncrun_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/syncrun"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	bucket      = "csv"
	openaiKey   = "sk-sync-test"
	pineconeKey = "pc-sync-test"
	dims        = 64
)

var minio *harness.MinIO

func TestMain(m *testing.M) {
	var err error
	if minio, err = harness.NewMinIO(bucket); err != nil {
		fmt.Fprintln(os.Stderr, "MinIO:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = minio.Stop()
	os.Exit(code)
}

type env struct {
	t      *testing.T
	s3     *s3.Client
	openai *fakeopenai.Server
	pc     *fakepinecone.Server
}

func newEnv(t *testing.T) *env {
	o, err := fakeopenai.Start(fakeopenai.Options{APIKeys: []string{openaiKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"idx": dims}, APIKeys: []string{pineconeKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return &env{t: t, s3: minio.S3Client(), openai: o, pc: pc}
}

// file renders rows id 0..n-1 but those in skip, in namespaces a and b by parity; text changes
// with rev for the ids in changed.
func file(t *testing.T, n int, skip map[int]bool, changed map[int]bool) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"id", "formatted_text", "record_type"})
	for i := 0; i < n; i++ {
		if skip[i] {
			continue
		}
		text := fmt.Sprintf("row %d text", i)
		if changed[i] {
			text += " (revised)"
		}
		_ = w.Write([]string{fmt.Sprint(i), text, []string{"a", "b"}[i%2]})
	}
	w.Flush()
	return b.Bytes()
}

func (e *env) ingestion(key string, mode string, maxPercent int32, dryRun bool) worker.Ingestion {
	return worker.Ingestion{Name: "s", Namespace: "ns", UID: "uid-" + key, TaskID: "task-" + strings.ReplaceAll(key, "/", "-"),
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: bucket, Key: key,
				S3Connection: v1alpha1.S3Connection{Region: minio.Region, Endpoint: minio.Endpoint}}},
			Mapping: v1alpha1.MappingSpec{IDColumn: "id", IDPrefix: "q7.", TextColumn: "formatted_text", Sanitize: "basic",
				NamespaceColumn: "record_type", Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", Dimensions: dims, BaseURL: e.openai.URL()},
			Target:    v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "idx", Namespace: "a", BatchSize: 100}},
			Chunking:  v1alpha1.ChunkingSpec{RowsPerChunk: 100},
			Sync:      &v1alpha1.SyncSpec{Mode: mode, DeleteMissing: true, MaxDeletePercent: &maxPercent},
			DryRun:    dryRun,
		}}
}

func (e *env) put(key string, data []byte) {
	if _, err := e.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deps() syncrun.Deps {
	return syncrun.Deps{S3: e.s3, PineconeAPIKey: pineconeKey, PineconeControlHost: e.pc.ControlURL(), Log: logr.Discard()}
}

// ingest plans and runs every chunk of ing.
func (e *env) ingest(ing worker.Ingestion) *worker.Plan {
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: e.s3})
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range plan.Chunks() {
		args, _ := plan.Chunk(i)
		if _, err := chunkrun.Run(context.Background(), ing, args, chunkrun.Deps{S3: e.s3, OpenAIAPIKey: openaiKey,
			PineconeAPIKey: pineconeKey, PineconeControlHost: e.pc.ControlURL(), Log: logr.Discard()}); err != nil {
			e.t.Fatalf("chunk %d: %v", i, err)
		}
	}
	return plan
}

// TestRunDeletesWhatLeftTheFile: 1,000 rows in two namespaces; the next file drops 50 and
// changes 10. The dry run previews it exactly; the sync step deletes the 50 in both namespaces,
// keeps the others and another prefix's vectors; a file of 40 % of the rows stops at the guard.
func TestRunDeletesWhatLeftTheFile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	idx := e.pc.Index("idx")
	e.put("day1.csv", file(t, 1000, nil, nil))
	e.ingest(e.ingestion("day1.csv", v1alpha1.SyncFull, 10, false))
	// Another prefix in the same namespace is out of scope.
	other := e.ingestion("day1.csv", v1alpha1.SyncFull, 10, false)
	other.Spec.Mapping.IDPrefix = "q8."
	e.ingest(other)
	if idx.Count() != 2000 {
		t.Fatalf("%d vectors after day 1", idx.Count())
	}

	removed, changed := map[int]bool{}, map[int]bool{}
	for i := 0; i < 50; i++ {
		removed[i*20+3] = true
	}
	for i := 0; i < 10; i++ {
		changed[i*100+7] = true
	}
	e.put("day2.csv", file(t, 1000, removed, changed))

	// The dry run's preview.
	dry := e.ingestion("day2.csv", v1alpha1.SyncIncremental, 10, true)
	plan, err := planner.Plan(ctx, dry, planner.Deps{S3: e.s3, SyncPreview: syncrun.NewPreview(dry, e.deps())})
	if err != nil {
		t.Fatal(err)
	}
	se := plan.SyncEstimate
	if se == nil || se.RowsToEmbed != 10 || se.RowsToSkip != 940 || se.VectorsUnderPrefix != 1000 || se.VectorsToDelete != 50 ||
		se.DeleteGuard != v1alpha1.DeleteGuardPass || se.Tokens <= 0 || se.CostUSD == "" {
		t.Fatalf("preview %+v; want 10 to embed, 940 to skip, 50 of 1000 to delete, guard Pass", se)
	}
	if st := idx.Stats(); st.Calls["Delete"] != 0 || idx.Count() != 2000 {
		t.Fatalf("the dry run wrote: %+v", st)
	}

	ing := e.ingestion("day2.csv", v1alpha1.SyncIncremental, 10, false)
	plan = e.ingest(ing)
	res, err := syncrun.Run(ctx, ing, plan.Whole(), e.deps())
	if err != nil {
		t.Fatalf("sync: %v (%+v)", err, res)
	}
	if res.Role != worker.RoleSync || res.RowsRead != 950 || res.Listed != 1000 || res.Missing != 50 || res.Deleted != 50 {
		t.Fatalf("result %+v; want 950 rows read, 1000 listed, 50 missing and deleted", res)
	}
	for i := 0; i < 1000; i++ {
		ns := []string{"a", "b"}[i%2]
		_, ok := idx.Vectors(ns)[fmt.Sprintf("q7.%d", i)]
		if ok == removed[i] {
			t.Fatalf("q7.%d in %s: stored %v, removed from the file %v", i, ns, ok, removed[i])
		}
		if _, ok := idx.Vectors(ns)[fmt.Sprintf("q8.%d", i)]; !ok {
			t.Fatalf("q8.%d of another prefix was deleted", i)
		}
	}

	// A truncated export: the guard stops it, nothing is deleted.
	var keep []byte
	lines := strings.SplitAfter(string(file(t, 1000, removed, nil)), "\n")
	keep = []byte(strings.Join(lines[:1+380], ""))
	e.put("truncated.csv", keep)
	trunc := e.ingestion("truncated.csv", v1alpha1.SyncIncremental, 10, false)
	plan = e.ingest(trunc)
	before := idx.Count()
	res, err = syncrun.Run(ctx, trunc, plan.Whole(), e.deps())
	p, ok := worker.AsPermanent(err)
	if !ok || p.Reason != worker.ReasonDeleteGuard || res.Deleted != 0 || res.Listed != 950 || res.Missing != 570 || idx.Count() != before {
		t.Fatalf("truncated: %+v, %v, %d vectors (was %d); want a DeleteGuard stop with nothing deleted", res, err, idx.Count(), before)
	}
	if !strings.Contains(err.Error(), "570 of the 950 vectors") || !strings.Contains(err.Error(), "at least 60") {
		t.Errorf("guard message %q", err)
	}

	// Not for a dry run, not without deleteMissing.
	if _, err := syncrun.Run(ctx, dry, plan.Whole(), e.deps()); err == nil {
		t.Error("a dry run's sync step ran")
	}
}

// TestRunDeletesOnlyItsOwn: under q7. the index also holds another source's vectors (ingested
// with idPrefix "q7.x-", so all its ids start with "q7.") and unmarked ones of q7.'s own id form
// (another writer). The sync step deletes exactly the rows that left q7.'s file, counts the
// others as left alone, and keeps them with their values and metadata. maxDeletePercent 0 only
// counts; a row without an id stops the step (NoKey) before anything is listed.
func TestRunDeletesOnlyItsOwn(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	idx := e.pc.Index("idx")
	e.put("own1.csv", file(t, 400, nil, nil))
	e.ingest(e.ingestion("own1.csv", v1alpha1.SyncFull, 10, false))
	nested := e.ingestion("own1.csv", v1alpha1.SyncFull, 10, false)
	nested.Spec.Mapping.IDPrefix = "q7.x-"
	e.ingest(nested)
	up, err := pinecone.New(ctx, pinecone.Config{APIKey: pineconeKey, Index: "idx", ControlHost: e.pc.ControlURL(), Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	var unmarked []pinecone.Vector
	for i := range 20 {
		v := make([]float32, dims)
		v[0] = 1
		unmarked = append(unmarked, pinecone.Vector{ID: fmt.Sprintf("q7.%d", 9000+i), Values: v})
	}
	if _, err := up.Upsert(ctx, "a", unmarked); err != nil {
		t.Fatal(err)
	}
	_ = up.Close()
	before := map[string]map[string]fakepinecone.Vector{"a": idx.Vectors("a"), "b": idx.Vectors("b")}

	removed := map[int]bool{}
	for i := 0; i < 20; i++ {
		removed[i*20+1] = true
	}
	e.put("own2.csv", file(t, 400, removed, nil))

	report := e.ingestion("own2.csv", v1alpha1.SyncIncremental, 0, false)
	plan := e.ingest(report)
	res, err := syncrun.Run(ctx, report, plan.Whole(), e.deps())
	if err != nil || res.Deletable != 20 || res.Deleted != 0 || res.LeftAlone != 420 || res.Unmarked != 20 || idx.Stats().Calls["Delete"] != 0 {
		t.Fatalf("report only: %+v, %v; want 20 deletable, none deleted, 420 left alone", res, err)
	}

	ing := e.ingestion("own2.csv", v1alpha1.SyncIncremental, 10, false)
	plan = e.ingest(ing)
	res, err = syncrun.Run(ctx, ing, plan.Whole(), e.deps())
	if err != nil || res.Listed != 820 || res.Missing != 440 || res.Deleted != 20 || res.LeftAlone != 420 || res.Unmarked != 20 {
		t.Fatalf("sync: %+v, %v; want 820 listed, 440 not in the file, 20 deleted, 420 left alone (20 unmarked)", res, err)
	}
	for ns, vecs := range before {
		after := idx.Vectors(ns)
		for id, v := range vecs {
			var n int
			own := !strings.HasPrefix(id, "q7.x-") && v.Metadata[ownership.Key] == "q7."
			if own {
				fmt.Sscanf(id, "q7.%d", &n)
			}
			w, ok := after[id]
			switch {
			case own && removed[n]:
				if ok {
					t.Fatalf("%s left the file but is still stored", id)
				}
			case !ok:
				t.Fatalf("%s was deleted; it is not q7.'s (owner %v)", id, v.Metadata[ownership.Key])
			case !own && (fmt.Sprint(w.Values) != fmt.Sprint(v.Values) || fmt.Sprint(w.Metadata) != fmt.Sprint(v.Metadata)):
				t.Fatalf("%s of another writer changed", id)
			}
		}
	}

	// A row without an id: nothing is listed or deleted.
	e.put("nokey.csv", append(file(t, 400, removed, nil), []byte(",a row without id,a\n")...))
	nokey := e.ingestion("nokey.csv", v1alpha1.SyncIncremental, 10, false)
	plan, err = planner.Plan(ctx, nokey, planner.Deps{S3: e.s3})
	if err != nil {
		t.Fatal(err)
	}
	lists := idx.Stats().Calls["List"]
	res, err = syncrun.Run(ctx, nokey, plan.Whole(), e.deps())
	if p, ok := worker.AsPermanent(err); !ok || p.Reason != worker.ReasonNoKey || res.Deleted != 0 || idx.Stats().Calls["List"] != lists {
		t.Fatalf("a row without id: %+v, %v", res, err)
	}
}
