package planner_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vectordb-io/vectordb-operator/internal/duplicates"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// countingS3 is an S3 client for m that counts the body bytes of every GET response read.
func countingS3(m *harness.MinIO) (*s3.Client, *atomic.Int64) {
	var n atomic.Int64
	hc := awshttp.NewBuildableClient()
	cl := s3.New(s3.Options{
		Region: m.Region, BaseEndpoint: aws.String(m.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
		HTTPClient:  &countingDoer{next: hc, n: &n},
	})
	return cl, &n
}

type countingDoer struct {
	next interface {
		Do(*http.Request) (*http.Response, error)
	}
	n *atomic.Int64
}

func (c *countingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err == nil && req.Method == http.MethodGet {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: c.n}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

func getObject(t *testing.T, m *harness.MinIO, key string) []byte {
	t.Helper()
	out, err := m.S3Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// The header is read the same on every path: a BOM before a quoted header (pandas utf-8-sig with
// QUOTE_ALL) and a BOM before a blank first line both plan.
func TestPlanBOMHeaders(t *testing.T) {
	m := sharedMinIO(t)
	for name, head := range map[string]string{
		"quoted":     "\xEF\xBB\xBF\"id\",\"body\",\"kind\"\r\n",
		"blank-line": "\xEF\xBB\xBF\r\n\"id\",body,kind\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			data := head + "\"1\",\"a\",\"k\"\r\n\"2\",\"b\",\"k\"\r\n"
			key := "bom/" + name + ".csv"
			put(t, m, key, []byte(data))
			plan, err := planner.Plan(context.Background(), ingestion(m, key), planner.Deps{S3: m.S3Client()})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(plan.Header, "|") != "id|body|kind" || plan.TotalRows != 2 || plan.Staged != nil {
				t.Fatalf("plan %+v", plan)
			}
		})
	}
}

// A gzip object is inflated once, by the planner, into a staged plain copy; the plan's offsets are
// positions in that copy and its chunks read it, pinned to its ETag, with ranged GETs.
func TestPlanGzipStagesAPlainCopy(t *testing.T) {
	m := sharedMinIO(t)
	rows := [][]string{{"id", "body", "kind"}}
	for i := range 3000 {
		rows = append(rows, []string{fmt.Sprint(i), fmt.Sprintf("text of row %d, \"quoted\"\nwith a newline", i), "k"})
	}
	plain := csvBytes(t, rows)
	gz := gzipBytes(t, plain)
	put(t, m, "gz/products.csv.gz", gz)
	cl, read := countingS3(m)
	ing := ingestion(m, "gz/products.csv.gz")
	ing.Spec.Chunking.RowsPerChunk = 1000
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: cl})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Compression != "gzip" || plan.Staged == nil || plan.Staged.Key != "vectordb-staging/task-1-uid-1.utf8.csv" || plan.Staged.ETag == "" {
		t.Fatalf("plan %+v staged %+v", plan, plan.Staged)
	}
	if got := read.Load(); got != int64(len(gz)) {
		t.Fatalf("the planner read %d bytes, want the %d compressed bytes once", got, len(gz))
	}
	staged := getObject(t, m, plan.Staged.Key)
	if !bytes.Equal(staged, plain) || plan.Staged.SizeBytes != int64(len(plain)) || plan.Offsets[3] != int64(len(plain)) {
		t.Fatalf("staged %d bytes (size %d, last offset %d), want the %d decompressed bytes", len(staged), plan.Staged.SizeBytes, plan.Offsets[3], len(plain))
	}
	args, _ := plan.Chunk(2)
	if args.Key != plan.Staged.Key || args.ETag != plan.Staged.ETag || args.Compression != "none" ||
		!strings.HasPrefix(string(staged[args.Offset:]), "2000,") || !strings.Contains(strings.Join(args.Flags(), " "), "--key="+plan.Staged.Key) {
		t.Fatalf("chunk 2 args %+v", args)
	}
	if keys := plan.StagedKeys(); len(keys) != 1 || keys[0] != plan.Staged.Key {
		t.Fatalf("staged keys %q", keys)
	}
}

