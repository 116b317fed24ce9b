// Package deadletter keeps the rows a chunk could not ingest, with their row number and reason, as
// CSV objects under <keyPrefix><taskID>/chunk-NNNN.csv, so nothing is lost silently.
package deadletter

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// flushBytes bounds the memory a chunk's dead letters take; beyond it a further part is written.
const flushBytes = 8 << 20

// Writer collects failed rows of one chunk. It is not safe for concurrent use.
type Writer struct {
	cl     *s3.Client
	bucket string
	base   string // key without the .csv suffix
	header []string
	buf    bytes.Buffer
	w      *csv.Writer
	parts  int
	rows   int64
	// buffered rows not yet written
	buffered int64
	keys     []string
}

// New returns a writer for chunk index of taskID. header is the source CSV's header; the dead
// letter rows carry it plus _row, _reason and _detail.
func New(cl *s3.Client, bucket, keyPrefix, taskID string, chunk int, header []string) *Writer {
	w := &Writer{cl: cl, bucket: bucket, base: Base(keyPrefix, taskID, chunk), header: header}
	w.reset()
	return w
}

func (w *Writer) reset() {
	if w.buf.Cap() > flushBytes {
		// An outlier row (a field of megabytes) grew the buffer: let it go rather than keep it
		// for the rest of the chunk.
		w.buf = bytes.Buffer{}
	}
	w.buf.Reset()
	w.w = csv.NewWriter(&w.buf)
	_ = w.w.Write(append(append([]string{}, w.header...), "_row", "_reason", "_detail"))
}

// Add records one failed row. fields may be nil or of any length (a malformed row is kept as read).
func (w *Writer) Add(ctx context.Context, row int64, fields []string, reason, detail string) error {
	if size := encodedSize(fields) + len(detail); size > flushBytes/2 {
		// An outlier row (a field of megabytes) goes into a part of its own, in a buffer of its
		// size: no doubling of a buffer already holding other rows.
		if w.buffered > 0 {
			if err := w.flush(ctx); err != nil {
				return err
			}
		}
		w.buf = bytes.Buffer{}
		w.reset()
		w.buf.Grow(size + 64)
	}
	rec := make([]string, 0, len(w.header)+3)
	rec = append(rec, fields...)
	for len(rec) < len(w.header) {
		rec = append(rec, "")
	}
	rec = append(rec, strconv.FormatInt(row, 10), reason, detail)
	if err := w.w.Write(rec); err != nil {
		return fmt.Errorf("dead letter row %d: %w", row, err)
	}
	w.rows++
	w.buffered++
	w.w.Flush()
	if w.buf.Len() >= flushBytes {
		return w.flush(ctx)
	}
	return nil
}

// encodedSize is about the CSV size of fields (at least it, unless a field holds many quotes).
func encodedSize(fields []string) int {
	n := 1
	for _, f := range fields {
		n += len(f) + 3
	}
	return n
}

// Rows is the number of rows added.
func (w *Writer) Rows() int64 { return w.rows }

// Base is the key of chunk's dead letters without the .csv suffix.
func Base(keyPrefix, taskID string, chunk int) string {
	return fmt.Sprintf("%s%s/chunk-%04d", keyPrefix, taskID, chunk)
}

// Key is the first (often the only) object a chunk's failed rows are written to; a large one
// continues in .part2.csv, .part3.csv and so on.
func Key(keyPrefix, taskID string, chunk int) string { return Base(keyPrefix, taskID, chunk) + ".csv" }

// Keys lists the objects written so far.
func (w *Writer) Keys() []string { return w.keys }

// Close writes what remains. With no failed row, nothing is written.
func (w *Writer) Close(ctx context.Context) error {
	w.w.Flush()
	if w.buffered == 0 {
		return nil
	}
	return w.flush(ctx)
}

func (w *Writer) flush(ctx context.Context) error {
	key := w.base + ".csv"
	if w.parts > 0 {
		key = fmt.Sprintf("%s.part%d.csv", w.base, w.parts+1)
	}
	body := bytes.NewReader(w.buf.Bytes())
	ct := "text/csv"
	if _, err := w.cl.PutObject(ctx, &s3.PutObjectInput{Bucket: &w.bucket, Key: &key, Body: body, ContentType: &ct}); err != nil {
		if p, ok := worker.AsPermanent(source.Classify(fmt.Sprintf("s3://%s/%s", w.bucket, key), err)); ok {
			// No retry makes the location writable, and a retry would embed the chunk's rows again.
			return worker.Permanent(worker.ReasonDeadLetterUnwritable, fmt.Errorf("write dead letters: %w (set spec.deadLetter to a location the worker's S3 identity can write)", p.Err))
		}
		return fmt.Errorf("write dead letters to s3://%s/%s: %w", w.bucket, key, err)
	}
	w.keys = append(w.keys, key)
	w.parts++
	w.buffered = 0
	w.reset()
	return nil
}
