package csvplan

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxSamples is how many malformed rows a scan keeps as examples.
const MaxSamples = 10

// Options configure Scan.
type Options struct {
	// Delimiter separates fields; 0 means ','. Any rune encoding/csv accepts.
	Delimiter rune
	// RowsPerChunk is how many data rows each chunk holds; must be positive.
	RowsPerChunk int64
	// Required lists the mapped column names the header must contain, each exactly once.
	Required []string
	// MaxChunks, when positive, fails the scan (after counting every row, so the error can say
	// which rowsPerChunk would fit) if the file needs more chunks.
	MaxChunks int
	// MaxRowBytes bounds one row; longer rows are counted and failed as row_too_long. 0 means
	// DefaultMaxRowBytes. Chunk readers should use the same value so both agree on which rows fail.
	MaxRowBytes int
	// OnRow, when set, is called with each well-formed data row (malformed rows are only counted,
	// see Result.MalformedRows), e.g. to estimate tokens from the text column without a second pass.
	// fields alias the scanner's buffers and are valid only during the call. An error stops the
	// scan and is returned wrapped.
	OnRow func(row int64, fields [][]byte) error

	bufSize int // tests shrink it to force records across refills
}

// Result is what a scan learned.
type Result struct {
	// Header is the first record's fields, with a UTF-8 BOM removed from the first name.
	Header []string
	// DataOffset is the byte offset of the first byte after the header record.
	DataOffset int64
	// TotalRows counts data rows, malformed ones included; blank lines are not rows.
	TotalRows int64
	// BlankRows counts blank lines skipped (before and after the header).
	BlankRows int64
	// Bytes is the length of the stream.
	Bytes int64
	// Offsets[i] is the byte offset of data row i*RowsPerChunk, plus a final entry equal to Bytes:
	// chunk i covers [Offsets[i], Offsets[i+1]), as in worker.Plan. With no rows it is [Bytes].
	// Nil when the scan fails with *TooManyChunksError.
	Offsets []int64
	// MalformedRows counts data rows a chunk reader will report with a RowError.
	MalformedRows int64
	// MalformedSamples holds the first MaxSamples of them.
	MalformedSamples []RowError
}

// HeaderError means the header does not fit the mapping; the ingestion cannot proceed.
type HeaderError struct {
	Header    []string // as found; nil when there is no header record
	Missing   []string // required columns not in the header
	Duplicate []string // required columns found more than once
	Problem   string   // a header that cannot be read at all
}

func (e *HeaderError) Error() string {
	var parts []string
	if e.Problem != "" {
		parts = append(parts, e.Problem)
	}
	if len(e.Missing) > 0 {
		parts = append(parts, "missing column(s) "+quoteList(e.Missing, 20))
	}
	if len(e.Duplicate) > 0 {
		parts = append(parts, "column(s) "+quoteList(e.Duplicate, 20)+" appear more than once")
	}
	msg := "CSV header: " + strings.Join(parts, "; ")
	if e.Header != nil {
		msg += "; header found: " + quoteList(e.Header, 50)
	}
	return msg
}

// quoteList renders names quoted (so stray spaces show), at most max of them.
func quoteList(names []string, max int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, " … %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if len(n) > 100 {
			n = n[:100] + "…"
		}
		fmt.Fprintf(&b, "%q", n)
	}
	b.WriteByte(']')
	return b.String()
}

// TooManyChunksError means the file needs more chunks than allowed at this rowsPerChunk.
type TooManyChunksError struct {
	TotalRows, RowsPerChunk int64
	Chunks, MaxChunks       int64
}

func (e *TooManyChunksError) Error() string {
	need := (e.TotalRows + e.MaxChunks - 1) / e.MaxChunks
	return fmt.Sprintf("%d rows at rowsPerChunk %d make %d chunks, more than the limit of %d; set rowsPerChunk to at least %d",
		e.TotalRows, e.RowsPerChunk, e.Chunks, e.MaxChunks, need)
}

