package source

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Values of spec.source.csv.encoding.
const (
	EncodingUTF8        = "utf-8"
	EncodingLatin1      = "latin-1"
	EncodingWindows1252 = "windows-1252"
	EncodingUTF16       = "utf-16"
)

// Decode converts r from encoding to UTF-8. utf-8 (or "") returns r as is: its bytes are checked
// row by row (mapping's invalid_utf8), not replaced here. utf-16 takes its byte order from a BOM
// (and drops it), little-endian without one. Latin-1 and Windows-1252 map every byte to a
// character, so nothing is lost; Windows-1252's five unassigned bytes become U+FFFD.
func Decode(r io.Reader, encoding string) (io.Reader, error) {
	switch encoding {
	case "", EncodingUTF8:
		return r, nil
	case EncodingLatin1:
		return transform.NewReader(r, charmap.ISO8859_1.NewDecoder()), nil
	case EncodingWindows1252:
		return transform.NewReader(r, charmap.Windows1252.NewDecoder()), nil
	case EncodingUTF16:
		return transform.NewReader(r, unicode.UTF16(unicode.LittleEndian, unicode.UseBOM).NewDecoder()), nil
	}
	return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("unknown spec.source.csv.encoding %q: want utf-8, latin-1, windows-1252 or utf-16", encoding))
}

// NeedsStaging reports whether chunks cannot read the object as it is stored with ranged GETs:
// gzip has no random access, and offsets into decoded text are not offsets into other encodings.
func NeedsStaging(compression, encoding string) bool {
	return compression == "gzip" || (encoding != "" && encoding != EncodingUTF8)
}

// Stager streams what is read through it into an S3 object with a multipart upload, so the
// planner writes the staged copy in the same pass that scans it, holding only a few parts in
// memory.
type Stager struct {
	pw   *io.PipeWriter
	done chan error
	cl   *s3.Client
	bkt  string
	key  string
}

// stagePartSize and stageConcurrency bound the upload's memory (about their product).
const (
	stagePartSize    = 8 << 20
	stageConcurrency = 2
)

// NewStager starts the upload of s3://bucket/key. Write what the object should hold to the
// returned writer (e.g. through an io.TeeReader), then call Finish, or Abort on failure.
func NewStager(ctx context.Context, cl *s3.Client, bucket, key string) (*Stager, io.Writer) {
	pr, pw := io.Pipe()
	s := &Stager{pw: pw, done: make(chan error, 1), cl: cl, bkt: bucket, key: key}
	up := manager.NewUploader(cl, func(u *manager.Uploader) {
		u.PartSize = stagePartSize
		u.Concurrency = stageConcurrency
	})
	ct := "text/csv; charset=utf-8"
	go func() {
		_, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &s.bkt, Key: &s.key, Body: pr, ContentType: &ct})
		// Unblock the writer if the upload stopped early.
		if err != nil {
			pr.CloseWithError(fmt.Errorf("staging upload stopped: %w", err))
		}
		s.done <- err
	}()
	return s, pw
}

// Finish ends the upload and returns the staged object (its ETag is what chunks pin to).
func (s *Stager) Finish(ctx context.Context) (*Object, error) {
	_ = s.pw.Close()
	if err := <-s.done; err != nil {
		return nil, classify(fmt.Sprintf("stage s3://%s/%s", s.bkt, s.key), err)
	}
	return Head(ctx, s.cl, s.bkt, s.key)
}

// Abort stops the upload (the uploader aborts the multipart upload, so no parts are left) and
// returns the upload's own error when it had stopped by itself before, e.g. access denied.
func (s *Stager) Abort(err error) error {
	s.pw.CloseWithError(err)
	if uerr := <-s.done; uerr != nil && !errors.Is(uerr, err) {
		return uerr
	}
	return nil
}

// Delete removes staged objects; a missing one is not an error.
func Delete(ctx context.Context, cl *s3.Client, bucket string, keys ...string) error {
	for _, k := range keys {
		if _, err := cl.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &k}); err != nil {
			if perr, ok := worker.AsPermanent(classify("s3://"+bucket+"/"+k, err)); ok && perr.Reason == worker.ReasonSourceMissing {
				continue
			}
			return fmt.Errorf("delete staged s3://%s/%s: %w", bucket, k, err)
		}
	}
	return nil
}
