package chunkrun_test

import (
	"context"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

// BenchmarkChunk runs one 5,000-row chunk of the legacy file end to end at 1,536 dimensions
// (MinIO, the fakes in this process) and reports rows/s. The fakes' own work (tokenizing,
// encoding vectors) is included, so this is a lower bound for the pipeline alone.
func BenchmarkChunk(b *testing.B) {
	e := newEnv(b, fakeopenai.Options{})
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"wide": 1536}, APIKeys: []string{pineconeKey}, DiscardValues: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pc.Close() })
	e.pc = pc
	rows := genLegacy(5000, 42)
	key := e.prefix + "bench.csv"
	e.put(key, csvBytes(b, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Embedding.Dimensions = 0
	ing.Spec.Target.Pinecone.Index = "wide"
	ing.Spec.Chunking.RowsPerChunk = 5000
	args, _ := e.plan(ing).Chunk(0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		res, err := chunkrun.Run(context.Background(), ing, args, e.deps())
		if err != nil || res.VectorsUpserted != 5000 {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(5000*b.N)/time.Since(start).Seconds(), "rows/s")
}
