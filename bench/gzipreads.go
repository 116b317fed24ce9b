package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// GzipReadsRows and GzipReadsSampleEvery shape the gzip-reads phase of `make bench`: the issue's
// file of 1,000,000 rows at 1,000 rows per chunk; before is measured on every 50th chunk.
const (
	GzipReadsRows        = 1000000
	GzipReadsSampleEvery = 50
)

// GzipReads is how many bytes the planner and the chunks GET from S3 for one gzip file: before
// (every chunk inflates the object from byte 0, as the embedder did) and after (the planner
// inflates it once into a staged plain copy, chunks read their ranges of it).
type GzipReads struct {
	Rows, RowsPerChunk, Chunks      int
	CompressedBytes, PlainBytes     int64
	PlanRead, PlanStaged            int64 // bytes the planner read; bytes it wrote (the staged copy)
	AfterChunksRead                 int64 // every chunk, measured
	BeforeSampled                   int   // chunks measured for "before"
	BeforeSampleRead                int64 // bytes those chunks read
	BeforeChunksRead                int64 // every chunk, extrapolated from the sample
	PlanWall, AfterWall, BeforeWall time.Duration
}

// After and Before are the totals (planner + chunks).
func (g GzipReads) After() int64  { return g.PlanRead + g.AfterChunksRead }
func (g GzipReads) Before() int64 { return g.PlanRead + g.BeforeChunksRead }

// Target is the bound: compressed size + 1.1 × decompressed size.
func (g GzipReads) Target() int64 { return g.CompressedBytes + g.PlainBytes*11/10 }

// countingClient counts the body bytes read from every GET response.
type countingClient struct {
	next *awshttp.BuildableClient
	n    *atomic.Int64
}

func (c countingClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err == nil && req.Method == http.MethodGet {
		resp.Body = countingBody{ReadCloser: resp.Body, n: c.n}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

// readChunk reads chunk args of obj exactly as `embedder chunk` does (chunkrun.Run): the header
// record from [0, offset), then the chunk's range, every row parsed; no embedding.
func readChunk(ctx context.Context, obj *source.Object, args worker.ChunkArgs) error {
	body, err := obj.OpenChunk(ctx, args.Compression, 0, args.Offset)
	if err != nil {
		return err
	}
	header, _, err := csvplan.ReadHeader(body, ',', 0)
	body.Close()
	if err != nil {
		return err
	}
	body, err = obj.OpenChunk(ctx, args.Compression, args.Offset, args.Length)
	if err != nil {
		return err
	}
	defer body.Close()
	rd, err := csvplan.NewReader(body, header, csvplan.ReaderOptions{FirstRow: args.FirstRow, Offset: args.Offset, ExpectRows: args.Rows})
	if err != nil {
		return err
	}
	for rd.Next() {
	}
	return rd.Err()
}

// runGzipReads generates rows csvgen rows, gzips them into MinIO and counts the bytes read.
// Every after-chunk is read; for before, every sampleEvery-th chunk is read (each inflates the
// object from its start, so all of them would take hours here) and the total is extrapolated
// from the sample by the chunk count.
func runGzipReads(ctx context.Context, c Config, m *harness.MinIO, dir string, rows, rowsPerChunk, sampleEvery int) (*GzipReads, error) {
	c.logf("gzip reads: %d rows at %d rows per chunk", rows, rowsPerChunk)
	path, gen, err := generate(dir, "gzip-reads.csv", rows, 11)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	gzPath := path + ".gz"
	if err := gzipFile(path, gzPath); err != nil {
		return nil, err
	}
	defer os.Remove(gzPath)
	fi, err := os.Stat(gzPath)
	if err != nil {
		return nil, err
	}
	key := "bench/gzip-reads.csv.gz"
	f, err := os.Open(gzPath)
	if err != nil {
		return nil, err
	}
	_, err = m.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: ptr(stack.Bucket), Key: &key, Body: f})
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	var n atomic.Int64
	cl := s3.New(s3.Options{Region: m.Region, BaseEndpoint: aws.String(m.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		HTTPClient:  countingClient{next: awshttp.NewBuildableClient(), n: &n}})
	ing := worker.Ingestion{Name: "gzip-reads", Namespace: "bench", UID: "uid-gzip-reads", TaskID: "gzip-reads",
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: stack.Bucket, Key: key,
				S3Connection: v1alpha1.S3Connection{Region: m.Region, Endpoint: m.Endpoint}},
				CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto"}},
			Mapping:   v1alpha1.MappingSpec{IDColumn: "id", TextColumn: "formatted_text", Sanitize: "basic"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small"},
			Chunking:  v1alpha1.ChunkingSpec{RowsPerChunk: int32(rowsPerChunk)},
		}}
	g := &GzipReads{Rows: rows, RowsPerChunk: rowsPerChunk, CompressedBytes: fi.Size(), PlainBytes: gen.Bytes}
	start := time.Now()
	plan, err := planner.Plan(ctx, ing, planner.Deps{S3: cl})
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	g.PlanWall, g.PlanRead, g.Chunks = time.Since(start), n.Swap(0), plan.Chunks()
	if plan.Staged == nil {
		return nil, fmt.Errorf("the plan of a gzip file staged nothing")
	}
	g.PlanStaged = plan.Staged.SizeBytes
	c.logf("gzip reads: planned %d chunks, read %d bytes, staged %d in %s", g.Chunks, g.PlanRead, g.PlanStaged, g.PlanWall.Round(time.Millisecond))

	start = time.Now()
	for i := range plan.Chunks() {
		args, _ := plan.Chunk(i)
		obj := &source.Object{Client: cl, Bucket: stack.Bucket, Key: args.Key, ETag: args.ETag}
		if err := readChunk(ctx, obj, args); err != nil {
			return nil, fmt.Errorf("after: chunk %d: %w", i, err)
		}
	}
	g.AfterWall, g.AfterChunksRead = time.Since(start), n.Swap(0)
	c.logf("gzip reads: after, %d chunks read %d bytes in %s", g.Chunks, g.AfterChunksRead, g.AfterWall.Round(time.Millisecond))

	// Before: the same plan without the staged copy is what the embedder did.
	old := *plan
	old.Staged = nil
	start = time.Now()
	for i := 0; i < old.Chunks(); i += sampleEvery {
		args, _ := old.Chunk(i)
		obj := &source.Object{Client: cl, Bucket: stack.Bucket, Key: key, ETag: old.ETag}
		if err := readChunk(ctx, obj, args); err != nil {
			return nil, fmt.Errorf("before: chunk %d: %w", i, err)
		}
		g.BeforeSampled++
	}
	g.BeforeWall, g.BeforeSampleRead = time.Since(start), n.Swap(0)
	g.BeforeChunksRead = g.BeforeSampleRead * int64(g.Chunks) / int64(g.BeforeSampled)
	c.logf("gzip reads: before, %d sampled chunks read %d bytes in %s (all %d: ≈ %d)", g.BeforeSampled, g.BeforeSampleRead,
		g.BeforeWall.Round(time.Millisecond), g.Chunks, g.BeforeChunksRead)
	_ = source.Delete(ctx, m.S3Client(), stack.Bucket, append(plan.StagedKeys(), key)...)
	return g, nil
}

