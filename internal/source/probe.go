package source

import (
	"bytes"
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Put writes a small object. Its error is classified as reads are: AccessDenied and NoSuchBucket
// are a *worker.PermanentError, other errors are retryable.
func Put(ctx context.Context, cl *s3.Client, bucket, key string, body []byte) error {
	ct := "text/plain"
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(body), ContentType: &ct}); err != nil {
		what := fmt.Sprintf("s3://%s/%s", bucket, key)
		if perr := classify(what, err); isPermanent(perr) {
			return perr
		}
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

func isPermanent(err error) bool {
	_, ok := worker.AsPermanent(err)
	return ok
}

// ProbeWrite writes a small object at s3://bucket/key and deletes it again, so that a location the
// worker cannot write to is found before any row is paid for, not after. A failed write is Put's
// error; a failed delete does not fail the probe (writing is what the location is for): it is
// returned as leftover so the caller can log it.
func ProbeWrite(ctx context.Context, cl *s3.Client, bucket, key string) (leftover, err error) {
	if err := Put(ctx, cl, bucket, key, []byte("vectordb-operator write probe; safe to delete\n")); err != nil {
		return nil, err
	}
	if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key}); err != nil {
		return fmt.Errorf("delete write probe s3://%s/%s: %w", bucket, key, err), nil
	}
	return nil, nil
}