// A failed plan leaves no staged object (the multipart upload is aborted).
func TestPlanGzipHeaderMismatchStagesNothing(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "gz/bad.csv.gz", gzipBytes(t, []byte("sku,body\n1,a\n")))
	ing := ingestion(m, "gz/bad.csv.gz")
	ing.TaskID = "task-bad"
	_, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonHeaderMismatch)
	_, herr := m.S3Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("vectordb-staging/task-bad-uid-1.utf8.csv")})
	if herr == nil {
		t.Fatal("a failed plan left a staged copy")
	}
}

// Latin-1, Windows-1252 and UTF-16 (either byte order, from the BOM) are converted once into a
// staged UTF-8 copy.
func TestPlanEncodingsStageUTF8(t *testing.T) {
	m := sharedMinIO(t)
	want := "id,body,kind\n1,café – “quoted” €,k\n2,naïve,k\n"
	utf16 := func(bigEndian bool) []byte {
		var b []byte
		if bigEndian {
			b = append(b, 0xFE, 0xFF)
		} else {
			b = append(b, 0xFF, 0xFE)
		}
		for _, r := range want {
			hi, lo := byte(r>>8), byte(r)
			if bigEndian {
				b = append(b, hi, lo)
			} else {
				b = append(b, lo, hi)
			}
		}
		return b
	}
	cases := []struct {
		enc  string
		data []byte
		want string
	}{
		{"windows-1252", []byte("id,body,kind\n1,caf\xe9 \x96 \x93quoted\x94 \x80,k\n2,na\xefve,k\n"), want},
		{"latin-1", []byte("id,body,kind\n1,caf\xe9,k\n2,na\xefve,k\n"), "id,body,kind\n1,café,k\n2,naïve,k\n"},
		{"utf-16", utf16(false), want},
		{"utf-16", utf16(true), want},
		{"utf-16", utf16(true)[2:], want},  // big-endian without a BOM: told by its ASCII
		{"utf-16", utf16(false)[2:], want}, // little-endian without a BOM
		// Windows-1252's unassigned 0x81 cannot be decoded: it stays not UTF-8, so the chunk
		// dead-letters its row as invalid_utf8 instead of embedding a replacement character.
		{"windows-1252", []byte("id,body,kind\n1,caf\xe9,k\n2,a\x81b,k\n"), "id,body,kind\n1,café,k\n2,a\xffb,k\n"},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s-%d", c.enc, i), func(t *testing.T) {
			key := fmt.Sprintf("enc/%d.csv", i)
			put(t, m, key, c.data)
			ing := ingestion(m, key)
			ing.TaskID = fmt.Sprintf("task-enc-%d", i)
			ing.Spec.Source.CSV.Encoding = c.enc
			plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
			if err != nil {
				t.Fatal(err)
			}
			if plan.Staged == nil || plan.TotalRows != 2 || strings.Join(plan.Header, "|") != "id|body|kind" {
				t.Fatalf("plan %+v", plan)
			}
			if got := string(getObject(t, m, plan.Staged.Key)); got != c.want {
				t.Fatalf("staged %q, want %q", got, c.want)
			}
		})
	}
	ing := ingestion(m, "enc/0.csv")
	ing.Spec.Source.CSV.Encoding = "ebcdic"
	_, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonPermanentError)

	// A UTF-16 file read as UTF-8 (the default) is refused with the field to set, not planned with
	// a garbled header.
	put(t, m, "enc/utf16-as-utf8.csv", utf16(true)[2:])
	ing = ingestion(m, "enc/utf16-as-utf8.csv")
	_, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if p := permanent(t, err, worker.ReasonPermanentError); !strings.Contains(p.Error(), "spec.source.csv.encoding: utf-16") {
		t.Errorf("UTF-16 read as UTF-8: %v", p)
	}
}

