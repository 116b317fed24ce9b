package chunkrun

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/deadletter"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// A chunk Job retries its pod (spec.chunking.retriesPerChunk), and every attempt reads the chunk
// from its first row. Rows an earlier attempt already upserted are not embedded again: they are
// stored with this ingestion's task_id (and, when spec.sync is set, the content hash of what
// would be written now), which only an earlier attempt of this chunk writes, since the planner
// gives every vector id of the file to one row. Checking costs a Pinecone fetch per slice of
// rows, so a chunk checks only when it may be a retry: it leaves a marker next to its dead
// letters when it starts, and an attempt that finds the marker is a retry.
//
// A task id is not one CsvIngestion's alone: spec.taskID is chosen freely and may be reused (a
// run deleted and created again with a fixed mapping or a changed file). Vectors stored with the
// task id by another CsvIngestion are not this one's upserts, so the marker is named by the
// object's UID too, and another object's marker is never taken for an earlier attempt. Without a
// dead-letter location there is nowhere to leave one: a chunk then skips stored rows only when
// vectors carry a content hash (spec.sync), whose equality shows the stored vector is what this
// attempt would write; without one, a retry embeds its rows again rather than keep vectors that
// may be another ingestion's.

// markerSuffix ends the marker's name: <deadLetter.keyPrefix><taskID>-<uid>/chunk-NNNN.started,
// beside the chunk's dead letters (worker.Ingestion.ObjectID).
const markerSuffix = ".started"

// MarkerKey is where chunk's attempt marker is kept under spec.deadLetter.keyPrefix.
func MarkerKey(keyPrefix string, ing worker.Ingestion, chunk int) string {
	return deadletter.Base(keyPrefix, ing.ObjectID(), chunk) + markerSuffix
}

// startAttempt says whether this attempt must skip rows an earlier one upserted, and returns a
// function that removes the marker once the chunk has succeeded.
func startAttempt(ctx context.Context, cl *s3.Client, ing worker.Ingestion, chunk int) (resume bool, done func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if ing.TaskID == "" {
		return false, noop, nil // no task_id in the metadata to recognise an attempt's vectors by
	}
	d := ing.Spec.DeadLetter
	if d == nil || d.Bucket == "" {
		return ing.Spec.Sync != nil, noop, nil
	}
	key := MarkerKey(d.KeyPrefix, ing, chunk)
	what := fmt.Sprintf("s3://%s/%s", d.Bucket, key)
	found := false
	if _, herr := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &d.Bucket, Key: &key}); herr == nil {
		found, resume = true, true
	} else if p, ok := worker.AsPermanent(source.Classify(what, herr)); !ok || p.Reason != worker.ReasonSourceMissing {
		// Not a plain "not found" (S3 answers 403 for a missing key to those who may not list
		// the bucket or read the prefix): whether an earlier attempt ran is unknown, so skip only
		// what content hashes prove, as without a dead-letter location; rows stored with this
		// task id may be another CsvIngestion's.
		resume = ing.Spec.Sync != nil
	}
	if !found {
		body := []byte("an attempt of this chunk started; a retry skips the rows it upserted\n")
		if err := source.Put(ctx, cl, d.Bucket, key, body); err != nil {
			return false, noop, markerError(what, err)
		}
	}
	done = func(ctx context.Context) error {
		_, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &d.Bucket, Key: &key})
		return err
	}
	return resume, done, nil
}

func markerError(what string, err error) error {
	if p, ok := worker.AsPermanent(err); ok {
		return worker.Permanent(worker.ReasonDeadLetterUnwritable, fmt.Errorf("cannot write the chunk's attempt marker %s next to its dead letters: %w (set spec.deadLetter to a location the worker's S3 identity can write)", what, p.Err))
	}
	return fmt.Errorf("write the chunk's attempt marker %s: %w", what, err)
}