// Scan reads r once. It fails at once with *HeaderError when the header lacks a required column,
// with *TooManyChunksError (and a Result without Offsets) when MaxChunks is exceeded, and with a
// wrapped error when reading fails or OnRow returns one. Malformed data rows do not fail the scan.
func Scan(r io.Reader, opts Options) (*Result, error) {
	delim, err := delimiter(opts.Delimiter)
	if err != nil {
		return nil, err
	}
	if opts.RowsPerChunk <= 0 {
		return nil, fmt.Errorf("rowsPerChunk %d must be positive", opts.RowsPerChunk)
	}
	sp := newSplitter(r, delim, opts.MaxRowBytes, opts.bufSize)
	fp := &fieldParser{delim: delim}
	res := &Result{}
	header, blanks, err := readHeader(sp, fp)
	res.BlankRows = blanks
	if err != nil {
		return nil, err
	}
	res.Header = header
	res.DataOffset = sp.offset()
	if err := checkHeader(res.Header, opts.Required); err != nil {
		return nil, err
	}

	width := len(res.Header)
	rpc := opts.RowsPerChunk
	var rec record
	var fields [][]byte
	tooMany := false
	for {
		ok, err := sp.next(&rec)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		var b []byte
		if !rec.tooLong {
			b = rec.body()
			if len(b) == 0 {
				res.BlankRows++
				continue
			}
		}
		row := res.TotalRows
		res.TotalRows++
		if row%rpc == 0 && !tooMany {
			if opts.MaxChunks > 0 && len(res.Offsets) >= opts.MaxChunks {
				tooMany = true
				res.Offsets = nil
			} else {
				res.Offsets = append(res.Offsets, rec.offset)
			}
		}
		var rerr *RowError
		if rec.tooLong {
			rerr = tooLongError(row, rec.offset, rec.length, sp.maxRow)
		} else if opts.OnRow == nil {
			if n, detail := fp.count(b); detail != "" {
				rerr = &RowError{Row: row, Offset: rec.offset, Reason: ReasonUnbalancedQuote, Detail: detail}
			} else if n != width {
				rerr = fieldCountError(row, rec.offset, n, width)
			}
		} else {
			src, detail := fp.parse(b)
			n := len(fp.spans) / 2
			if detail != "" {
				rerr = &RowError{Row: row, Offset: rec.offset, Reason: ReasonUnbalancedQuote, Detail: detail}
			} else if n != width {
				rerr = fieldCountError(row, rec.offset, n, width)
			} else {
				fields = fields[:0]
				for i := 0; i < n; i++ {
					fields = append(fields, src[fp.spans[2*i]:fp.spans[2*i+1]])
				}
				if err := opts.OnRow(row, fields); err != nil {
					return nil, fmt.Errorf("row %d at byte %d: %w", row, rec.offset, err)
				}
			}
		}
		if rerr != nil {
			res.MalformedRows++
			if len(res.MalformedSamples) < MaxSamples {
				res.MalformedSamples = append(res.MalformedSamples, *rerr)
			}
		}
	}
	res.Bytes = sp.offset()
	if tooMany {
		chunks := (res.TotalRows + rpc - 1) / rpc
		return res, &TooManyChunksError{TotalRows: res.TotalRows, RowsPerChunk: rpc, Chunks: chunks, MaxChunks: int64(opts.MaxChunks)}
	}
	res.Offsets = append(res.Offsets, res.Bytes)
	return res, nil
}

// ReadHeader reads the header record at the start of r the way Scan does: a UTF-8 BOM is dropped,
// blank lines before it are skipped, and the first record's fields are unquoted. Every reader of a
// header (the planner, each chunk) uses it, so a BOM before a quoted name (`\xEF\xBB\xBF"id"`, what
// pandas writes with utf-8-sig and QUOTE_ALL) reads the same everywhere. It returns the header and
// the stream offset of the first byte after it; a missing or malformed header is a *HeaderError.
// It reads little beyond the header record (one buffer).
func ReadHeader(r io.Reader, delim rune, maxRowBytes int) ([]string, int64, error) {
	d, err := delimiter(delim)
	if err != nil {
		return nil, 0, err
	}
	sp := newSplitter(r, d, maxRowBytes, 0)
	header, _, err := readHeader(sp, &fieldParser{delim: d})
	if err != nil {
		return nil, 0, err
	}
	return header, sp.offset(), nil
}

// readHeader consumes the BOM, blank lines and the header record of sp.
func readHeader(sp *splitter, fp *fieldParser) (header []string, blanks int64, err error) {
	if err := sp.skipBOM(); err != nil {
		return nil, 0, err
	}
	var rec record
	for {
		ok, err := sp.next(&rec)
		if err != nil {
			return nil, blanks, err
		}
		if !ok {
			return nil, blanks, &HeaderError{Problem: "no header row: the file is empty"}
		}
		if !rec.tooLong && len(rec.body()) == 0 {
			blanks++
			continue
		}
		break
	}
	if rec.tooLong {
		return nil, blanks, &HeaderError{Problem: fmt.Sprintf("header row is %d bytes, longer than %d (an unclosed quote?)", rec.length, sp.maxRow)}
	}
	src, detail := fp.parse(rec.body())
	header = make([]string, len(fp.spans)/2)
	for i := range header {
		header[i] = string(src[fp.spans[2*i]:fp.spans[2*i+1]])
	}
	if detail != "" {
		return nil, blanks, &HeaderError{Header: header, Problem: "malformed header row: " + detail}
	}
	return header, blanks, nil
}

func checkHeader(header, required []string) error {
	seen := make(map[string]int, len(header))
	for _, h := range header {
		seen[h]++
	}
	var missing, dup []string
	for _, name := range required {
		switch seen[name] {
		case 0:
			missing = append(missing, name)
		case 1:
		default:
			dup = append(dup, name)
		}
	}
	if len(missing) > 0 || len(dup) > 0 {
		return &HeaderError{Header: header, Missing: missing, Duplicate: dup}
	}
	return nil
}

func fieldCountError(row, offset int64, got, want int) *RowError {
	return &RowError{Row: row, Offset: offset, Reason: ReasonWrongFieldCount,
		Detail: fmt.Sprintf("%d fields, header has %d", got, want)}
}

func tooLongError(row, offset, length int64, max int) *RowError {
	return &RowError{Row: row, Offset: offset, Reason: ReasonRowTooLong,
		Detail: fmt.Sprintf("%d bytes, more than %d (an unclosed quote?)", length, max)}
}

// IsHeaderError reports whether err is (or wraps) a *HeaderError.
func IsHeaderError(err error) bool {
	var he *HeaderError
	return errors.As(err, &he)
}
