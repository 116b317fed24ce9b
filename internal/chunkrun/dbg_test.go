package chunkrun_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

func TestDbgBench(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	pc, _ := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"wide": 1536}, APIKeys: []string{pineconeKey}, DiscardValues: true})
	defer pc.Close()
	e.pc = pc
	rows := genLegacy(5000, 42)
	key := e.prefix + "bench.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Embedding.Dimensions = 0
	ing.Spec.Target.Pinecone.Index = "wide"
	ing.Spec.Chunking.RowsPerChunk = 5000
	args, _ := e.plan(ing).Chunk(0)
	d := e.deps()
	start := time.Now()
	d.Log = funcr.New(func(prefix, args string) { fmt.Println(time.Since(start).Milliseconds(), prefix, args) }, funcr.Options{Verbosity: 1})
	res, err := chunkrun.Run(context.Background(), ing, args, d)
	t.Log(res, err, time.Since(start))
}
