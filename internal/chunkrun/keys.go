package chunkrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// KeyCounts says what ReadKeys read.
type KeyCounts struct {
	// Rows read, and of them those without a vector key (malformed, or an id the mapping
	// refuses: their chunk failed them).
	Rows, NoKey int64
}

// ReadKeys streams the rows of args (a chunk, or the whole file: worker.Plan.Whole) from the
// object pinned to the planned ETag and calls add with each row's vector key (namespace, id), as
// a chunk computes it with the same mapping, without embedding anything. The sync step builds the
// set of the file's ids with it.
func ReadKeys(ctx context.Context, ing worker.Ingestion, args worker.ChunkArgs, deps Deps, add func(namespace, id string)) (KeyCounts, error) {
	var n KeyCounts
	if args.ETag == "" {
		return n, worker.Permanent(worker.ReasonPermanentError, errors.New("no --etag: reads must be pinned to the planned object"))
	}
	loc, err := planner.Locate(ing)
	if err != nil {
		return n, err
	}
	delim, err := planner.Delimiter(ing.Spec.Source.CSV.Delimiter)
	if err != nil {
		return n, err
	}
	cl, err := planner.S3Client(ctx, deps.S3, loc.Conn)
	if err != nil {
		return n, err
	}
	obj := &source.Object{Client: cl, Bucket: loc.Bucket, Key: cmp.Or(args.Key, loc.Key), ETag: args.ETag}
	if args.Length <= 0 {
		if args.Rows > 0 {
			return n, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("%d rows in 0 bytes", args.Rows))
		}
		return n, nil
	}
	header, err := readHeader(ctx, obj, args.Compression, args.Offset, delim)
	if err != nil {
		return n, err
	}
	mapper, err := mapping.New(ing.Spec.Mapping, header, Fixed(ing, loc, args.Index, time.Now()))
	if err != nil {
		return n, worker.Permanent(worker.ReasonHeaderMismatch, err)
	}
	body, err := obj.OpenChunk(ctx, args.Compression, args.Offset, args.Length)
	if err != nil {
		return n, err
	}
	defer body.Close()
	rd, err := csvplan.NewReader(body, header, csvplan.ReaderOptions{
		Delimiter: delim, FirstRow: args.FirstRow, Offset: args.Offset, ExpectRows: args.Rows,
		MaxRowBytes: maxRowBytes(ing.Spec.Mapping),
	})
	if err != nil {
		return n, worker.Permanent(worker.ReasonPermanentError, err)
	}
	for rd.Next() {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		row := rd.Row()
		n.Rows++
		if row.Err != nil {
			n.NoKey++
			continue
		}
		key, kerr := mapper.Key(row.Num, row.Fields)
		if kerr != nil {
			n.NoKey++
			continue
		}
		add(key.Namespace, key.ID)
	}
	if rerr := rd.Err(); rerr != nil {
		var rc *csvplan.RowCountError
		if errors.As(rerr, &rc) {
			return n, worker.Permanent(worker.ReasonSourceChanged, fmt.Errorf("s3://%s/%s: %w", loc.Bucket, obj.Key, rerr))
		}
		return n, fmt.Errorf("read s3://%s/%s: %w", loc.Bucket, obj.Key, rerr)
	}
	return n, nil
}
