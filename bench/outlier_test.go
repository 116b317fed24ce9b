package main

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// TestOutlierRow runs only the outlier measurement (MinIO, the fakes and bin/embedder; no
// cluster): the 12 MiB row is dead-lettered as too_many_tokens, every other row is upserted, and
// the figure is logged (the target, 64 MiB, is reported in docs/benchmarks.md, not asserted).
func TestOutlierRow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs bin/embedder against MinIO")
	}
	m, err := harness.NewMinIO(stack.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Stop() }()
	oa, err := fakeopenai.Start(fakeopenai.Options{APIKeys: []string{stack.OpenAIKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer oa.Close()
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{stack.Index: 1536}, APIKeys: []string{stack.PineconeKey}, DiscardValues: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := Config{Dimensions: 1536, MemTimeout: 5 * time.Minute, Log: logr.Discard()}
	out, err := runOutlier(context.Background(), c, m, oa, pc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *out)
	if out.Phase != "PartiallyCompleted" || out.Failed != 1 || out.Processed != int64(out.Rows-1) || out.DeadLetterReason != "too_many_tokens" {
		t.Fatalf("outlier run %+v: want the one row dead-lettered as too_many_tokens and the rest upserted", *out)
	}
}
