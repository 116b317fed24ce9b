package chunkrun_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	bucket      = "csv"
	openaiKey   = "sk-chunkrun-test-key"
	pineconeKey = "pc-chunkrun-test-key"
	indexName   = "legacy"
	dims        = 256
)

// processedAt is the fixed processed_at of every record in these tests.
var processedAt = time.Date(2025, 1, 10, 22, 45, 23, 0, time.UTC)

var (
	minioOnce sync.Once
	minio     *harness.MinIO
	minioErr  error
)

// TestMain stops the MinIO the tests share (started by the first test that needs it).
func TestMain(m *testing.M) {
	code := m.Run()
	if minio != nil {
		if err := minio.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop MinIO:", err)
		}
	}
	os.Exit(code)
}

func sharedMinIO(t testing.TB) *harness.MinIO {
	t.Helper()
	minioOnce.Do(func() { minio, minioErr = harness.NewMinIO(bucket) })
	if minioErr != nil {
		t.Fatalf("MinIO: %v", minioErr)
	}
	return minio
}

// env is one test's world: MinIO (shared), a fake OpenAI and a fake Pinecone with one index.
type env struct {
	t      testing.TB
	minio  *harness.MinIO
	s3     *s3.Client
	openai *fakeopenai.Server
	pc     *fakepinecone.Server
	index  *fakepinecone.Index
	prefix string // object keys of this test
}

func newEnv(t testing.TB, oai fakeopenai.Options) *env {
	t.Helper()
	m := sharedMinIO(t)
	if oai.APIKeys == nil {
		oai.APIKeys = []string{openaiKey}
	}
	o, err := fakeopenai.Start(oai)
	if err != nil {
		t.Fatalf("start fake OpenAI: %v", err)
	}
	t.Cleanup(func() { _ = o.Close() })
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{indexName: dims}, APIKeys: []string{pineconeKey}})
	if err != nil {
		t.Fatalf("start fake Pinecone: %v", err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return &env{t: t, minio: m, s3: m.S3Client(), openai: o, pc: pc, index: pc.Index(indexName),
		prefix: strings.ReplaceAll(t.Name(), "/", "_") + "/"}
}

func (e *env) put(key string, data []byte) {
	e.t.Helper()
	_, err := e.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
}

func (e *env) get(key string) ([]byte, error) {
	out, err := e.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

// ingestion is the legacy question-239 setup of DESIGN §6 over object key, with the API defaults
// spelled out (the API server would fill them in).
func (e *env) ingestion(key string) worker.Ingestion {
	return worker.Ingestion{
		Name: "q239", Namespace: "ingestion", UID: "uid-" + strings.TrimSuffix(e.prefix, "/"), TaskID: "task-" + strings.TrimSuffix(e.prefix, "/"),
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{
				S3:  &v1alpha1.S3Source{Bucket: bucket, Key: key, S3Connection: v1alpha1.S3Connection{Region: e.minio.Region, Endpoint: e.minio.Endpoint}},
				CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto"},
			},
			Mapping: v1alpha1.MappingSpec{
				IDColumn: "id", IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy",
				NamespaceColumn: "record_type",
				Metadata:        v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000},
			},
			Embedding: v1alpha1.EmbeddingSpec{
				Model: "text-embedding-3-small", Dimensions: dims, BaseURL: e.openai.URL(),
				RequestsPerMinute: 300, TokensPerMinute: 1000000, MaxInputsPerRequest: 2048,
			},
			Target:     v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: indexName, Namespace: "v2", BatchSize: 100}},
			Chunking:   v1alpha1.ChunkingSpec{RowsPerChunk: 1000, Parallelism: 4, RetriesPerChunk: 3, MaxFailedRowsPercent: 1},
			DeadLetter: &v1alpha1.DeadLetterSpec{Bucket: bucket, KeyPrefix: e.prefix + "failed/"},
		},
	}
}

func (e *env) plan(ing worker.Ingestion) *worker.Plan {
	e.t.Helper()
	p, err := planner.Plan(context.Background(), ing, planner.Deps{S3: e.s3})
	if err != nil {
		e.t.Fatalf("plan: %v", err)
	}
	return p
}

func (e *env) deps() chunkrun.Deps {
	return chunkrun.Deps{
		S3: e.s3, OpenAIAPIKey: openaiKey, PineconeAPIKey: pineconeKey,
		PineconeControlHost: e.pc.ControlURL(), Now: func() time.Time { return processedAt },
	}
}

// runChunks runs every chunk of the plan, parallel at a time, each with its share of the budgets
// as the controller computes it, and returns the results by chunk with the first error.
func (e *env) runChunks(ing worker.Ingestion, plan *worker.Plan, parallel int) ([]worker.Result, error) {
	e.t.Helper()
	results := make([]worker.Result, plan.Chunks())
	errs := make([]error, plan.Chunks())
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range plan.Chunks() {
		args, err := plan.Chunk(i)
		if err != nil {
			e.t.Fatal(err)
		}
		args.RequestsPerMinute = float64(ing.Spec.Embedding.RequestsPerMinute) / float64(parallel)
		args.TokensPerMinute = float64(ing.Spec.Embedding.TokensPerMinute) / float64(parallel)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i], errs[i] = chunkrun.Run(context.Background(), ing, args, e.deps())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return results, fmt.Errorf("chunk %d: %w", i, err)
		}
	}
	return results, nil
}

func sum(results []worker.Result, f func(worker.Result) int64) int64 {
	var n int64
	for _, r := range results {
		n += f(r)
	}
	return n
}

// csvBytes renders rows with encoding/csv, an independent writer.
func csvBytes(t testing.TB, rows [][]string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readCSV parses a dead-letter object.
func readCSV(t testing.TB, data []byte) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("parse CSV: %v\n%s", err, data)
	}
	return rows
}
