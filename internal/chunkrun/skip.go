package chunkrun

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/duplicates"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// ReasonDuplicateID is the dead-letter reason of a row whose vector (namespace and id) an earlier
// row of the file already has. The planner decides which rows these are (the first occurrence in
// the file is kept), so the outcome is the same whatever order chunks run in.
const ReasonDuplicateID = "duplicate_id"

// loadDuplicates reads this chunk's part of the planner's duplicate list (two or three small
// ranged GETs pinned to the planned ETag), or nothing when the plan has none.
func loadDuplicates(ctx context.Context, cl *s3.Client, bucket string, args worker.ChunkArgs) (map[int64]int64, error) {
	if args.DuplicatesKey == "" {
		return nil, nil
	}
	if args.DuplicatesETag == "" {
		return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("chunk %d: --duplicates-key without --duplicates-etag", args.Index))
	}
	obj := &source.Object{Client: cl, Bucket: bucket, Key: args.DuplicatesKey, ETag: args.DuplicatesETag}
	dups, err := duplicates.ForChunk(ctx, func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		return obj.OpenRange(ctx, off, n)
	}, args.Index)
	if err != nil {
		if _, ok := worker.AsPermanent(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("chunk %d: read duplicate-id list s3://%s/%s: %w", args.Index, bucket, args.DuplicatesKey, err)
	}
	for row := range dups {
		if row < args.FirstRow || row >= args.FirstRow+args.Rows {
			return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
				"chunk %d: the duplicate-id list names row %d, outside the chunk's rows %d-%d", args.Index, row, args.FirstRow, args.FirstRow+args.Rows-1))
		}
	}
	return dups, nil
}

// skipDuplicate dead-letters a duplicate row and counts it as skipped: its id's vector is the one
// of the row it repeats, which is ingested (or failed) on its own account.
func (p *pipeline) skipDuplicate(ctx context.Context, row csvplan.Row, first int64) error {
	detail := fmt.Sprintf("the vector id is also row %d's, which is kept", first)
	if key, kerr := p.mapper.Key(row.Num, row.Fields); kerr == nil {
		detail = fmt.Sprintf("vector id %q in namespace %q is also row %d's, which is kept", key.ID, key.Namespace, first)
	}
	return p.fails.skip(ctx, row.Num, row.Fields, ReasonDuplicateID, detail)
}

// skip records a row left out on purpose: counted as skipped, dead-lettered with its reason.
func (f *failures) skip(ctx context.Context, row int64, fields []string, reason, detail string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.skipped++
	if f.skipped <= loggedFailures {
		f.log.Info("row skipped", "row", row, "reason", reason, "detail", detail)
	}
	return f.deadLetter(ctx, row, fields, reason, detail)
}

func (f *failures) skippedCount() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.skipped
}