// Duplicate vector ids (after trimming, per namespace) are found across the whole file, the first
// occurrence kept; each chunk reads its own part of the list.
func TestPlanDuplicateIDs(t *testing.T) {
	m := sharedMinIO(t)
	data := "id,body,kind\n" +
		"12,a,k\n" + // row 0
		"13,b,k\n" + // 1
		" 12,c,k\n" + // 2: duplicate of 0 after trimming
		",d,k\n" + // 3: no id: fails on its own, not a duplicate
		"14,e,k\n" + // 4
		"13,f,k\n" + // 5: duplicate of 1, in the next chunk
		"12\t,g,k\n" + // 6: duplicate of 0
		"bad,\"h\n" // 7: malformed, not a duplicate
	put(t, m, "dups/a.csv", []byte(data))
	ing := ingestion(m, "dups/a.csv")
	ing.TaskID = "task-dups"
	ing.Spec.Chunking.RowsPerChunk = 4
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if err != nil {
		t.Fatal(err)
	}
	if plan.DuplicateRows != 3 || plan.Duplicates == nil || plan.Duplicates.Key != "vectordb-staging/task-dups-uid-1.duplicates" || plan.Staged != nil {
		t.Fatalf("plan %+v, duplicates %+v", plan, plan.Duplicates)
	}
	want := []map[int64]int64{{2: 0}, {5: 1, 6: 0}}
	for i := range plan.Chunks() {
		args, _ := plan.Chunk(i)
		if args.DuplicatesKey != plan.Duplicates.Key || args.DuplicatesETag != plan.Duplicates.ETag {
			t.Fatalf("chunk %d args %+v", i, args)
		}
		got, err := duplicates.ForChunk(context.Background(), func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			out, err := m.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(args.DuplicatesKey),
				Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)), IfMatch: aws.String(args.DuplicatesETag)})
			if err != nil {
				return nil, err
			}
			return out.Body, nil
		}, i)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Fatalf("chunk %d duplicates %v (%v), want %v", i, got, err, want[i])
		}
	}
	// With a namespace column, the same id in two namespaces is two vectors.
	put(t, m, "dups/ns.csv", []byte("id,body,kind\n1,a,x\n1,b,y\n1,c,x\n"))
	ing = ingestion(m, "dups/ns.csv")
	ing.TaskID = "task-dups-ns"
	ing.Spec.Mapping.NamespaceColumn = "kind"
	plan, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if err != nil || plan.DuplicateRows != 1 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	// A row with an empty namespace column goes to the target namespace, as the chunks map it:
	// the same id there is the same vector as a row naming that namespace.
	put(t, m, "dups/default-ns.csv", []byte("id,body,kind\n1,a,\n1,b,v2\n2,c,v3\n"))
	ing = ingestion(m, "dups/default-ns.csv")
	ing.TaskID = "task-dups-default-ns"
	ing.Spec.Mapping.NamespaceColumn = "kind"
	ing.Spec.Target.Pinecone.Namespace = "v2"
	plan, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if err != nil || plan.DuplicateRows != 1 {
		t.Fatalf("default namespace: %d duplicate rows (%v), want 1: row 1 repeats row 0's vector in v2", plan.DuplicateRows, err)
	}
}

// Without an id column (idColumn left empty), the plan does not fail with HeaderMismatch; identical
// rows are duplicates of each other.
func TestPlanWithoutIDColumn(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "noid/a.csv", []byte("body,kind\na,k\nb,k\na,k\n"))
	ing := ingestion(m, "noid/a.csv")
	ing.TaskID = "task-noid"
	ing.Spec.Mapping.IDColumn = ""
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if err != nil {
		t.Fatal(err)
	}
	if plan.TotalRows != 3 || plan.DuplicateRows != 1 {
		t.Fatalf("plan %+v", plan)
	}
	// A named idColumn that is missing still fails.
	ing.Spec.Mapping.IDColumn = "id"
	_, err = planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	permanent(t, err, worker.ReasonHeaderMismatch)
}

