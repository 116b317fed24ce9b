package planner_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const bucket = "csv"

var (
	minioOnce sync.Once
	minio     *harness.MinIO
	minioErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if minio != nil {
		if err := minio.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop MinIO:", err)
		}
	}
	os.Exit(code)
}

func sharedMinIO(t *testing.T) *harness.MinIO {
	t.Helper()
	minioOnce.Do(func() { minio, minioErr = harness.NewMinIO(bucket) })
	if minioErr != nil {
		t.Fatalf("MinIO: %v", minioErr)
	}
	return minio
}

func put(t *testing.T, m *harness.MinIO, key string, data []byte) {
	t.Helper()
	_, err := m.S3Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func csvBytes(t *testing.T, rows [][]string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func ingestion(m *harness.MinIO, key string) worker.Ingestion {
	return worker.Ingestion{
		Name: "products", Namespace: "default", UID: "uid-1", TaskID: "task-1",
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{
				S3:  &v1alpha1.S3Source{Bucket: bucket, Key: key, S3Connection: v1alpha1.S3Connection{Region: m.Region, Endpoint: m.Endpoint}},
				CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto"},
			},
			Mapping: v1alpha1.MappingSpec{IDColumn: "id", TextColumn: "body", Sanitize: "basic",
				Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small"},
			Target:    v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "products"}},
			Chunking:  v1alpha1.ChunkingSpec{RowsPerChunk: 10},
		},
	}
}

func permanent(t *testing.T, err error, reason string) *worker.PermanentError {
	t.Helper()
	p, ok := worker.AsPermanent(err)
	if !ok || p.Reason != reason {
		t.Fatalf("error %v: want a permanent %s", err, reason)
	}
	return p
}

func TestPlanOffsetsRowsAndEstimate(t *testing.T) {
	m := sharedMinIO(t)
	rows := [][]string{{"id", "body", "kind"}}
	var wantTokens int64
	for i := range 25 {
		body := fmt.Sprintf("<p>Item %d, with a comma</p>\nand a second line", i)
		rows = append(rows, []string{fmt.Sprint(i), body, "k"})
		wantTokens += int64(tokens.Count(fmt.Sprintf("Item %d, with a comma and a second line", i)))
	}
	data := csvBytes(t, rows)
	data = append([]byte("\n"), data...) // a blank line before the header
	put(t, m, "plan/products.csv", data)
	plan, err := planner.Plan(context.Background(), ingestion(m, "plan/products.csv"), planner.Deps{S3: m.S3Client()})
	if err != nil {
		t.Fatal(err)
	}
	if plan.TotalRows != 25 || plan.RowsPerChunk != 10 || plan.Chunks() != 3 || plan.BlankRows != 1 {
		t.Fatalf("plan %+v", plan)
	}
	if plan.ETag == "" || plan.SizeBytes != int64(len(data)) || plan.Compression != "none" || plan.Bucket != bucket || plan.Key != "plan/products.csv" {
		t.Fatalf("plan source %+v", plan)
	}
	// Each chunk's byte range starts at a row: the row whose id is its first row number.
	for i := range plan.Chunks() {
		args, _ := plan.Chunk(i)
		rest := string(data[args.Offset:])
		if !strings.HasPrefix(rest, fmt.Sprintf("%d,", args.FirstRow)) {
			t.Fatalf("chunk %d starts with %q", i, rest[:min(20, len(rest))])
		}
	}
	if plan.Offsets[3] != int64(len(data)) {
		t.Fatalf("last offset %d, want the end %d", plan.Offsets[3], len(data))
	}
	// The estimate counts the text as it will be embedded: sanitized, exactly for so few rows.
	if plan.EstimatedTokens != wantTokens {
		t.Fatalf("estimated %d tokens, want %d", plan.EstimatedTokens, wantTokens)
	}
	if plan.EstimatedCostUSD != tokens.CostUSD("text-embedding-3-small", wantTokens) {
		t.Fatalf("cost %s", plan.EstimatedCostUSD)
	}
}

