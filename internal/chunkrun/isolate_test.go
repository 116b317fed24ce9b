package chunkrun_test

import (
	"context"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// TestRefusedRowsAreIsolatedAndDeadLettered runs real chunks against the strict fakes and MinIO:
// 1% of the rows carry a marker the fake OpenAI refuses with a 400 (for the whole request, as the
// API does), 1% have ids the fake Pinecone refuses with InvalidArgument, and one row is a 12 MiB
// CJK field. Every chunk must exit without error, those rows must be dead-lettered with the API's
// own message, and every other row upserted.
func TestRefusedRowsAreIsolatedAndDeadLettered(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	const (
		n          = 3000
		marker     = "zqxrefusedzqx"
		openaiMsg  = "Invalid input: this text cannot be embedded."
		pineconeMs = "Vector contains a forbidden value"
	)
	e.openai.RefuseMarker(marker, openaiMsg)
	rows := genLegacy(n, 77)
	want := map[string][2]string{} // row number → reason, detail
	refusedIDs := map[string]bool{}
	for i := range rows {
		switch {
		case i%100 == 7:
			rows[i].fields[1] += " " + marker
			want[strconv.Itoa(i)] = [2]string{embedding.ReasonRefused, openaiMsg}
		case i%100 == 42:
			refusedIDs["239."+rows[i].id()] = true
			want[strconv.Itoa(i)] = [2]string{pinecone.ReasonRefused, pineconeMs}
		}
	}
	const huge = 1500
	rows[huge].fields[1] = strings.Repeat("北京欢迎你東京タワー", 12<<20/30)
	want[strconv.Itoa(huge)] = [2]string{embedding.ReasonTooManyTokens, ""}
	e.index.RefuseVectors(func(id string) bool { return refusedIDs[id] }, pineconeMs)

	key := e.prefix + "refused.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	// Budgets that do not make the test wait: bisection costs a dozen requests a refused row.
	ing.Spec.Embedding.TokensPerMinute = 10000000
	ing.Spec.Embedding.RequestsPerMinute = 100000
	ing.Spec.Embedding.MaxInputsPerRequest = 64
	plan := e.plan(ing)
	results, err := e.runChunks(ing, plan, 3)
	if err != nil {
		t.Fatalf("a chunk failed: %v", err)
	}
	var failed, processed int64
	for _, r := range results {
		failed += r.Failed
		processed += r.Processed
	}
	if failed != int64(len(want)) || processed != int64(n-len(want)) || e.index.Count() != n-len(want) {
		t.Fatalf("failed %d, processed %d, index %d; want %d failed and %d upserted", failed, processed, e.index.Count(), len(want), n-len(want))
	}

	got := map[string][2]string{}
	// The huge row alone passes the 8 MiB a dead-letter part holds: its chunk writes two parts.
	list, err := e.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String(bucket), Prefix: aws.String(ing.Spec.DeadLetter.KeyPrefix + ing.ObjectID() + "/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range list.Contents {
		data, err := e.get(*obj.Key)
		if err != nil {
			t.Fatalf("dead letter %s: %v", *obj.Key, err)
		}
		for _, rec := range readCSV(t, data)[1:] {
			reason, detail := rec[len(rec)-2], rec[len(rec)-1]
			if reason == embedding.ReasonTooManyTokens {
				// Not read into memory: the dead letter holds its position, not its fields.
				if rec[1] != "" || !strings.Contains(detail, "the row at byte ") {
					t.Errorf("the huge row was dead-lettered with %d bytes of text and detail %q", len(rec[1]), detail)
				}
				detail = ""
			}
			got[rec[len(rec)-3]] = [2]string{reason, detail}
		}
	}
	if !reflect.DeepEqual(got, want) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("row %s: dead-lettered as %q, want %q", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("row %s dead-lettered as %q, want it upserted", k, v)
			}
		}
	}
	// The other rows are all there: no row was lost in a split.
	stored := map[string]bool{}
	for _, ns := range e.index.Namespaces() {
		for id := range e.index.Vectors(ns) {
			stored[ns+"/"+id] = true
		}
	}
	for i, r := range rows {
		if _, bad := want[strconv.Itoa(i)]; bad {
			continue
		}
		ns := r.recordType()
		if ns == "" {
			ns = "v2"
		}
		if !stored[ns+"/239."+r.id()] {
			t.Fatalf("row %d (%s) is neither upserted nor dead-lettered", i, r.id())
		}
	}
}

// TestOverlongTextTruncated: with overlongText: truncate a text over the model's limit is
// embedded from its first 8,127 tokens, and the row is upserted, not failed.
func TestOverlongTextTruncated(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(20, 5)
	long := "alpha" + strings.Repeat(" beta gamma", 12000) // about 24,000 tokens
	rows[7].fields[1], rows[7].wantText = long, long
	key := e.prefix + "long.csv"
	e.put(key, csvBytes(t, legacyCSV(rows)))
	ing := e.ingestion(key)
	ing.Spec.Mapping.OverlongText = "truncate"
	plan := e.plan(ing)
	results, err := e.runChunks(ing, plan, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r := results[0]; r.Failed != 0 || r.Processed != 20 {
		t.Fatalf("result %+v, want all 20 upserted", r)
	}
	ns := rows[7].recordType()
	if ns == "" {
		ns = "v2"
	}
	v, ok := e.index.Vectors(ns)["239."+rows[7].id()]
	want := fakeopenai.Vector(tokens.Truncate(long, embedding.InputTokenLimit), dims)
	if !ok || !slices.Equal(v.Values, want) {
		t.Fatalf("the long row's vector is not the embedding of its first %d tokens", embedding.InputTokenLimit)
	}
}
