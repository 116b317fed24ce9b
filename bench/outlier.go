package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ingestfile"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// OutlierRowBytes is the size of the outlier row's one text field: 12 MiB of CJK text, a
// single pre-token, which once took a 400 MiB heap to tokenize.
const OutlierRowBytes = 12 << 20

// Outlier is the embedder's peak RSS on a file whose rows are ordinary but one, a 12 MiB CJK
// text that must be dead-lettered (too_many_tokens) without the process growing.
type Outlier struct {
	Rows                   int // rows in the file, the outlier included
	RowBytes               int
	MaxRSSMiB              float64
	MaxAnonMiB, MaxFileMiB float64
	Wall                   time.Duration
	Phase                  string
	Processed, Failed      int64
	DeadLetterReason       string // of the outlier row in the dead-letter object
	// The chunk alone (`embedder chunk`, as a chunk pod runs it).
	ChunkRSSMiB, ChunkAnonMiB, ChunkFileMiB float64
}

// runOutlier runs `embedder run` (plan and chunk in one process, dead letters on) over a file of
// 999 csvgen rows and the outlier.
func runOutlier(ctx context.Context, c Config, m *harness.MinIO, oa *fakeopenai.Server, pc *fakepinecone.Server, dir string) (*Outlier, error) {
	const rows = 1000
	c.logf("outlier: %d rows with one %d MiB CJK row", rows, OutlierRowBytes>>20)
	path, _, err := generate(dir, "outlier-base.csv", rows-1, 5)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	recs, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil || len(recs) < 2 {
		return nil, fmt.Errorf("outlier: read generated CSV: %v", err)
	}
	idCol, textCol := index(recs[0], "id"), index(recs[0], "formatted_text")
	if idCol < 0 || textCol < 0 {
		return nil, fmt.Errorf("outlier: generated header %q lacks id or formatted_text", recs[0])
	}
	row := append([]string(nil), recs[1]...)
	row[idCol] = "outlier"
	cjk := "北京欢迎你東京タワー" // 30 bytes
	row[textCol] = strings.Repeat(cjk, OutlierRowBytes/len(cjk))
	// The outlier sits in the middle, so rows before and after it are ingested.
	all := append(append(append([][]string{}, recs[:rows/2]...), row), recs[rows/2:]...)
	var b strings.Builder
	if err := csv.NewWriter(&b).WriteAll(all); err != nil {
		return nil, err
	}
	key := "bench/outlier.csv"
	if _, err := m.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: ptr(stack.Bucket), Key: &key, Body: strings.NewReader(b.String())}); err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	b.Reset()

	name := "outlier"
	obj := &v1alpha1.CsvIngestion{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CsvIngestion"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: stack.Bucket, Key: key,
				S3Connection: v1alpha1.S3Connection{Region: "us-east-1", Endpoint: m.Endpoint}}},
			Mapping: v1alpha1.MappingSpec{IDColumn: "id", IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", Dimensions: int32(c.Dimensions), BaseURL: oa.URL(),
				RequestsPerMinute: 1000000, TokensPerMinute: 1000000000},
			Target:     v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: stack.Index, Namespace: name}},
			Chunking:   v1alpha1.ChunkingSpec{RowsPerChunk: rows, Parallelism: 1},
			DeadLetter: &v1alpha1.DeadLetterSpec{Bucket: stack.Bucket, KeyPrefix: "failed/"},
		},
	}
	manifest := filepath.Join(dir, name+".json")
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(manifest, j, 0o600); err != nil {
		return nil, err
	}
	// The chunk alone, as a chunk pod runs it: planned here, then `embedder chunk`.
	ing, err := ingestfile.Parse(j)
	if err != nil {
		return nil, err
	}
	ing.TaskID = name + "-chunk"
	plan, err := planner.Plan(ctx, ing, planner.Deps{S3: m.S3Client()})
	if err != nil {
		return nil, err
	}
	ca, err := plan.Chunk(0)
	if err != nil {
		return nil, err
	}
	enc, err := ing.Encode()
	if err != nil {
		return nil, err
	}
	tl := filepath.Join(dir, "outlier-chunk.result")
	chunk, err := execEmbedder(ctx, c, m, pc, []string{"chunk", "--index", "0", "--offset", strconv.FormatInt(ca.Offset, 10),
		"--length", strconv.FormatInt(ca.Length, 10), "--first-row", "0", "--rows", strconv.FormatInt(ca.Rows, 10),
		"--etag", ca.ETag, "--compression", ca.Compression, "--termination-log", tl},
		[]string{worker.EnvIngestion + "=" + enc}, name+"-chunk", "")
	if err != nil {
		return nil, err
	}
	var res worker.Result
	if b, err := os.ReadFile(tl); err != nil || json.Unmarshal(b, &res) != nil || res.Failed != 1 || res.Processed != rows-1 {
		return nil, fmt.Errorf("outlier: chunk result %+v (%v), want 1 failed and %d processed", res, err, rows-1)
	}

	run, err := execEmbedder(ctx, c, m, pc, []string{"run", "-f", manifest, "--progress", "none"}, nil, name, "")
	if err != nil {
		return nil, err
	}
	var sum struct {
		Phase     string `json:"phase"`
		TaskID    string `json:"taskID"`
		Processed int64  `json:"processed"`
		Failed    int64  `json:"failed"`
	}
	if err := json.Unmarshal([]byte(run.Stdout), &sum); err != nil {
		return nil, fmt.Errorf("outlier: summary %q: %w", run.Stdout, err)
	}
	out := &Outlier{Rows: rows, RowBytes: len(row[textCol]), MaxRSSMiB: run.MaxRSSMiB, MaxAnonMiB: run.MaxAnonMiB, MaxFileMiB: run.MaxFileMiB,
		Wall: run.Wall, Phase: sum.Phase, Processed: sum.Processed, Failed: sum.Failed,
		ChunkRSSMiB: chunk.MaxRSSMiB, ChunkAnonMiB: chunk.MaxAnonMiB, ChunkFileMiB: chunk.MaxFileMiB}
	dlKey := "failed/" + sum.TaskID + "/chunk-0000.csv"
	got, err := m.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: ptr(stack.Bucket), Key: &dlKey})
	if err != nil {
		return nil, fmt.Errorf("outlier: dead letter %s: %w", dlKey, err)
	}
	dl, err := csv.NewReader(got.Body).ReadAll()
	_ = got.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("outlier: dead letter: %w", err)
	}
	// The outlier is the only failed row; with overlongText: fail it is not read into memory, so
	// its dead letter holds its row number and position, not its fields.
	if len(dl) == 2 && dl[1][len(dl[1])-3] == strconv.Itoa(rows/2-1) {
		out.DeadLetterReason = dl[1][len(dl[1])-2]
	}
	_, _ = m.S3Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: ptr(stack.Bucket), Key: &key})
	c.logf("outlier: chunk peak RSS %.1f MiB; run peak RSS %.1f MiB (anon %.1f, file %.1f), %s, processed %d, failed %d (%s)", out.ChunkRSSMiB, out.MaxRSSMiB, out.MaxAnonMiB, out.MaxFileMiB, out.Wall.Round(time.Millisecond), out.Processed, out.Failed, out.DeadLetterReason)
	return out, nil
}

func index(header []string, name string) int {
	for i, h := range header {
		if h == name {
			return i
		}
	}
	return -1
}
