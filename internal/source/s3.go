// Package source reads the CSV object: S3 (or an S3-compatible store) with reads pinned to the
// planned ETag, gzip detection, and Metabase exports staged into S3 first.
package source

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// NewS3Client builds a client for conn: static keys from the environment when the pod got them
// from a Secret, otherwise the default chain (IRSA, Pod Identity, instance profile). A custom
// endpoint (MinIO) uses path-style addressing.
func NewS3Client(ctx context.Context, conn v1alpha1.S3Connection) (*s3.Client, error) {
	region := conn.Region
	if region == "" {
		region = "us-east-1"
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(region)}
	if id, secret := os.Getenv(worker.EnvAWSAccessKeyID), os.Getenv(worker.EnvAWSSecretKey); id != "" && secret != "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN"))))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if conn.Endpoint != "" {
			o.BaseEndpoint = aws.String(conn.Endpoint)
			o.UsePathStyle = true
		}
		// Checksums of streamed bodies need seekable readers; MinIO and S3 both accept uploads without.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// Object is a planned object: its identity and the ETag every read is pinned to.
type Object struct {
	Client *s3.Client
	Bucket string
	Key    string
	ETag   string
	Size   int64
}

// Head finds the object's ETag and size. A missing object or bucket is permanent.
func Head(ctx context.Context, cl *s3.Client, bucket, key string) (*Object, error) {
	out, err := cl.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return nil, classify(fmt.Sprintf("s3://%s/%s", bucket, key), err)
	}
	return &Object{Client: cl, Bucket: bucket, Key: key, ETag: aws.ToString(out.ETag), Size: aws.ToInt64(out.ContentLength)}, nil
}

// Open reads the whole object, pinned to its ETag.
func (o *Object) Open(ctx context.Context) (io.ReadCloser, error) {
	return o.get(ctx, nil)
}

// OpenRange reads [off, off+length) of the object, pinned to its ETag.
func (o *Object) OpenRange(ctx context.Context, off, length int64) (io.ReadCloser, error) {
	if length <= 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	r := fmt.Sprintf("bytes=%d-%d", off, off+length-1)
	return o.get(ctx, &r)
}

func (o *Object) get(ctx context.Context, rng *string) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: &o.Bucket, Key: &o.Key, Range: rng}
	if o.ETag != "" {
		in.IfMatch = aws.String(o.ETag)
	}
	out, err := o.Client.GetObject(ctx, in)
	if err != nil {
		return nil, classify(fmt.Sprintf("s3://%s/%s", o.Bucket, o.Key), err)
	}
	return out.Body, nil
}

// Classify turns S3 errors into permanent ones where no retry helps.
func Classify(what string, err error) error { return classify(what, err) }

// classify turns S3 errors into permanent ones where no retry helps.
func classify(what string, err error) error {
	var re *awshttp.ResponseError
	status := 0
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		return worker.Permanent(worker.ReasonSourceChanged, fmt.Errorf("%s changed since it was planned (its ETag no longer matches); create a new CsvIngestion for the new file: %w", what, err))
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NoSuchBucket" || code == "NotFound":
		return worker.Permanent(worker.ReasonSourceMissing, fmt.Errorf("%s does not exist: %w", what, err))
	case status == http.StatusForbidden || status == http.StatusUnauthorized || code == "AccessDenied" || code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch":
		return worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("access to %s denied: %w", what, err))
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// Decompress wraps r according to mode (auto|none|gzip). auto looks at the first two bytes for the
// gzip magic number, so a .csv that is really gzip (or the reverse) is read right. It returns the
// compression found.
func Decompress(r io.Reader, mode string) (io.Reader, string, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	switch mode {
	case "none":
		return br, "none", nil
	case "gzip":
	case "", "auto":
		magic, err := br.Peek(2)
		if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
			return br, "none", nil
		}
	default:
		return nil, "", fmt.Errorf("unknown compression %q", mode)
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, "", worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("object is not valid gzip: %w", err))
	}
	return bufio.NewReaderSize(zr, 256<<10), "gzip", nil
}

// OpenChunk returns a reader over [off, off+length) of the decompressed object. Uncompressed objects
// are read with one ranged GET; gzip has no random access, so a gzip chunk decompresses from the
// start and discards what comes before its range.
func (o *Object) OpenChunk(ctx context.Context, compression string, off, length int64) (io.ReadCloser, error) {
	if compression != "gzip" {
		if length <= 0 {
			return io.NopCloser(strings.NewReader("")), nil
		}
		body, err := o.OpenRange(ctx, off, length)
		if err != nil {
			return nil, err
		}
		return &resumingReader{ctx: ctx, o: o, body: body, off: off, end: off + length}, nil
	}
	body, err := o.Open(ctx)
	if err != nil {
		return nil, err
	}
	zr, _, err := Decompress(body, "gzip")
	if err != nil {
		body.Close()
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, zr, off); err != nil {
		body.Close()
		return nil, fmt.Errorf("skip to offset %d of gzip object: %w", off, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(zr, length), body}, nil
}

// maxResumes is how many times in a row a chunk's ranged read is reopened after the connection
// breaks without progress in between.
const maxResumes = 5

// resumingReader reads [off, end) and, when the stream breaks before end, reopens the range from
// where it stopped (pinned to the same ETag). A chunk reads its range only as fast as its rate
// budget lets it embed, so one GET can stay open for many minutes, and servers and proxies close
// slow streams: without resuming, such a chunk would fail and start over.
type resumingReader struct {
	ctx      context.Context
	o        *Object
	body     io.ReadCloser
	off, end int64
	failures int
}

func (r *resumingReader) Read(p []byte) (int, error) {
	for {
		if r.off >= r.end {
			return 0, io.EOF
		}
		if int64(len(p)) > r.end-r.off {
			p = p[:r.end-r.off]
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.failures = 0
		}
		if err == nil || (err == io.EOF && r.off >= r.end) {
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
		if n > 0 {
			// Hand over what arrived; the next Read reopens.
			r.body.Close()
			r.body = io.NopCloser(strings.NewReader(""))
			return n, nil
		}
		if cerr := r.ctx.Err(); cerr != nil {
			return 0, cerr
		}
		r.failures++
		if r.failures > maxResumes {
			return 0, fmt.Errorf("read s3://%s/%s at byte %d: %w", r.o.Bucket, r.o.Key, r.off, err)
		}
		r.body.Close()
		body, oerr := r.o.OpenRange(r.ctx, r.off, r.end-r.off)
		if oerr != nil {
			return 0, fmt.Errorf("resume s3://%s/%s at byte %d after %v: %w", r.o.Bucket, r.o.Key, r.off, err, oerr)
		}
		r.body = body
	}
}

func (r *resumingReader) Close() error { return r.body.Close() }
