package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

const (
	hostileMarker    = "zqxhostilerefusedzqx"
	hostileOpenAIMsg = "Invalid input: the hostile test refuses this text."
	hostilePCMsg     = "Vector refused by the hostile test"
)

// hostileRows is the size of the hostile file: 10,000 rows by default (every hostile case occurs at
// least 20 times, the 12 MiB row once, duplicates across chunks), E2E_HOSTILE_ROWS to change.
func hostileRows(t *testing.T) int {
	if s := os.Getenv("E2E_HOSTILE_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			t.Fatalf("E2E_HOSTILE_ROWS=%q: want a number ≥ 1000", s)
		}
		return n
	}
	return 10000
}

// genHostileFile writes the hostile CSV: a UTF-8 BOM before a quoted header (pandas utf-8-sig,
// QUOTE_ALL), CRLF line ends, and rows of which 1% carry text the OpenAI fake refuses, 1% ids the
// Pinecone fake refuses, 0.2% invalid UTF-8, 0.4% an id that repeats an earlier row's after
// trimming, and one a 12 MiB CJK text. It returns the file and the expected dead letters by row
// (reason), the ids Pinecone refuses, and the number of duplicates.
func genHostileFile(n int) (data []byte, want map[string]string, refused map[string]bool, dups int) {
	var b bytes.Buffer
	b.WriteString("\xEF\xBB\xBF\"id\",\"formatted_text\",\"record_type\",\"title\"\r\n")
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	want = map[string]string{}
	refused = map[string]bool{}
	huge := n / 2
	for i := range n {
		id := fmt.Sprintf("h%07d", i)
		text := fmt.Sprintf("Row %d of the hostile file, with a comma, a \"quote\" and\na newline.", i)
		ns := []string{"", "product", "event"}[i%3]
		switch {
		case i == huge:
			text = strings.Repeat("北京欢迎你東京タワー", 12<<20/30)
			want[strconv.Itoa(i)] = embedding.ReasonTooManyTokens
		case i%100 == 7:
			text += " " + hostileMarker
			want[strconv.Itoa(i)] = embedding.ReasonRefused
		case i%100 == 42:
			refused["239."+id] = true
			want[strconv.Itoa(i)] = pinecone.ReasonRefused
		case i%500 == 13:
			text = "caf\xe9 " + text
			want[strconv.Itoa(i)] = mapping.ReasonInvalidUTF8
		case i%250 == 99:
			// Row i-50 is ordinary (i-50 ≡ 49 mod 250 hits none of the cases above) and in the
			// same namespace (50 is not a multiple of 3, so use i-51: 51 ≡ 0 mod 3).
			id = fmt.Sprintf(" h%07d ", i-51)
			want[strconv.Itoa(i)] = chunkrun.ReasonDuplicateID
			dups++
		}
		b.WriteString(q(id) + "," + q(text) + "," + q(ns) + "," + q(fmt.Sprintf("title %d", i)) + "\r\n")
	}
	return b.Bytes(), want, refused, dups
}

