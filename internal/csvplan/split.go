package csvplan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

const (
	// ReasonWrongFieldCount: the row has more or fewer fields than the header.
	ReasonWrongFieldCount = "wrong_field_count"
	// ReasonUnbalancedQuote: a quoted field is never closed, or text follows its closing quote.
	ReasonUnbalancedQuote = "unbalanced_quote"
	// ReasonRowTooLong: the row is longer than MaxRowBytes; its fields are not kept.
	ReasonRowTooLong = "row_too_long"
)

// DefaultMaxRowBytes bounds the memory one row may take. An embedding input is at most 8,191 tokens
// and Pinecone metadata at most 40 KB, so a longer row can only fail; bounding it keeps a stray
// quote in a large file from buffering the rest of the file.
const DefaultMaxRowBytes = 16 << 20

const defaultBufSize = 256 << 10

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// RowError says why a data row is malformed. The row is still counted and numbered.
type RowError struct {
	Row    int64  // data row number, 0-based, as in the plan
	Offset int64  // byte offset of the row's first byte in the (decompressed) stream
	Reason string // one of the Reason constants
	Detail string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("row %d at byte %d: %s: %s", e.Row, e.Offset, e.Reason, e.Detail)
}

// delimiter validates d (0 means ',') the way encoding/csv does and returns its UTF-8 bytes.
func delimiter(d rune) ([]byte, error) {
	if d == 0 {
		d = ','
	}
	if d == '"' || d == '\r' || d == '\n' || d == utf8.RuneError || !utf8.ValidRune(d) {
		return nil, fmt.Errorf("invalid CSV delimiter %q", d)
	}
	return []byte(string(d)), nil
}

// record is one raw record as the splitter found it.
type record struct {
	raw          []byte // the bytes including the terminator; nil when tooLong
	offset       int64  // stream offset of the first byte
	length       int64  // length in bytes including the terminator
	tooLong      bool   // longer than maxRow; raw was not kept
	unterminated bool   // a quoted field was still open at EOF
}

// splitter cuts a byte stream into raw records. It keeps only the current record in memory (up to
// maxRow bytes) and resumes its scan after each read, so a long record costs O(its length).
type splitter struct {
	r      io.Reader
	buf    []byte
	start  int   // first byte of the current record (or, when discarding, of the kept tail)
	end    int   // end of buffered data
	base   int64 // stream offset of buf[0]
	eof    bool
	delim  []byte
	maxRow int
	target int // buffer size to grow to while reads keep filling it
}

func newSplitter(r io.Reader, delim []byte, maxRow, bufSize int) *splitter {
	if maxRow <= 0 {
		maxRow = DefaultMaxRowBytes
	}
	if bufSize <= 0 {
		bufSize = defaultBufSize
	}
	// Start small so a short range costs little, and grow while reads fill the buffer.
	return &splitter{r: r, buf: make([]byte, min(bufSize, 4<<10)), delim: delim, maxRow: maxRow, target: bufSize}
}

// offset is the stream offset of the next unread record.
func (s *splitter) offset() int64 { return s.base + int64(s.start) }

