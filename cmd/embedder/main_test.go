package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/localrun"
	"github.com/vectordb-io/vectordb-operator/internal/version"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	bucket      = "csv"
	openaiKey   = "sk-embedder-cmd-secret"
	pineconeKey = "pc-embedder-cmd-secret"
)

var (
	minioOnce sync.Once
	minio     *harness.MinIO
	minioErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if minio != nil {
		_ = minio.Stop()
	}
	os.Exit(code)
}

// world is MinIO with a small CSV, the fakes, and the environment a worker pod would get.
type world struct {
	minio  *harness.MinIO
	openai *fakeopenai.Server
	index  *fakepinecone.Index
	key    string
	rows   int
}

func newWorld(t *testing.T, rows int) *world {
	t.Helper()
	minioOnce.Do(func() { minio, minioErr = harness.NewMinIO(bucket) })
	if minioErr != nil {
		t.Fatalf("MinIO: %v", minioErr)
	}
	o, err := fakeopenai.Start(fakeopenai.Options{APIKeys: []string{openaiKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"products": 64}, APIKeys: []string{pineconeKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })

	var b bytes.Buffer
	b.WriteString("id,body,kind\n")
	for i := range rows {
		fmt.Fprintf(&b, "%d,\"<p>Product %d, a fine thing</p>\",kind%d\n", i, i, i%3)
	}
	key := strings.ReplaceAll(t.Name(), "/", "_") + "/products.csv"
	if _, err := minio.S3Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(b.Bytes()),
	}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(worker.EnvOpenAIAPIKey, openaiKey)
	t.Setenv(worker.EnvPineconeAPIKey, pineconeKey)
	t.Setenv(worker.EnvAWSAccessKeyID, minio.AccessKey)
	t.Setenv(worker.EnvAWSSecretKey, minio.SecretKey)
	t.Setenv(EnvPineconeControlHost, pc.ControlURL())
	return &world{minio: minio, openai: o, index: pc.Index("products"), key: key, rows: rows}
}

func (w *world) spec() v1alpha1.CsvIngestionSpec {
	return v1alpha1.CsvIngestionSpec{
		Source: v1alpha1.SourceSpec{
			S3:  &v1alpha1.S3Source{Bucket: bucket, Key: w.key, S3Connection: v1alpha1.S3Connection{Region: w.minio.Region, Endpoint: w.minio.Endpoint}},
			CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto"},
		},
		Mapping: v1alpha1.MappingSpec{IDColumn: "id", IDPrefix: "p.", TextColumn: "body", Sanitize: "basic", NamespaceColumn: "kind",
			Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}},
		Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", Dimensions: 64, BaseURL: w.openai.URL(),
			RequestsPerMinute: 600, TokensPerMinute: 1000000, MaxInputsPerRequest: 100},
		Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "products", BatchSize: 100}},
		Chunking: v1alpha1.ChunkingSpec{RowsPerChunk: 100, Parallelism: 2, RetriesPerChunk: 1, MaxFailedRowsPercent: 1,
			ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute}},
	}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = execute(context.Background(), args, &out, &errb)
	secrets := []string{openaiKey, pineconeKey}
	if minio != nil {
		secrets = append(secrets, minio.SecretKey)
	}
	for _, secret := range secrets {
		if strings.Contains(out.String(), secret) || strings.Contains(errb.String(), secret) {
			t.Fatalf("embedder %v printed a secret", args)
		}
	}
	return code, out.String(), errb.String()
}

func readResult(t *testing.T, path string) worker.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("termination message: %v", err)
	}
	if len(data) > worker.MaxMessageBytes {
		t.Fatalf("termination message is %d bytes", len(data))
	}
	res, err := worker.DecodeResult(string(data))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRunCommandIngestsAManifest(t *testing.T) {
	w := newWorld(t, 250)
	manifest := fmt.Sprintf(`apiVersion: ingestion.vectordb.io/v1alpha1
kind: CsvIngestion
metadata: {name: products-run}
spec:
  source:
    s3: {bucket: %s, key: %s, endpoint: %q}
  mapping: {textColumn: body, idPrefix: "p.", namespaceColumn: kind}
  embedding: {model: text-embedding-3-small, dimensions: 64, baseURL: %q, apiKeySecretRef: {name: openai}}
  target:
    pinecone: {index: products, apiKeySecretRef: {name: pinecone}}
`, bucket, w.key, w.minio.Endpoint, w.openai.URL())
	path := filepath.Join(t.TempDir(), "ingestion.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, "run", "-f", path, "--rows-per-chunk=40", "--parallelism=3", "--progress=lines")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	var sum localrun.Summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("stdout is not the JSON summary: %v\n%s", err, stdout)
	}
	if sum.Phase != "Completed" || sum.Chunks != 7 || sum.ChunksSucceeded != 7 || sum.VectorsUpserted != 250 ||
		sum.RowsRead != 250 || sum.TotalRows != 250 || sum.Tokens != w.openai.Stats().Tokens || sum.TaskID != "products-run" {
		t.Fatalf("summary %+v", sum)
	}
	if w.index.Count() != 250 || len(w.index.Vectors("kind1")) != 83 {
		t.Fatalf("index holds %d vectors, %d in kind1", w.index.Count(), len(w.index.Vectors("kind1")))
	}
	if !strings.Contains(stderr, "progress: 250/250 rows (100.0%)") {
		t.Fatalf("no final progress line on stderr:\n%s", stderr)
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "{") && !json.Valid([]byte(line)) {
			t.Fatalf("log line is not JSON: %s", line)
		}
	}
}

