package e2e

import (
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// Batch mode end to end: the same 20,000-row file ingested online and through the Batch API
// into two Pinecone namespaces of the stack's index gives the same vectors (ids, values,
// metadata but the run's own task_id and processed_at), and every batch is created once.
func TestBatchModeIndexEqualsOnline(t *testing.T) {
	skipShort(t)
	const rows = 20000
	stats, key := scenario(t, "batch", csvgen.Options{Rows: rows, Seed: 2027})
	// The fake's batch limit is the chunk size, so the run needs several batches and a client
	// that put more than a chunk's rows in one would see it fail.
	st.OpenAI.SetBatchLimits(fakeopenai.BatchLimits{MaxRequests: 5000, MaxInputs: 5000})
	t.Cleanup(func() { st.OpenAI.SetBatchLimits(fakeopenai.BatchLimits{}) })
	before := st.OpenAI.BatchStats()
	mk := func(name, ns, mode string) *v1alpha1.CsvIngestion {
		obj := st.LegacyIngestion("batch", name, key)
		obj.Spec.Target.Pinecone.Namespace = ns
		obj.Spec.Chunking.RowsPerChunk = 5000
		obj.Spec.Embedding.Mode = mode
		if mode == v1alpha1.EmbeddingBatch {
			obj.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{PollInterval: metav1.Duration{Duration: time.Second}}
		}
		return obj
	}
	batch := apply(t, mk("q239-batch", "e2e-batch", v1alpha1.EmbeddingBatch))
	online := apply(t, mk("q239-online", "e2e-online", v1alpha1.EmbeddingOnline))
	for _, obj := range []*v1alpha1.CsvIngestion{batch, online} {
		final := waitTerminal(t, obj, 10*time.Minute)
		if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != rows || final.Status.Records.Failed != 0 {
			t.Fatalf("%s (%s): %+v", obj.Name, obj.Spec.Embedding.Mode, final.Status)
		}
	}

	idx := st.Pinecone.Index(stack.Index)
	got, want := idx.Vectors("e2e-batch"), idx.Vectors("e2e-online")
	if int64(len(got)) != stats.Good || len(want) != len(got) {
		t.Fatalf("batch run stored %d vectors, online %d, want %d", len(got), len(want), stats.Good)
	}
	for id, o := range want {
		b, ok := got[id]
		if !ok {
			t.Fatalf("vector %s of the online run is missing from the batch run", id)
		}
		if !slices.Equal(b.Values, o.Values) {
			t.Fatalf("vector %s: values differ between batch and online", id)
		}
		bm, om := maps.Clone(b.Metadata), maps.Clone(o.Metadata)
		for _, k := range []string{"task_id", "processed_at"} {
			delete(bm, k)
			delete(om, k)
		}
		if !reflect.DeepEqual(bm, om) {
			t.Fatalf("vector %s metadata\nbatch  %v\nonline %v", id, bm, om)
		}
	}

	after := st.OpenAI.BatchStats()
	if d := after.BatchesCreated - before.BatchesCreated; d != 4 {
		t.Errorf("%d batches created for 4 chunks, want each once", d)
	}
	if d := after.LinesEmbedded - before.LinesEmbedded; d != rows {
		t.Errorf("%d lines embedded for %d rows", d, rows)
	}
	// Each chunk deletes its input and output files once its vectors are upserted.
	if d := after.FilesDeleted - before.FilesDeleted; d != 8 {
		t.Errorf("%d files deleted, want 8 (4 inputs, 4 outputs)", d)
	}
}