// TestHostileCSVPartiallyCompletes runs the hostile file, gzip-compressed, through the whole
// stack. It must end PartiallyCompleted with every row accounted for (processed + failed +
// skipped = total), dead letters that match the hostile rows exactly with their reasons, no chunk
// failing, and the staged copy and duplicate list deleted once it has ended.
func TestHostileCSVPartiallyCompletes(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	n := hostileRows(t)
	const ns = "hostile"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	data, want, refused, dups := genHostileFile(n)
	st.OpenAI.RefuseMarker(hostileMarker, hostileOpenAIMsg)
	st.Pinecone.Index(stack.Index).RefuseVectors(func(id string) bool { return refused[id] }, hostilePCMsg)
	t.Cleanup(func() { st.Pinecone.Index(stack.Index).RefuseVectors(func(string) bool { return false }, hostilePCMsg) })
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	key := "exports/hostile.csv.gz"
	if err := st.Upload(ctx, key, gz.Bytes()); err != nil {
		t.Fatal(err)
	}
	t.Logf("hostile file: %d rows, %d bytes, %d gzip", n, len(data), gz.Len())
	data = nil

	obj := st.LegacyIngestion(ns, "hostile", key)
	obj.Spec.Mapping.NamespaceColumn = "record_type"
	obj.Spec.Chunking.MaxFailedRowsPercent = 5
	obj.Spec.Chunking.Parallelism = 4
	obj.Spec.Chunking.RowsPerChunk = int32(max(1000, n/40))
	obj.Spec.Embedding.MaxInputsPerRequest = 256
	obj = apply(t, obj)
	final := waitTerminal(t, obj, 30*time.Minute)
	s := final.Status
	var wantFailed int64
	for _, r := range want {
		if r != chunkrun.ReasonDuplicateID {
			wantFailed++
		}
	}
	if s.Phase != v1alpha1.PhasePartiallyCompleted || s.Chunks.Failed != 0 || len(s.FailedChunks) != 0 ||
		s.Records.Total != int64(n) || s.Records.Processed+s.Records.Failed+s.Records.Skipped != s.Records.Total ||
		s.Records.Failed != wantFailed || s.Records.Skipped != int64(dups) {
		t.Fatalf("status %+v\nwant PartiallyCompleted, no failed chunk, %d rows = processed + %d failed + %d skipped", s, n, wantFailed, dups)
	}

	got := map[string]string{}
	details := map[string]string{}
	// A chunk writes its dead letters in 8 MiB parts (chunk-NNNN.csv, chunk-NNNN.part2.csv, ...):
	// the 12 MiB row alone fills one.
	list, err := st.MinIO.S3Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: strPtr(stack.Bucket), Prefix: strPtr("failed/" + worker.FromObject(final).ObjectID() + "/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Contents {
		body, err := objectOf(ctx, *o.Key)
		if err != nil {
			t.Fatal(err)
		}
		r := csv.NewReader(bytes.NewReader(body))
		r.FieldsPerRecord = -1
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatalf("dead letter %s: %v", *o.Key, err)
		}
		hdr := recs[0]
		rowCol, reasonCol, detailCol := indexOf(hdr, "_row"), indexOf(hdr, "_reason"), indexOf(hdr, "_detail")
		for _, rec := range recs[1:] {
			if _, twice := got[rec[rowCol]]; twice {
				t.Errorf("row %s dead-lettered twice", rec[rowCol])
			}
			got[rec[rowCol]] = rec[reasonCol]
			details[rec[rowCol]] = rec[detailCol]
		}
	}
	if fmt.Sprint(sortedMap(got)) != fmt.Sprint(sortedMap(want)) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("row %s: dead-lettered as %q, want %q", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("row %s dead-lettered as %q (%s), want it upserted", k, v, details[k])
			}
		}
		t.FailNow()
	}
	for row, reason := range want {
		d := details[row]
		switch reason {
		case embedding.ReasonRefused:
			if !strings.Contains(d, hostileOpenAIMsg) {
				t.Errorf("row %s: detail %q lacks the API's message", row, d)
			}
		case pinecone.ReasonRefused:
			if !strings.Contains(d, hostilePCMsg) {
				t.Errorf("row %s: detail %q lacks Pinecone's message", row, d)
			}
		case chunkrun.ReasonDuplicateID:
			i, _ := strconv.Atoi(row)
			if !strings.Contains(d, fmt.Sprintf("row %d's", i-51)) {
				t.Errorf("row %s: detail %q does not name the kept row %d", row, d, i-51)
			}
		}
	}
	// Every other row is a vector, once.
	vecs := vectorsFor(s.TaskID)
	stored := 0
	for _, byID := range vecs {
		stored += len(byID)
	}
	if int64(stored) != s.Records.Processed || stored != n-len(want) {
		t.Fatalf("%d vectors stored, %d processed, want %d", stored, s.Records.Processed, n-len(want))
	}
	// What the planner staged goes once the ingestion has ended.
	staged := "vectordb-staging/" + worker.FromObject(final).ObjectID() // task id and uid
	for _, k := range []string{staged + ".utf8.csv", staged + ".duplicates"} {
		waitFor(t, "staged "+k+" deleted", 3*time.Minute, func() (bool, string) {
			_, err := objectOf(ctx, k)
			return err != nil, "still there"
		})
	}
	waitTask(t, s.TaskID, "partially_completed", nil)
}

func objectOf(ctx context.Context, key string) ([]byte, error) {
	if _, err := st.MinIO.S3Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: strPtr(stack.Bucket), Key: &key}); err != nil {
		return nil, err
	}
	return st.Object(ctx, key)
}

func strPtr(s string) *string { return &s }
