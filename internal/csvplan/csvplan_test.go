package csvplan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func scanString(t *testing.T, s string, opts Options) *Result {
	t.Helper()
	if opts.RowsPerChunk == 0 {
		opts.RowsPerChunk = 2
	}
	res, err := Scan(strings.NewReader(s), opts)
	if err != nil {
		t.Fatalf("Scan(%q): %v", s, err)
	}
	return res
}

// readAll reads every chunk of res from s.
func readAll(t *testing.T, s string, res *Result, rpc int64, delim ...rune) []Row {
	t.Helper()
	var rows []Row
	for i := 0; i+1 < len(res.Offsets); i++ {
		from, to := res.Offsets[i], res.Offsets[i+1]
		opts := ReaderOptions{FirstRow: int64(i) * rpc, Offset: from, ExpectRows: min(rpc, res.TotalRows-int64(i)*rpc)}
		if len(delim) > 0 {
			opts.Delimiter = delim[0]
		}
		rd, err := NewReader(strings.NewReader(s[from:to]), res.Header, opts)
		if err != nil {
			t.Fatal(err)
		}
		for rd.Next() {
			rows = append(rows, rd.Row())
		}
		if err := rd.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return rows
}

func TestHeaderMissingColumns(t *testing.T) {
	_, err := Scan(strings.NewReader("id,title ,record_type\n1,a,b\n"), Options{
		RowsPerChunk: 10, Required: []string{"id", "formatted_text", "title"},
	})
	var he *HeaderError
	if !errors.As(err, &he) {
		t.Fatalf("err = %v, want *HeaderError", err)
	}
	if !slices.Equal(he.Missing, []string{"formatted_text", "title"}) {
		t.Errorf("Missing = %q", he.Missing)
	}
	msg := err.Error()
	for _, want := range []string{`"formatted_text"`, `"title"`, `header found: ["id", "title ", "record_type"]`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %s", msg, want)
		}
	}
	if !IsHeaderError(fmt.Errorf("plan: %w", err)) {
		t.Error("IsHeaderError does not see through wrapping")
	}
}

func TestHeaderDuplicateRequiredColumn(t *testing.T) {
	_, err := Scan(strings.NewReader("id,text,id\n1,a,2\n"), Options{RowsPerChunk: 1, Required: []string{"id", "text"}})
	var he *HeaderError
	if !errors.As(err, &he) || !slices.Equal(he.Duplicate, []string{"id"}) || len(he.Missing) != 0 {
		t.Fatalf("err = %v, want duplicate id", err)
	}
	// A duplicate nobody maps is fine.
	scanString(t, "id,x,x\n1,a,2\n", Options{Required: []string{"id"}})
}

func TestHeaderErrorsForUnreadableHeaders(t *testing.T) {
	for _, in := range []string{"", "\n\r\n", "\xEF\xBB\xBF", "id,\"text\n1,2\n", "id,\"te\"xt\n1,2\n"} {
		_, err := Scan(strings.NewReader(in), Options{RowsPerChunk: 1})
		var he *HeaderError
		if !errors.As(err, &he) || he.Problem == "" {
			t.Errorf("Scan(%q) err = %v, want a HeaderError with a problem", in, err)
		}
	}
}

func TestHeaderListCapped(t *testing.T) {
	cols := make([]string, 500)
	for i := range cols {
		cols[i] = fmt.Sprintf("column_%d", i)
	}
	_, err := Scan(strings.NewReader(strings.Join(cols, ",")+"\n"), Options{RowsPerChunk: 1, Required: []string{"id"}})
	if err == nil || len(err.Error()) > 2048 || !strings.Contains(err.Error(), "450 more") {
		t.Fatalf("err = %v (%d bytes), want a bounded message", err, len(err.Error()))
	}
}