// fill reads once more into the buffer, first moving the kept bytes to its front and growing it
// when they fill it. It returns by how much buffer positions shifted.
func (s *splitter) fill() (shift int, err error) {
	if s.start > 0 {
		shift = s.start
		s.end = copy(s.buf, s.buf[s.start:s.end])
		s.base += int64(shift)
		s.start = 0
	}
	if len(s.buf) > 2*s.target && s.end <= s.target/2 {
		// An outlier record grew the buffer and has been consumed: let its memory go rather than
		// keep megabytes for the rest of the range.
		nb := make([]byte, s.target)
		s.end = copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	if s.end == len(s.buf) || (len(s.buf) < s.target && s.end > len(s.buf)/2) {
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	for tries := 0; ; tries++ {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if errors.Is(err, io.EOF) {
			s.eof = true
			return shift, nil
		}
		if err != nil {
			return shift, fmt.Errorf("read CSV at byte %d: %w", s.base+int64(s.end), err)
		}
		if n > 0 {
			return shift, nil
		}
		if tries >= 100 {
			return shift, fmt.Errorf("read CSV at byte %d: %w", s.base+int64(s.end), io.ErrNoProgress)
		}
	}
}

// skipBOM drops a UTF-8 byte order mark at the very start of the stream. The BOM still counts in
// offsets, which are positions in the stream as stored.
func (s *splitter) skipBOM() error {
	for s.end-s.start < len(utf8BOM) && !s.eof {
		if _, err := s.fill(); err != nil {
			return err
		}
	}
	if bytes.HasPrefix(s.buf[s.start:s.end], utf8BOM) {
		s.start += len(utf8BOM)
	}
	return nil
}

// atFieldStart reports whether a quote at buffer position p opens a quoted field: it does at the
// start of the record or right after a delimiter. lo is the first buffered byte of the record.
func (s *splitter) atFieldStart(p, lo int, recordStartKept bool) bool {
	if p == lo && recordStartKept {
		return true
	}
	d := len(s.delim)
	return p-d >= lo && bytes.Equal(s.buf[p-d:p], s.delim)
}

// next finds the next record. It returns false at the end of the stream.
func (s *splitter) next(rec *record) (bool, error) {
	*rec = record{offset: s.offset()}
	i := s.start // scan position
	quoted := false
	discarding := false
	var discarded int64
	for {
		// Scan the buffered bytes. Outside quotes only '\n' and '"' matter (the delimiter is looked
		// at only when a quote needs to know whether it starts a field), so plain rows cost two
		// IndexByte calls.
	scan:
		for i < s.end {
			if !quoted {
				region := s.buf[i:s.end]
				nl := bytes.IndexByte(region, '\n')
				line := region
				if nl >= 0 {
					line = region[:nl]
				}
				q := bytes.IndexByte(line, '"')
				if q < 0 {
					if nl >= 0 {
						i += nl + 1
						return s.finish(rec, i, discarding, discarded, false), nil
					}
					i = s.end
					break scan
				}
				p := i + q
				// The bytes before p are this record's and still buffered (discarding keeps a
				// tail of UTFMax), so the look-behind never waits for a read.
				quoted = s.atFieldStart(p, s.start, !discarding)
				i = p + 1
				continue
			}
			q := bytes.IndexByte(s.buf[i:s.end], '"')
			if q < 0 {
				i = s.end
				break scan
			}
			p := i + q
			switch {
			case p+1 < s.end && s.buf[p+1] == '"': // `""`: an escaped quote
				i = p + 2
			case p+1 < s.end || s.eof: // closing quote
				quoted = false
				i = p + 1
			default: // quote is the last buffered byte: need the next one to decide
				i = p
				break scan
			}
		}
		if s.eof && i >= s.end {
			if i == s.start && !discarding {
				return false, nil // nothing left
			}
			return s.finish(rec, s.end, discarding, discarded, quoted), nil
		}
		if !discarding && i-s.start > s.maxRow {
			discarding = true
		}
		if discarding {
			// Keep a few bytes before the scan position: a quote right after them needs to see
			// whether a (multi-byte) delimiter precedes it.
			keep := i - utf8.UTFMax
			if keep > s.start {
				discarded += int64(keep - s.start)
				s.start = keep
			}
		}
		shift, err := s.fill()
		if err != nil {
			return false, err
		}
		i -= shift
	}
}

// finish completes rec with the record ending at buffer position end and consumes it.
func (s *splitter) finish(rec *record, end int, discarding bool, discarded int64, unterminated bool) bool {
	rec.length = discarded + int64(end-s.start)
	rec.unterminated = unterminated
	if discarding {
		rec.tooLong = true
	} else {
		rec.raw = s.buf[s.start:end]
		if len(rec.raw) > s.maxRow {
			rec.tooLong = true
			rec.raw = nil
		}
	}
	s.start = end
	return true
}

// body is the record without its terminator: a '\n' if present, then one '\r' (CRLF, or a lone
// \r before EOF, which encoding/csv drops too). An empty body is a blank line. A record cut off by
// EOF inside a quoted field has no terminator: its final '\n' is quoted text and stays.
func (rec *record) body() []byte {
	raw := rec.raw
	n := len(raw)
	if n > 0 && raw[n-1] == '\n' && !rec.unterminated {
		n--
	}
	if n > 0 && raw[n-1] == '\r' {
		n--
	}
	return raw[:n]
}

// fieldParser splits record bodies into fields, reusing its buffers.
type fieldParser struct {
	delim   []byte
	scratch []byte
	spans   []int // [start, end) pairs into the returned source
}

// parse splits b into fields. It returns the bytes the spans index (b itself when no field is
// quoted, else the parser's scratch holding unescaped text) and, for a malformed row, a detail
// (the reason is then ReasonUnbalancedQuote). Both stay valid until the next call.
func (fp *fieldParser) parse(b []byte) (src []byte, detail string) {
	spans := fp.spans[:0]
	d := fp.delim
	if bytes.IndexByte(b, '"') < 0 {
		pos := 0
		for {
			j := bytes.Index(b[pos:], d)
			if j < 0 {
				spans = append(spans, pos, len(b))
				break
			}
			spans = append(spans, pos, pos+j)
			pos += j + len(d)
		}
		fp.spans = spans
		return b, ""
	}
	out := fp.scratch[:0]
	pos := 0
	for {
		fs := len(out)
		if pos < len(b) && b[pos] == '"' {
			open := pos
			pos++
			closed := false
			for {
				j := bytes.IndexByte(b[pos:], '"')
				if j < 0 {
					out = appendCRLFAsLF(out, b[pos:])
					pos = len(b)
					break
				}
				out = appendCRLFAsLF(out, b[pos:pos+j])
				pos += j + 1
				if pos < len(b) && b[pos] == '"' {
					out = append(out, '"')
					pos++
					continue
				}
				closed = true
				break
			}
			if !closed {
				if detail == "" {
					detail = fmt.Sprintf("quoted field %d opened at byte %d of the row is never closed", len(spans)/2+1, open)
				}
				spans = append(spans, fs, len(out))
				break
			}
			if pos == len(b) {
				spans = append(spans, fs, len(out))
				break
			}
			if bytes.HasPrefix(b[pos:], d) {
				spans = append(spans, fs, len(out))
				pos += len(d)
				continue
			}
			if detail == "" {
				detail = fmt.Sprintf("text after the closing quote of field %d at byte %d of the row", len(spans)/2+1, pos)
			}
			// Fall through: the rest up to the next delimiter joins this field, quotes literal.
		}
		j := bytes.Index(b[pos:], d)
		if j < 0 {
			out = append(out, b[pos:]...)
			spans = append(spans, fs, len(out))
			break
		}
		out = append(out, b[pos:pos+j]...)
		spans = append(spans, fs, len(out))
		pos += j + len(d)
	}
	fp.scratch = out
	fp.spans = spans
	return out, detail
}

// count returns the number of fields in b and a malformed-row detail, without keeping the fields
// when no field is quoted.
func (fp *fieldParser) count(b []byte) (int, string) {
	if bytes.IndexByte(b, '"') < 0 {
		return bytes.Count(b, fp.delim) + 1, ""
	}
	_, detail := fp.parse(b)
	return len(fp.spans) / 2, detail
}

// appendCRLFAsLF appends s with each \r\n turned into \n, as encoding/csv reads quoted newlines.
func appendCRLFAsLF(dst, s []byte) []byte {
	for {
		j := bytes.IndexByte(s, '\r')
		if j < 0 || j+1 == len(s) {
			return append(dst, s...)
		}
		if s[j+1] == '\n' {
			dst = append(dst, s[:j]...)
			s = s[j+1:]
			continue
		}
		dst = append(dst, s[:j+1]...)
		s = s[j+1:]
	}
}