func TestPlanTemplateEstimateAndRowsPerChunkOverride(t *testing.T) {
	m := sharedMinIO(t)
	rows := [][]string{{"id", "title", "body"}}
	var want int64
	for i := range 12 {
		title, body := fmt.Sprintf("Title %d", i), fmt.Sprintf("body &amp; more %d", i)
		rows = append(rows, []string{fmt.Sprint(i), title, body})
		want += int64(tokens.Count(fmt.Sprintf("Title %d: body & more %d", i, i)))
	}
	put(t, m, "plan/template.csv", csvBytes(t, rows))
	ing := ingestion(m, "plan/template.csv")
	ing.Spec.Mapping.TextColumn = ""
	ing.Spec.Mapping.TextTemplate = "{{.title}}: {{.body}}"
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), RowsPerChunk: 5})
	if err != nil {
		t.Fatal(err)
	}
	if plan.EstimatedTokens != want || plan.Chunks() != 3 || plan.RowsPerChunk != 5 {
		t.Fatalf("estimated %d tokens (want %d), %d chunks of %d", plan.EstimatedTokens, want, plan.Chunks(), plan.RowsPerChunk)
	}

	// A template naming a column the file lacks fails the plan, listing the header.
	ing.Spec.Mapping.TextTemplate = "{{.title}}: {{.summary}}"
	_, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonHeaderMismatch)
	if !strings.Contains(err.Error(), `"summary"`) || !strings.Contains(err.Error(), `"title"`) {
		t.Fatalf("error does not name the missing column and the header: %v", err)
	}
}

func TestPlanHeaderMissingColumnListsTheHeader(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "plan/wrong-header.csv", []byte("identifier,body\n1,hello\n"))
	_, err := planner.Plan(context.Background(), ingestion(m, "plan/wrong-header.csv"), planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonHeaderMismatch)
	var he *csvplan.HeaderError
	if !errors.As(err, &he) || len(he.Missing) != 1 || he.Missing[0] != "id" {
		t.Fatalf("error %v: want a header error missing id", err)
	}
	if !strings.Contains(err.Error(), `"identifier"`) {
		t.Fatalf("error does not list the header: %v", err)
	}

	put(t, m, "plan/empty.csv", nil)
	_, err = planner.Plan(context.Background(), ingestion(m, "plan/empty.csv"), planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonHeaderMismatch)
}

func TestPlanMissingObjectIsPermanent(t *testing.T) {
	m := sharedMinIO(t)
	_, err := planner.Plan(context.Background(), ingestion(m, "plan/nope.csv"), planner.Deps{S3: m.S3Client()})
	p := permanent(t, err, worker.ReasonSourceMissing)
	if !strings.Contains(p.Error(), "plan/nope.csv") {
		t.Fatalf("error does not name the object: %v", err)
	}
}

func TestPlanTooManyChunks(t *testing.T) {
	m := sharedMinIO(t)
	var b bytes.Buffer
	b.WriteString("id,body\n")
	for i := range worker.MaxChunks + 1 {
		fmt.Fprintf(&b, "%d,x\n", i)
	}
	put(t, m, "plan/many.csv", b.Bytes())
	_, err := planner.Plan(context.Background(), ingestion(m, "plan/many.csv"), planner.Deps{S3: m.S3Client(), RowsPerChunk: 1})
	permanent(t, err, worker.ReasonTooManyChunks)
	if !strings.Contains(err.Error(), "set rowsPerChunk to at least 2") {
		t.Fatalf("error does not say what rowsPerChunk fits: %v", err)
	}
}

func TestPlanMetabaseUnauthorizedIsPermanent(t *testing.T) {
	m := sharedMinIO(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"bad key"}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	ing := ingestion(m, "")
	ing.Spec.Source = v1alpha1.SourceSpec{Metabase: &v1alpha1.MetabaseSource{
		URL: srv.URL, QuestionID: 7, StageTo: v1alpha1.S3Stage{Bucket: bucket, KeyPrefix: "staged/",
			S3Connection: v1alpha1.S3Connection{Endpoint: m.Endpoint, Region: m.Region}},
	}}
	_, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), MetabaseAPIKey: "wrong"})
	permanent(t, err, worker.ReasonUnauthorized)
}