func TestBOMStripped(t *testing.T) {
	in := "\xEF\xBB\xBFid,text\n1,a\n"
	res := scanString(t, in, Options{Required: []string{"id"}})
	if res.Header[0] != "id" {
		t.Fatalf("header[0] = %q", res.Header[0])
	}
	// Offsets are positions in the stream as stored, BOM included.
	if res.DataOffset != int64(len("\xEF\xBB\xBFid,text\n")) || res.Offsets[0] != res.DataOffset {
		t.Fatalf("DataOffset %d, Offsets %v", res.DataOffset, res.Offsets)
	}
	// A quoted first header name after a BOM is still a quoted field.
	res = scanString(t, "\xEF\xBB\xBF\"id\",\"text\"\n1,\"a\nb\"\n", Options{Required: []string{"id", "text"}})
	if !slices.Equal(res.Header, []string{"id", "text"}) || res.TotalRows != 1 || res.MalformedRows != 0 {
		t.Fatalf("got %+v", res)
	}
}

func TestCRLF(t *testing.T) {
	in := "id,text\r\n1,\"two\r\nlines\"\r\n2,plain\r\n"
	res := scanString(t, in, Options{})
	rows := readAll(t, in, res, 2)
	want := [][]string{{"1", "two\nlines"}, {"2", "plain"}}
	if res.Header[1] != "text" || len(rows) != 2 {
		t.Fatalf("header %q rows %d", res.Header, len(rows))
	}
	for i, r := range rows {
		if r.Err != nil || !slices.Equal(r.Fields, want[i]) {
			t.Errorf("row %d = %q %v, want %q", i, r.Fields, r.Err, want[i])
		}
	}
}

func TestBlankLinesSkippedAndCounted(t *testing.T) {
	in := "\nid,text\n1,a\n\n\r\n2,b\n\n3,c"
	res := scanString(t, in, Options{RowsPerChunk: 2})
	if res.TotalRows != 3 || res.BlankRows != 4 {
		t.Fatalf("rows %d blank %d, want 3 and 4", res.TotalRows, res.BlankRows)
	}
	// Chunk 1 starts at row 2's first byte, after the blank lines.
	if got := in[res.Offsets[1]:]; got != "3,c" {
		t.Fatalf("chunk 1 = %q", got)
	}
	rows := readAll(t, in, res, 2)
	for i, r := range rows {
		if r.Num != int64(i) || r.Fields[0] != fmt.Sprint(i+1) {
			t.Errorf("row %d = %d %q", i, r.Num, r.Fields)
		}
	}
}

func TestFinalRowWithoutNewline(t *testing.T) {
	for _, in := range []string{"id\n1\n2", "id\n1\n\"2\"", "id\n1\n2\r"} {
		res := scanString(t, in, Options{RowsPerChunk: 1})
		rows := readAll(t, in, res, 1)
		if len(rows) != 2 || rows[1].Fields[0] != "2" || rows[1].Err != nil {
			t.Errorf("%q: rows %+v", in, rows)
		}
	}
}

// An unclosed quote at EOF makes the rest of the file one malformed row: counted, reported, and
// the rows before it intact.
func TestUnterminatedQuoteAtEOF(t *testing.T) {
	in := "id,text\n1,a\n2,\"never closed\n3,c\n4,d\n"
	res := scanString(t, in, Options{RowsPerChunk: 1})
	if res.TotalRows != 2 || res.MalformedRows != 1 {
		t.Fatalf("rows %d malformed %d, want 2 and 1", res.TotalRows, res.MalformedRows)
	}
	s := res.MalformedSamples[0]
	if s.Row != 1 || s.Reason != ReasonUnbalancedQuote || s.Offset != int64(strings.Index(in, "2,")) {
		t.Fatalf("sample %+v", s)
	}
	rows := readAll(t, in, res, 1)
	if len(rows) != 2 || rows[0].Err != nil || rows[1].Err == nil || rows[1].Err.Reason != ReasonUnbalancedQuote {
		t.Fatalf("rows %+v", rows)
	}
	if rows[1].Fields[1] != "never closed\n3,c\n4,d\n" {
		t.Fatalf("malformed row's fields %q", rows[1].Fields)
	}
}

