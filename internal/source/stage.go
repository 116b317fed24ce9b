package source

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/text/encoding/charmap"
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
// row by row (mapping's invalid_utf8), not replaced here; a file that is plainly UTF-16 (a UTF-16
// byte-order mark, or NUL bytes in every other position) is refused with the field to set.
// utf-16 takes its byte order from a BOM (and drops it), else from where the NUL bytes of ASCII
// characters fall in the first bytes, and refuses a file whose order cannot be told. Latin-1
// maps every byte to a character. What cannot be decoded (Windows-1252's five unassigned bytes,
// a lone UTF-16 surrogate, an odd last byte) becomes the byte 0xFF, which is not UTF-8, so the
// row holding it fails as invalid_utf8 and is dead-lettered, as in a UTF-8 file, rather than
// being embedded with a replacement character nobody counted.
func Decode(r io.Reader, encoding string) (io.Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	head, _ := br.Peek(sniffBytes) // fewer at the end of a short file
	switch encoding {
	case "", EncodingUTF8:
		if order := utf16Order(head); order != "" {
			return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
				"the file is UTF-16 (%s), not UTF-8: set spec.source.csv.encoding: utf-16", order))
		}
		return br, nil
	case EncodingLatin1:
		return transform.NewReader(br, charmap.ISO8859_1.NewDecoder()), nil
	case EncodingWindows1252:
		return transform.NewReader(br, windows1252{}), nil
	case EncodingUTF16:
		var bigEndian bool
		switch {
		case len(head) >= 2 && head[0] == 0xFF && head[1] == 0xFE:
			_, _ = br.Discard(2)
		case len(head) >= 2 && head[0] == 0xFE && head[1] == 0xFF:
			_, _ = br.Discard(2)
			bigEndian = true
		default:
			switch utf16Order(head) {
			case orderLE:
			case orderBE:
				bigEndian = true
			default:
				if len(head) > 0 {
					return nil, worker.Permanent(worker.ReasonPermanentError, errors.New(
						"spec.source.csv.encoding is utf-16, but the file has no byte-order mark and its first bytes do not tell little- from big-endian (no NUL bytes where ASCII characters would have them): save it with a BOM, or as UTF-8 and set spec.source.csv.encoding: utf-8"))
				}
			}
		}
		return transform.NewReader(br, &utf16Decoder{bigEndian: bigEndian}), nil
	}
	return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("unknown spec.source.csv.encoding %q: want utf-8, latin-1, windows-1252 or utf-16", encoding))
}

// sniffBytes is how much of a file's start tells its UTF-16 byte order.
const sniffBytes = 512

const (
	orderLE = "little-endian"
	orderBE = "big-endian"
)

// utf16Order says whether head looks like UTF-16 and in which byte order: a BOM, or ASCII
// characters (a CSV's header and delimiters are), a NUL byte next to an ASCII one, in at least a
// third of the byte pairs, all in one order and almost none in the other. "" means no.
func utf16Order(head []byte) string {
	if len(head) >= 2 {
		switch {
		case head[0] == 0xFF && head[1] == 0xFE:
			return orderLE + ", from its byte-order mark"
		case head[0] == 0xFE && head[1] == 0xFF:
			return orderBE + ", from its byte-order mark"
		}
	}
	n := len(head) &^ 1
	if n < 8 {
		return ""
	}
	var even, odd int // pairs that are an ASCII character with the NUL first (BE) or second (LE)
	for i := 0; i < n; i += 2 {
		a, b := head[i], head[i+1]
		switch {
		case a == 0 && b != 0 && b < 0x80:
			even++
		case b == 0 && a != 0 && a < 0x80:
			odd++
		}
	}
	pairs := n / 2
	switch {
	case odd*3 >= pairs && even*20 <= pairs:
		return orderLE
	case even*3 >= pairs && odd*20 <= pairs:
		return orderBE
	}
	return ""
}

// undecodable stands for what an encoding cannot decode: not UTF-8, so the row fails.
const undecodable = 0xFF

// windows1252 decodes Windows-1252, its five unassigned bytes (0x81, 0x8D, 0x8F, 0x90, 0x9D) to
// undecodable.
type windows1252 struct{ transform.NopResetter }

var windows1252Table = func() (t [256]string) {
	for b := range 256 {
		r := charmap.Windows1252.DecodeByte(byte(b))
		if r == utf8.RuneError {
			t[b] = string([]byte{undecodable})
		} else {
			t[b] = string(r)
		}
	}
	return t
}()

func (windows1252) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		s := windows1252Table[src[nSrc]]
		if nDst+len(s) > len(dst) {
			return nDst, nSrc, transform.ErrShortDst
		}
		nDst += copy(dst[nDst:], s)
		nSrc++
	}
	return nDst, nSrc, nil
}

// utf16Decoder decodes UTF-16 in one byte order; a lone surrogate or an odd last byte becomes
// undecodable.
type utf16Decoder struct {
	transform.NopResetter
	bigEndian bool
}

func (d *utf16Decoder) unit(b []byte) rune {
	if d.bigEndian {
		return rune(b[0])<<8 | rune(b[1])
	}
	return rune(b[1])<<8 | rune(b[0])
}

func (d *utf16Decoder) Transform(dst, src []byte, atEOF bool) (nDst, nSrc int, err error) {
	for nSrc < len(src) {
		if len(src)-nSrc < 2 {
			if !atEOF {
				return nDst, nSrc, transform.ErrShortSrc
			}
			if nDst >= len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			dst[nDst] = undecodable
			return nDst + 1, nSrc + 1, nil
		}
		r, size := d.unit(src[nSrc:]), 2
		switch {
		case utf16.IsSurrogate(r) && r < 0xDC00: // a high surrogate: a low one must follow
			if len(src)-nSrc < 4 {
				if !atEOF {
					return nDst, nSrc, transform.ErrShortSrc
				}
				r = -1
				break
			}
			if lo := d.unit(src[nSrc+2:]); lo >= 0xDC00 && lo <= 0xDFFF {
				r, size = utf16.DecodeRune(r, lo), 4
			} else {
				r = -1
			}
		case utf16.IsSurrogate(r): // a low surrogate alone
			r = -1
		}
		if r < 0 {
			if nDst >= len(dst) {
				return nDst, nSrc, transform.ErrShortDst
			}
			dst[nDst] = undecodable
			nDst++
			nSrc += 2
			continue
		}
		if nDst+utf8.RuneLen(r) > len(dst) {
			return nDst, nSrc, transform.ErrShortDst
		}
		nDst += utf8.EncodeRune(dst[nDst:], r)
		nSrc += size
	}
	return nDst, nSrc, nil
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