func TestRequiredColumnsAndLocate(t *testing.T) {
	spec := v1alpha1.MappingSpec{TextColumn: "body", NamespaceColumn: "kind",
		Metadata: v1alpha1.MetadataSpec{Include: "columns", Columns: []string{"a", "body", "b"}, Exclude: []string{"b"}}}
	// Without idColumn: the id column when the header has one, else none (the id is derived).
	if got := planner.RequiredColumns(spec, []string{"id", "body", "kind", "a"}); strings.Join(got, ",") != "id,body,kind,a" {
		t.Fatalf("required %q", got)
	}
	if got := planner.RequiredColumns(spec, []string{"body", "kind", "a"}); strings.Join(got, ",") != "body,kind,a" {
		t.Fatalf("required without an id column %q", got)
	}
	spec.IDColumn = "sku"
	if got := planner.RequiredColumns(spec, nil); strings.Join(got, ",") != "sku,body,kind,a" {
		t.Fatalf("required with idColumn %q", got)
	}
	ing := worker.Ingestion{TaskID: "t-9", Spec: v1alpha1.CsvIngestionSpec{Source: v1alpha1.SourceSpec{
		Metabase: &v1alpha1.MetabaseSource{StageTo: v1alpha1.S3Stage{Bucket: "b", KeyPrefix: "staged/"}}}}}
	loc, err := planner.Locate(ing)
	if err != nil || loc.Key != "staged/t-9.csv" || loc.Kind != planner.SourceMetabase {
		t.Fatalf("locate %+v, %v", loc, err)
	}
	// With its uid (a real ingestion): two ingestions given one task id stage apart.
	ing.UID = "8c1f0b52-7a0e-4d3e-9d55-2f3c4b5a6d7e"
	if loc, err := planner.Locate(ing); err != nil || loc.Key != "staged/t-9-8c1f0b52-7a0e-4d3e-9d55-2f3c4b5a6d7e.csv" {
		t.Fatalf("locate with uid %+v, %v", loc, err)
	}
	ing.Spec.Source.Metabase = nil
	if _, err := planner.Locate(ing); err == nil {
		t.Fatal("an ingestion without a source was located")
	}
	if _, err := planner.Delimiter(";;"); err == nil {
		t.Fatal("a two-character delimiter was accepted")
	}
	if d, err := planner.Delimiter("\t"); err != nil || d != '\t' {
		t.Fatalf("tab delimiter: %q, %v", d, err)
	}
}

// TestPlanMetabaseTruncated: an export at the instance's row limit, or cut without its final
// newline after the 200, fails planning with SourceTruncated under deleteMissing (its missing
// rows' vectors would be deleted) and is planned with a warning without it; a complete export
// plans clean.
func TestPlanMetabaseTruncated(t *testing.T) {
	m := sharedMinIO(t)
	for _, tc := range []struct {
		name, body string
		limit      int64
		want       string // "" : not truncated
	}{
		{"complete", "id,body\n1,a\n2,b\n", 3, ""},
		{"at the row limit", "id,body\n1,a\n2,b\n3,c\n", 3, "exactly 3 rows, the instance's export row limit"},
		{"cut after the 200", "id,body\n1,a\n2,b\n3,", 0, "ended without its final newline after 3 rows"},
		{"the default limit is not reached", "id,body\n1,a\n", 0, ""},
	} {
		for _, del := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/deleteMissing=%v", tc.name, del), func(t *testing.T) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/csv")
					_, _ = io.WriteString(w, tc.body)
				}))
				defer srv.Close()
				ing := ingestion(m, "")
				ing.TaskID = fmt.Sprintf("trunc-%d", len(tc.name))
				ing.Spec.Source = v1alpha1.SourceSpec{Metabase: &v1alpha1.MetabaseSource{
					URL: srv.URL, QuestionID: 7, ExportRowLimit: tc.limit, StageTo: v1alpha1.S3Stage{Bucket: bucket, KeyPrefix: "staged/",
						S3Connection: v1alpha1.S3Connection{Endpoint: m.Endpoint, Region: m.Region}},
				}}
				if del {
					ing.Spec.Mapping.IDPrefix = "q."
					ing.Spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull, DeleteMissing: true}
				}
				plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client(), MetabaseAPIKey: "k"})
				switch {
				case tc.want == "":
					if err != nil || plan.SourceWarning != "" {
						t.Fatalf("plan %+v, %v; want a clean plan", plan, err)
					}
				case del:
					p := permanent(t, err, worker.ReasonSourceTruncated)
					if !strings.Contains(p.Error(), tc.want) || !strings.Contains(p.Error(), "deleteMissing") {
						t.Fatalf("error %v lacks %q", err, tc.want)
					}
				default:
					if err != nil || !strings.Contains(plan.SourceWarning, tc.want) {
						t.Fatalf("plan warning %q, %v; want %q", plan.SourceWarning, err, tc.want)
					}
				}
			})
		}
	}
}