func TestMalformedRowsReportedAndReadingGoesOn(t *testing.T) {
	in := "id,text\n1,a\n2,\"b\"x,y\n3\n4,a,b\n5,\"ok, fine\"\n6,5\" screen\n"
	res := scanString(t, in, Options{RowsPerChunk: 4})
	rows := readAll(t, in, res, 4)
	want := []string{"", ReasonUnbalancedQuote, ReasonWrongFieldCount, ReasonWrongFieldCount, "", ""}
	if len(rows) != len(want) || res.MalformedRows != 3 {
		t.Fatalf("%d rows, %d malformed", len(rows), res.MalformedRows)
	}
	for i, r := range rows {
		got := ""
		if r.Err != nil {
			got = r.Err.Reason
			if r.Err.Row != int64(i) || !strings.Contains(r.Err.Error(), got) {
				t.Errorf("row %d error %v", i, r.Err)
			}
		}
		if got != want[i] {
			t.Errorf("row %d (%q): reason %q, want %q", i, r.Fields, got, want[i])
		}
	}
	// A quote inside an unquoted field is kept literally.
	if rows[5].Fields[1] != `5" screen` {
		t.Errorf("bare quote field = %q", rows[5].Fields[1])
	}
}

func TestOnRowFields(t *testing.T) {
	in := "id|text\n1|\"a|b\"\n2|\"x\"\"y\"\n3|bad|row\n4|plain\n"
	var got []string
	res := scanString(t, in, Options{Delimiter: '|', RowsPerChunk: 10, OnRow: func(row int64, f [][]byte) error {
		got = append(got, fmt.Sprintf("%d:%s", row, f[1]))
		return nil
	}})
	want := []string{"0:a|b", `1:x"y`, "3:plain"} // row 2 is malformed: counted, not passed on
	if !slices.Equal(got, want) || res.MalformedRows != 1 || res.TotalRows != 4 {
		t.Fatalf("OnRow saw %q, malformed %d, rows %d", got, res.MalformedRows, res.TotalRows)
	}
}

func TestOnRowErrorStopsScan(t *testing.T) {
	stop := errors.New("stop")
	_, err := Scan(strings.NewReader("id\n1\n2\n3\n"), Options{RowsPerChunk: 1, OnRow: func(row int64, _ [][]byte) error {
		if row == 1 {
			return stop
		}
		return nil
	}})
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "row 1") {
		t.Fatalf("err = %v", err)
	}
}

func TestTooManyChunks(t *testing.T) {
	in := "id\n" + strings.Repeat("x\n", 25)
	res, err := Scan(strings.NewReader(in), Options{RowsPerChunk: 2, MaxChunks: 10})
	var tm *TooManyChunksError
	if !errors.As(err, &tm) || tm.Chunks != 13 || tm.TotalRows != 25 || res == nil || res.Offsets != nil {
		t.Fatalf("err = %v res %+v", err, res)
	}
	if !strings.Contains(err.Error(), "at least 3") {
		t.Errorf("message %q does not say which rowsPerChunk fits", err)
	}
	// Exactly at the limit is fine.
	if _, err := Scan(strings.NewReader(in), Options{RowsPerChunk: 3, MaxChunks: 9}); err != nil {
		t.Fatal(err)
	}
}

func TestNoDataRows(t *testing.T) {
	res := scanString(t, "id,text\n\n", Options{})
	if res.TotalRows != 0 || !slices.Equal(res.Offsets, []int64{9}) || res.BlankRows != 1 {
		t.Fatalf("%+v", res)
	}
}

func TestMultiByteDelimiter(t *testing.T) {
	in := "id→text\n1→\"a→b\"\n2→←→\n"
	res := scanString(t, in, Options{Delimiter: '→', RowsPerChunk: 1})
	rows := readAll(t, in, res, 1, '→')
	if len(rows) != 2 || rows[0].Err != nil || rows[0].Fields[1] != "a→b" ||
		rows[1].Err == nil || !slices.Equal(rows[1].Fields, []string{"2", "←", ""}) {
		t.Fatalf("rows %+v", rows)
	}
}