// Cleanup deletes what the plan staged; a second run is harmless.
func TestCleanupDeletesStagedObjects(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "clean/a.csv.gz", gzipBytes(t, []byte("id,body,kind\n1,a,k\n1,b,k\n")))
	ing := ingestion(m, "clean/a.csv.gz")
	ing.TaskID = "task-clean"
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
	if err != nil {
		t.Fatal(err)
	}
	keys := plan.StagedKeys()
	if len(keys) != 2 {
		t.Fatalf("staged keys %q", keys)
	}
	cms := &memConfigMaps{}
	if err := planner.WritePlanConfigMap(context.Background(), cms, ing, plan); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got, err := planner.Cleanup(context.Background(), ing, planner.Deps{S3: m.S3Client()}, cms)
		if err != nil || len(got) != 2 {
			t.Fatalf("cleanup %q, %v", got, err)
		}
	}
	for _, k := range keys {
		if _, err := m.S3Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err == nil {
			t.Fatalf("%s still there", k)
		}
	}
	// The source is never touched.
	getObject(t, m, "clean/a.csv.gz")
}

// A foreground deletion removes the plan ConfigMap before the cleanup Job runs: the cleanup then
// deletes the keys named by the ingestion's task id and UID, and only those.
func TestCleanupWithoutThePlanConfigMap(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "clean/fg.csv.gz", gzipBytes(t, []byte("id,body,kind\n1,a,k\n1,b,k\n")))
	plans := map[string][]string{}
	for _, uid := range []string{"uid-gone", "uid-other"} {
		ing := ingestion(m, "clean/fg.csv.gz")
		ing.TaskID, ing.UID = "task-fg", uid
		plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
		if err != nil {
			t.Fatal(err)
		}
		if plans[uid] = plan.StagedKeys(); len(plans[uid]) != 2 {
			t.Fatalf("staged keys %q", plans[uid])
		}
	}
	ing := ingestion(m, "clean/fg.csv.gz")
	ing.TaskID, ing.UID = "task-fg", "uid-gone"
	got, err := planner.Cleanup(context.Background(), ing, planner.Deps{S3: m.S3Client()}, &memConfigMaps{})
	if err != nil || !slices.Equal(got, plans["uid-gone"]) {
		t.Fatalf("cleanup without the plan: %q, %v; want the planner's keys %q", got, err, plans["uid-gone"])
	}
	head := func(k string) error {
		_, err := m.S3Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
		return err
	}
	for _, k := range plans["uid-gone"] {
		if head(k) == nil {
			t.Errorf("%s still there", k)
		}
	}
	// Another ingestion's staged objects (same task id, another UID) are untouched.
	for _, k := range plans["uid-other"] {
		if err := head(k); err != nil {
			t.Errorf("%s of the other ingestion: %v", k, err)
		}
	}
}

// memConfigMaps holds one ConfigMap.
type memConfigMaps struct {
	mu sync.Mutex
	cm *corev1.ConfigMap
}

func (c *memConfigMaps) Get(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cm == nil || c.cm.Name != name || c.cm.Namespace != ns {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, name)
	}
	return c.cm.DeepCopy(), nil
}

func (c *memConfigMaps) Create(_ context.Context, cm *corev1.ConfigMap) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cm != nil {
		return apierrors.NewAlreadyExists(schema.GroupResource{Resource: "configmaps"}, cm.Name)
	}
	c.cm = cm.DeepCopy()
	return nil
}

func (c *memConfigMaps) Update(_ context.Context, cm *corev1.ConfigMap) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cm = cm.DeepCopy()
	return nil
}
