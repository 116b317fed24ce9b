package pinecone

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

// BenchmarkUpsert is upsert throughput against the instant fake (values discarded, client and
// fake share the CPU): 1,000 vectors of 1536 dims with row-like metadata per op.
func BenchmarkUpsert(b *testing.B) {
	srv := startFake(b, fakepinecone.Options{Indexes: map[string]int{"docs": 1536}, DiscardValues: true})
	u := newUpserter(b, Config{Host: srv.Index("docs").Host(), BatchSize: 100})
	in := vecs("239", 1000, 1536)
	for i := range in {
		md, err := structpb.NewStruct(map[string]any{
			"text":   fmt.Sprintf("Row %d of a realistic export: a paragraph of sanitized text that is embedded and kept as metadata for retrieval.", i),
			"source": "s3", "s3_key": "exports/q239.csv", "chunk_id": 7.0, "record_index": float64(i),
			"task_id": "task-0123", "question_id": "239", "row_id": fmt.Sprint(i), "processed_at": "2026-01-02T03:04:05Z",
		})
		if err != nil {
			b.Fatal(err)
		}
		in[i].Metadata = md
	}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := u.Upsert(ctx, "v2", in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(in))/b.Elapsed().Seconds(), "vectors/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(in)), "cpu-ns/vector")
}

// cpuTime is the process's user+system CPU time (client and in-process fake together): on a
// shared, loaded machine it measures the work better than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
