package planner_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// The dead-letter location is probed before the object is read: a bucket that does not exist
// fails the plan permanently, naming the bucket and the field to change, without a byte of the
// source read. A writable one leaves no probe object behind.
func TestPlanProbesTheDeadLetterLocation(t *testing.T) {
	m := sharedMinIO(t)
	put(t, m, "probe/items.csv", csvBytes(t, [][]string{{"id", "body"}, {"1", "a"}, {"2", "b"}}))
	cl, read := countingS3(m)

	ing := ingestion(m, "probe/items.csv")
	ing.Spec.DeadLetter = &v1alpha1.DeadLetterSpec{Bucket: "no-such-dead-letter-bucket", KeyPrefix: "failed/"}
	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: cl})
	p := permanent(t, err, worker.ReasonDeadLetterUnwritable)
	if plan != nil || !strings.Contains(p.Error(), "s3://no-such-dead-letter-bucket/failed/") || !strings.Contains(p.Error(), "spec.deadLetter") ||
		!strings.Contains(p.Error(), "Nothing was embedded") {
		t.Errorf("plan %v, error %v", plan, err)
	}
	if n := read.Load(); n != 0 {
		t.Errorf("%d bytes of the source read before the dead-letter location was checked", n)
	}

	ing.Spec.DeadLetter = &v1alpha1.DeadLetterSpec{Bucket: bucket, KeyPrefix: "probe/failed/"}
	if _, err := planner.Plan(context.Background(), ing, planner.Deps{S3: cl}); err != nil {
		t.Fatalf("writable dead-letter location: %v", err)
	}
	out, err := m.S3Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("probe/failed/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 0 {
		t.Errorf("the probe left %d objects under probe/failed/", len(out.Contents))
	}
}

// A corrupt gzip object fails the plan once, permanently (reason CorruptSource): downloading it
// again gives the same bytes. Both a flipped byte in the deflate data (a checksum or data error)
// and a file cut short (all its bytes read, the stream unfinished) are corrupt.
func TestPlanCorruptGzipIsPermanent(t *testing.T) {
	m := sharedMinIO(t)
	rows := [][]string{{"id", "body"}}
	for i := range 2000 {
		rows = append(rows, []string{fmt.Sprint(i), fmt.Sprintf("row %d of a compressed export", i)})
	}
	gz := gzipBytes(t, csvBytes(t, rows))
	flipped := append([]byte(nil), gz...)
	flipped[len(flipped)/2] ^= 0xff
	for name, data := range map[string][]byte{
		"flipped byte": flipped,
		"cut short":    gz[:len(gz)*2/3],
	} {
		t.Run(name, func(t *testing.T) {
			key := "corrupt/" + strings.ReplaceAll(name, " ", "-") + ".csv.gz"
			put(t, m, key, data)
			ing := ingestion(m, key)
			_, err := planner.Plan(context.Background(), ing, planner.Deps{S3: m.S3Client()})
			p := permanent(t, err, worker.ReasonCorruptSource)
			if !strings.Contains(p.Error(), key) || !strings.Contains(p.Error(), "gzip") {
				t.Errorf("message does not name the object and the problem: %v", p)
			}
		})
	}
}
