package csvplan

import (
	"errors"
	"fmt"
	"io"
)

// ReaderOptions configure a chunk Reader.
type ReaderOptions struct {
	// Delimiter as in Options; must be the one the plan was made with.
	Delimiter rune
	// FirstRow is the number of the range's first row (chunk index × rowsPerChunk).
	FirstRow int64
	// Offset is the stream offset of the range's first byte; it only makes reported offsets
	// absolute.
	Offset int64
	// ExpectRows, when positive, makes Err report a range that does not hold exactly that many
	// rows: the object changed since it was planned, or the range is not the planned one.
	ExpectRows int64
	// MaxRowBytes as in Options.
	MaxRowBytes int

	bufSize int
}

// Row is one data row of a chunk.
type Row struct {
	Num    int64    // data row number, 0-based, as the scanner numbers it
	Offset int64    // stream offset of the row's first byte
	Fields []string // nil for a row_too_long row; best-effort fields for other malformed rows
	Err    *RowError
}

// RowCountError means a byte range held a different number of rows than the plan says.
type RowCountError struct {
	Offset    int64
	Got, Want int64
}

func (e *RowCountError) Error() string {
	return fmt.Sprintf("the range at byte %d held %d rows, the plan says %d: the object changed since it was planned, or the plan is wrong",
		e.Offset, e.Got, e.Want)
}

// Reader reads the rows of one byte range of a CSV stream: give it an io.Reader over exactly
// [Offsets[i], Offsets[i+1]) of the plan. A malformed row comes back with Row.Err set and the
// reading goes on, so each such row can be counted and reported; only a read error stops it.
//
//	for rd.Next() { row := rd.Row(); ... }
//	if err := rd.Err(); err != nil { ... }
type Reader struct {
	sp     *splitter
	fp     fieldParser
	width  int
	opts   ReaderOptions
	row    Row
	rows   int64
	blanks int64
	err    error
	done   bool
}

// NewReader reads rows of len(header) fields from r.
func NewReader(r io.Reader, header []string, opts ReaderOptions) (*Reader, error) {
	delim, err := delimiter(opts.Delimiter)
	if err != nil {
		return nil, err
	}
	if len(header) == 0 {
		return nil, errors.New("csv reader: empty header")
	}
	sp := newSplitter(r, delim, opts.MaxRowBytes, opts.bufSize)
	sp.base = opts.Offset
	return &Reader{sp: sp, fp: fieldParser{delim: delim}, width: len(header), opts: opts}, nil
}

// Next advances to the next row and reports whether there is one.
func (r *Reader) Next() bool {
	if r.done {
		return false
	}
	var rec record
	for {
		ok, err := r.sp.next(&rec)
		if err != nil {
			r.err = err
			r.done = true
			return false
		}
		if !ok {
			r.done = true
			if r.opts.ExpectRows > 0 && r.rows != r.opts.ExpectRows {
				r.err = &RowCountError{Offset: r.opts.Offset, Got: r.rows, Want: r.opts.ExpectRows}
			}
			return false
		}
		if rec.tooLong || len(rec.body()) > 0 {
			break
		}
		r.blanks++
	}
	num := r.opts.FirstRow + r.rows
	r.rows++
	r.row = Row{Num: num, Offset: rec.offset}
	if rec.tooLong {
		r.row.Err = tooLongError(num, rec.offset, rec.length, r.sp.maxRow)
		return true
	}
	src, detail := r.fp.parse(rec.body())
	// One string for the whole row; fields are slices of it (one allocation a row).
	s := string(src)
	spans := r.fp.spans
	fields := make([]string, len(spans)/2)
	for i := range fields {
		fields[i] = s[spans[2*i]:spans[2*i+1]]
	}
	r.row.Fields = fields
	switch {
	case detail != "":
		r.row.Err = &RowError{Row: num, Offset: rec.offset, Reason: ReasonUnbalancedQuote, Detail: detail}
	case len(fields) != r.width:
		r.row.Err = fieldCountError(num, rec.offset, len(fields), r.width)
	}
	return true
}

// Row is the current row. Its fields stay valid after Next.
func (r *Reader) Row() Row { return r.row }

// Err is the error that stopped reading, if any: a read error, or *RowCountError.
func (r *Reader) Err() error { return r.err }

// Rows is the number of rows read so far, malformed ones included.
func (r *Reader) Rows() int64 { return r.rows }

// BlankRows is the number of blank lines skipped so far.
func (r *Reader) BlankRows() int64 { return r.blanks }