func TestInvalidOptions(t *testing.T) {
	for _, d := range []rune{'"', '\n', '\r', -1, 0xD800} {
		if _, err := Scan(strings.NewReader("a\n"), Options{Delimiter: d, RowsPerChunk: 1}); err == nil {
			t.Errorf("delimiter %q accepted", d)
		}
		if _, err := NewReader(strings.NewReader(""), []string{"a"}, ReaderOptions{Delimiter: d}); err == nil {
			t.Errorf("reader delimiter %q accepted", d)
		}
	}
	if _, err := Scan(strings.NewReader("a\n"), Options{}); err == nil {
		t.Error("rowsPerChunk 0 accepted")
	}
	if _, err := NewReader(strings.NewReader(""), nil, ReaderOptions{}); err == nil {
		t.Error("empty header accepted")
	}
}

func TestReadErrorsPropagate(t *testing.T) {
	boom := errors.New("connection reset")
	in := io.MultiReader(strings.NewReader("id,text\n1,a\n"), iotest.ErrReader(boom))
	if _, err := Scan(in, Options{RowsPerChunk: 1}); !errors.Is(err, boom) {
		t.Fatalf("Scan err = %v", err)
	}
	rd, _ := NewReader(io.MultiReader(strings.NewReader("1,a\n2,"), iotest.ErrReader(boom)), []string{"id", "text"}, ReaderOptions{})
	n := 0
	for rd.Next() {
		n++
	}
	if !errors.Is(rd.Err(), boom) || n != 1 {
		t.Fatalf("reader err = %v after %d rows", rd.Err(), n)
	}
}

func TestReaderRowCountMismatch(t *testing.T) {
	rd, _ := NewReader(strings.NewReader("1,a\n2,b\n3,c\n"), []string{"id", "text"}, ReaderOptions{ExpectRows: 2, Offset: 100})
	for rd.Next() {
	}
	var rce *RowCountError
	if !errors.As(rd.Err(), &rce) || rce.Got != 3 || rce.Want != 2 || rce.Offset != 100 {
		t.Fatalf("err = %v", rd.Err())
	}
}

// A stray quote early in a big file must not make the scanner or a reader buffer the file.
func TestUnclosedQuoteMemoryBounded(t *testing.T) {
	tail := strings.Repeat("9,just more text that is swallowed by the open quote\n", 40000) // ≈ 2 MB
	in := "id,text\n1,ok\n2,\"oops\n" + tail
	res := scanString(t, in, Options{RowsPerChunk: 1, MaxRowBytes: 64 << 10})
	if res.TotalRows != 2 || res.MalformedRows != 1 || res.MalformedSamples[0].Reason != ReasonRowTooLong {
		t.Fatalf("%+v", res)
	}
	rd, _ := NewReader(strings.NewReader(in[res.Offsets[1]:]), res.Header, ReaderOptions{MaxRowBytes: 64 << 10, FirstRow: 1})
	if !rd.Next() || rd.Row().Err == nil || rd.Row().Err.Reason != ReasonRowTooLong || rd.Next() {
		t.Fatalf("row %+v", rd.Row())
	}
	if c := cap(rd.sp.buf); c > 1<<20 {
		t.Fatalf("reader buffered %d bytes for a 64 KiB row limit", c)
	}
}

// A long but legal row crosses many buffer refills and growths.
func TestLongQuotedRow(t *testing.T) {
	long := strings.Repeat("word, \"quoted\"\nline ", 50000) // ≈ 1 MB
	in := "id,text\n1,\"" + strings.ReplaceAll(long, `"`, `""`) + "\"\n2,b\n"
	res := scanString(t, in, Options{RowsPerChunk: 1})
	rows := readAll(t, in, res, 1)
	if len(rows) != 2 || rows[0].Fields[1] != long || rows[1].Fields[1] != "b" {
		t.Fatalf("long row read back wrong (%d rows)", len(rows))
	}
}