func TestPlanAndChunkCommands(t *testing.T) {
	w := newWorld(t, 150)
	ing := worker.Ingestion{Name: "products", Namespace: "default", UID: "uid-1", TaskID: "task-1", Spec: w.spec()}
	enc, _ := ing.Encode()
	t.Setenv(worker.EnvIngestion, enc)
	dir := t.TempDir()

	code, stdout, stderr := run(t, "plan", "--stdout", "--termination-log", filepath.Join(dir, "plan.log"))
	if code != 0 {
		t.Fatalf("plan exit %d\n%s", code, stderr)
	}
	var plan worker.Plan
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil || plan.Chunks() != 2 {
		t.Fatalf("plan %q: %v", stdout, err)
	}
	if res := readResult(t, filepath.Join(dir, "plan.log")); res.Role != worker.RolePlan || res.RowsRead != 150 || res.Tokens != plan.EstimatedTokens {
		t.Fatalf("plan result %+v", res)
	}

	// Chunk 0 through the flags the controller renders, the message path from the environment.
	t.Setenv(worker.EnvTerminationLog, filepath.Join(dir, "chunk0.log"))
	args, _ := plan.Chunk(0)
	if code, _, stderr := run(t, args.Flags()...); code != 0 {
		t.Fatalf("chunk 0 exit %d\n%s", code, stderr)
	}
	if res := readResult(t, filepath.Join(dir, "chunk0.log")); res.Processed != 100 || res.Failed != 0 || res.Tokens == 0 || res.Requests == 0 {
		t.Fatalf("chunk 0 result %+v", res)
	}

	// Chunk 1 with a key OpenAI refuses: the permanent exit code, the reason in the message.
	t.Setenv(worker.EnvOpenAIAPIKey, "sk-wrong")
	args, _ = plan.Chunk(1)
	code, _, stderr = run(t, append(args.Flags(), "--termination-log", filepath.Join(dir, "chunk1.log"))...)
	if code != worker.ExitPermanent {
		t.Fatalf("chunk 1 exit %d, want %d\n%s", code, worker.ExitPermanent, stderr)
	}
	if res := readResult(t, filepath.Join(dir, "chunk1.log")); res.Reason != worker.ReasonUnauthorized || res.Error == "" {
		t.Fatalf("chunk 1 result %+v", res)
	}
	if strings.Contains(stderr, "sk-wrong") {
		t.Fatal("the refused key was logged")
	}
	if w.index.Count() != 100 {
		t.Fatalf("index holds %d vectors, want 100", w.index.Count())
	}

	// A chunk without its ingestion cannot run: permanent, and still a message.
	t.Setenv(worker.EnvIngestion, "")
	code, _, _ = run(t, append(args.Flags(), "--termination-log", filepath.Join(dir, "noenv.log"))...)
	if code != worker.ExitPermanent || readResult(t, filepath.Join(dir, "noenv.log")).Reason != worker.ReasonPermanentError {
		t.Fatalf("missing %s: exit %d", worker.EnvIngestion, code)
	}
}