// markdownGzipReads renders the section of docs/benchmarks.md.
func markdownGzipReads(g GzipReads) string {
	if g.Rows == 0 {
		return ""
	}
	mb := func(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("### Bytes read from S3 for a gzip file")
	w("")
	w("A gzip file of %d csvgen rows (%s compressed, %s decompressed) at %d rows per chunk (%d chunks), in MinIO; bytes are the GET response bodies the S3 client read (`BENCH_GZIP_ROWS=1000000 go test ./bench -run TestGzipReads -v` runs this section alone). The chunks' reads replay `embedder chunk`'s (header record, then the chunk's range, every row parsed) without embedding.",
		g.Rows, mb(g.CompressedBytes), mb(g.PlainBytes), g.RowsPerChunk, g.Chunks)
	w("")
	w("| | planner | chunks | **total** | × decompressed size |")
	w("|---|---|---|---|---|")
	w("| before: every chunk inflates from byte 0 | %s | %s (%d of %d chunks measured, %s; total extrapolated by chunk count) | **%s** | %.1f× |",
		mb(g.PlanRead), mb(g.BeforeChunksRead), g.BeforeSampled, g.Chunks, dur(g.BeforeWall), mb(g.Before()), float64(g.Before())/float64(g.PlainBytes))
	w("| after: the planner stages a plain copy (%s written), chunks read ranges of it | %s (%s) | %s (all %d chunks measured, %s) | **%s** | %.2f× |",
		mb(g.PlanStaged), mb(g.PlanRead), dur(g.PlanWall), mb(g.AfterChunksRead), g.Chunks, dur(g.AfterWall), mb(g.After()), float64(g.After())/float64(g.PlainBytes))
	w("")
	ok := "met"
	if g.After() > g.Target() {
		ok = "**not met**"
	}
	w("Target: ≤ compressed + 1.1 × decompressed = %s; after reads %s: %s.", mb(g.Target()), mb(g.After()), ok)
	w("")
	return b.String()
}

func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