func TestReaderFieldsSurviveNext(t *testing.T) {
	rd, _ := NewReader(bytes.NewReader([]byte("1,\"a\"\n2,b\n")), []string{"id", "t"}, ReaderOptions{})
	rd.Next()
	first := rd.Row()
	rd.Next()
	if first.Fields[1] != "a" || rd.Row().Fields[1] != "b" {
		t.Fatalf("fields changed: %q %q", first.Fields, rd.Row().Fields)
	}
}

// The scan result drops into worker.Plan as is: the plan validates, and each chunk the plan hands
// out reads back exactly its rows.
func TestPlanConvention(t *testing.T) {
	in := "\xEF\xBB\xBFid,text\r\n" + strings.Repeat("1,\"a,\nb\"\r\n\r\n2,c\r\n", 17) + "3,last"
	const rpc = 5
	res := scanString(t, in, Options{RowsPerChunk: rpc})
	plan := &worker.Plan{Header: res.Header, TotalRows: res.TotalRows, RowsPerChunk: rpc, Offsets: res.Offsets, BlankRows: res.BlankRows}
	if err := plan.Validate(); err != nil {
		t.Fatal(err)
	}
	var next int64
	for i := 0; i < plan.Chunks(); i++ {
		c, err := plan.Chunk(i)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := NewReader(strings.NewReader(in[c.Offset:c.Offset+c.Length]), plan.Header,
			ReaderOptions{FirstRow: c.FirstRow, Offset: c.Offset, ExpectRows: c.Rows})
		if err != nil {
			t.Fatal(err)
		}
		for rd.Next() {
			if r := rd.Row(); r.Num != next || r.Err != nil {
				t.Fatalf("chunk %d: row %d (%v), want %d", i, r.Num, r.Err, next)
			}
			next++
		}
		if err := rd.Err(); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if next != 35 || res.TotalRows != 35 || res.BlankRows != 17 {
		t.Fatalf("read %d rows, scanned %d (blank %d)", next, res.TotalRows, res.BlankRows)
	}
}

// Every header path (the planner's peek, each chunk's header read, Scan) reads the header with
// ReadHeader, so a BOM before a quoted name or before blank lines reads as Scan reads it.
func TestReadHeaderAgreesWithScan(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string
	}{
		{"BOM + quoted header", "\xEF\xBB\xBF\"id\",\"formatted_text\"\n1,a\n", []string{"id", "formatted_text"}},
		{"BOM + blank first line", "\xEF\xBB\xBF\n\r\n\"id\",formatted_text\r\n1,a\r\n", []string{"id", "formatted_text"}},
		{"BOM + unquoted", "\xEF\xBB\xBFid,formatted_text\n1,a\n", []string{"id", "formatted_text"}},
		{"no BOM, quoted name with a delimiter", "\"a,b\",id\nx,1\n", []string{"a,b", "id"}},
		// A BOM is only dropped at the very start of the stream.
		{"BOM after a blank line is data", "\n\xEF\xBB\xBFid,t\n1,a\n", []string{"\uFEFFid", "t"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, off, err := ReadHeader(strings.NewReader(c.in), ',', 0)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(h, c.want) {
				t.Fatalf("header %q, want %q", h, c.want)
			}
			res := scanString(t, c.in, Options{})
			if !slices.Equal(res.Header, h) || res.DataOffset != off || res.TotalRows != 1 {
				t.Fatalf("Scan header %q at %d (%d rows), ReadHeader %q at %d", res.Header, res.DataOffset, res.TotalRows, h, off)
			}
		})
	}
	for _, in := range []string{"", "\xEF\xBB\xBF", "\xEF\xBB\xBF\n\n", "\"id,t\n"} {
		if _, _, err := ReadHeader(strings.NewReader(in), ',', 0); !IsHeaderError(err) {
			t.Errorf("ReadHeader(%q) = %v, want a *HeaderError", in, err)
		}
	}
}