func TestPlanCommandWritesTheConfigMap(t *testing.T) {
	w := newWorld(t, 30)
	c := harness.StartCluster(t, harness.ClusterOptions{})
	obj := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: "products", Namespace: "default"}, Spec: w.spec()}
	obj.Spec.Embedding.APIKeySecretRef = v1alpha1.SecretKeyRef{Name: "openai"}
	obj.Spec.Target.Pinecone.APIKeySecretRef = v1alpha1.SecretKeyRef{Name: "pinecone"}
	if err := c.Client.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	enc, _ := worker.FromObject(obj).Encode()
	t.Setenv(worker.EnvIngestion, enc)
	t.Setenv("KUBECONFIG", c.Kubeconfig)
	log := filepath.Join(t.TempDir(), "plan.log")
	for attempt := range 2 { // a retried planner finds its own ConfigMap and updates it
		if code, _, stderr := run(t, "plan", "--termination-log", log); code != 0 {
			t.Fatalf("attempt %d: exit %d\n%s", attempt, code, stderr)
		}
	}
	var cm corev1.ConfigMap
	if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "products-plan"}, &cm); err != nil {
		t.Fatal(err)
	}
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil || plan.TotalRows != 30 || cm.Labels[worker.LabelRole] != worker.RolePlan || metav1.GetControllerOf(&cm).UID != obj.UID {
		t.Fatalf("ConfigMap %+v (%v)", cm, err)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, stdout, _ := run(t, "version")
	if code != 0 || strings.TrimSpace(stdout) != version.Version {
		t.Fatalf("version: %d %q", code, stdout)
	}
	if code, _, _ := run(t, "chunk", "--index=x"); code != worker.ExitUsage {
		t.Fatalf("bad flag: exit %d, want %d", code, worker.ExitUsage)
	}
}

// writeManifest writes spec as a CsvIngestion manifest.
func writeManifest(t *testing.T, name string, spec v1alpha1.CsvIngestionSpec) string {
	t.Helper()
	obj := v1alpha1.CsvIngestion{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CsvIngestion"},
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunCommandOutcomes(t *testing.T) {
	w := newWorld(t, 300)
	// One malformed row in 301 is within maxFailedRowsPercent 1: PartiallyCompleted, exit 0.
	if _, err := minio.S3Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(w.key + ".bad"),
		Body: strings.NewReader("id,body,kind\n" + distinctRows(0, 150) + "x,\"two\"x,k\n" + distinctRows(150, 150)),
	}); err != nil {
		t.Fatal(err)
	}
	spec := w.spec()
	spec.Source.S3.Key = w.key + ".bad"
	spec.DeadLetter = &v1alpha1.DeadLetterSpec{Bucket: bucket, KeyPrefix: "failed/"}
	code, stdout, stderr := run(t, "run", "-f", writeManifest(t, "partial", spec), "--progress=none")
	var sum localrun.Summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || code != 0 {
		t.Fatalf("exit %d: %v\n%s\n%s", code, err, stdout, stderr)
	}
	if sum.Phase != "PartiallyCompleted" || sum.Failed != 1 || sum.Processed != 300 || len(sum.DeadLetterKeys) != 1 ||
		len(sum.FailedSamples) != 1 || sum.FailedSamples[0].Reason != "unbalanced_quote" || sum.FailedSamples[0].Row != 150 {
		t.Fatalf("summary %+v", sum)
	}

	// More failed rows than allowed: Failed. (0 written out; a typed spec would omit it.)
	strict := writeManifest(t, "strict", spec)
	data, _ := os.ReadFile(strict)
	if !bytes.Contains(data, []byte("maxFailedRowsPercent: 1\n")) {
		t.Fatalf("manifest without maxFailedRowsPercent:\n%s", data)
	}
	_ = os.WriteFile(strict, bytes.Replace(data, []byte("maxFailedRowsPercent: 1\n"), []byte("maxFailedRowsPercent: 0\n"), 1), 0o600)
	code, stdout, _ = run(t, "run", "-f", strict, "--progress=none")
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || code != worker.ExitPermanent || sum.Phase != "Failed" {
		t.Fatalf("strict: exit %d, summary %+v (%v)", code, sum, err)
	}

	// A permanent error stops the run: the dimension the spec asks for is not the index's.
	spec = w.spec()
	spec.Embedding.Dimensions = 32
	code, stdout, _ = run(t, "run", "-f", writeManifest(t, "dims", spec), "--progress=none")
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || code != worker.ExitPermanent || sum.Phase != "Failed" || sum.Reason != worker.ReasonDimension {
		t.Fatalf("dimension: exit %d, summary %+v (%v)", code, sum, err)
	}

	// dryRun plans only.
	spec = w.spec()
	spec.DryRun = true
	code, stdout, _ = run(t, "run", "-f", writeManifest(t, "dry", spec), "--progress=none")
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || code != 0 || sum.Phase != "Planned" || sum.TotalRows != 300 || sum.VectorsUpserted != 0 {
		t.Fatalf("dry run: exit %d, summary %+v (%v)", code, sum, err)
	}
	if w.index.Count() != 300 { // p.0 … p.299: the row with id x is the malformed one
		t.Fatalf("index holds %d vectors", w.index.Count())
	}
}

// distinctRows renders n rows with ids from first on: distinct ids, so none is a duplicate_id.
func distinctRows(first, n int) string {
	var b strings.Builder
	for i := first; i < first+n; i++ {
		fmt.Fprintf(&b, "%d,text %d,k\n", i, i)
	}
	return b.String()
}
