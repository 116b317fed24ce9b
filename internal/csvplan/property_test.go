package csvplan

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// variant is how a check feeds the bytes: through which reader wrapper and with what buffer size,
// so records cross buffer refills and growth at every possible position.
type variant struct {
	name    string
	wrap    func(io.Reader) io.Reader
	bufSize int
}

var variants = []variant{
	{"plain", func(r io.Reader) io.Reader { return r }, 0},
	{"one-byte-reads", iotest.OneByteReader, 0},
	{"half-reads/buf8", iotest.HalfReader, 8},
	{"data-err/buf4", iotest.DataErrReader, 4},
}

// check scans data, reads every chunk of the plan back and verifies the invariants that hold for
// any input: the chunks' rows, concatenated, are each row once in order with the scanner's
// numbering; scanner and reader agree on which rows are malformed; OnRow sees exactly the
// well-formed rows. When encoding/csv (FieldsPerRecord -1, LazyQuotes off) accepts the input, the
// header and rows must also be exactly encoding/csv's. It returns whether that comparison ran.
func check(t testing.TB, data []byte, delim rune, rpc int64, v variant) bool {
	t.Helper()
	fatalf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("input %q delim %q rowsPerChunk %d: "+format, append([]any{data, delim, rpc}, args...)...)
	}
	ref, refErr := referenceRead(data, delim)
	wellFormed := refErr == nil

	var onRow [][]string
	res, err := Scan(v.wrap(bytes.NewReader(data)), Options{
		Delimiter: delim, RowsPerChunk: rpc, bufSize: v.bufSize,
		OnRow: func(row int64, fields [][]byte) error {
			if row < 0 {
				fatalf("OnRow got row %d", row)
			}
			rec := make([]string, len(fields))
			for i, f := range fields {
				rec[i] = string(f)
			}
			onRow = append(onRow, rec)
			return nil
		},
	})
	// The scan without OnRow takes the counting fast path; it must agree.
	res2, err2 := Scan(v.wrap(bytes.NewReader(data)), Options{Delimiter: delim, RowsPerChunk: rpc, bufSize: v.bufSize})
	if (err == nil) != (err2 == nil) {
		fatalf("%s: scan with OnRow err=%v, without err=%v", v.name, err, err2)
	}
	oHeader, oRows, oOK := oracle(data, delim)
	if err != nil {
		var he *HeaderError
		if !errors.As(err, &he) {
			fatalf("%s: scan failed: %v", v.name, err)
		}
		if oOK {
			fatalf("%s: header error %v; the oracle reads header %q", v.name, err, oHeader)
		}
		if wellFormed && len(ref) > 0 {
			fatalf("%s: header error %v on input encoding/csv reads as %q", v.name, err, ref)
		}
		return wellFormed
	}
	if !equalResults(res, res2) {
		fatalf("%s: scan with OnRow %+v differs from scan without %+v", v.name, res, res2)
	}

	// Plan shape.
	wantChunks := (res.TotalRows + rpc - 1) / rpc
	if int64(len(res.Offsets)) != wantChunks+1 {
		fatalf("%s: %d offsets for %d rows at %d a chunk", v.name, len(res.Offsets), res.TotalRows, rpc)
	}
	if res.Offsets[len(res.Offsets)-1] != int64(len(data)) || res.Bytes != int64(len(data)) {
		fatalf("%s: last offset %d, bytes %d, want %d", v.name, res.Offsets[len(res.Offsets)-1], res.Bytes, len(data))
	}
	if res.Offsets[0] < res.DataOffset {
		fatalf("%s: first offset %d before data offset %d", v.name, res.Offsets[0], res.DataOffset)
	}
	for i := 1; i < len(res.Offsets); i++ {
		if res.Offsets[i] <= res.Offsets[i-1] {
			fatalf("%s: offsets not increasing: %v", v.name, res.Offsets)
		}
	}

	// Read every chunk and concatenate.
	var rows []Row
	for i := 0; i+1 < len(res.Offsets); i++ {
		first := int64(i) * rpc
		want := min(rpc, res.TotalRows-first)
		got := readRange(t, data, res, delim, res.Offsets[i], res.Offsets[i+1], first, want, v)
		if len(got) == 0 || got[0].Offset != res.Offsets[i] {
			fatalf("%s: chunk %d does not start with a row at its offset %d", v.name, i, res.Offsets[i])
		}
		rows = append(rows, got...)
	}
	if int64(len(rows)) != res.TotalRows {
		fatalf("%s: chunks hold %d rows, scan counted %d", v.name, len(rows), res.TotalRows)
	}
	var malformed int64
	var good [][]string
	for i, r := range rows {
		if r.Num != int64(i) {
			fatalf("%s: row %d numbered %d", v.name, i, r.Num)
		}
		if r.Err != nil {
			if r.Err.Row != r.Num || r.Err.Offset != r.Offset {
				fatalf("%s: row error %+v for row %d at %d", v.name, r.Err, r.Num, r.Offset)
			}
			if int(malformed) < len(res.MalformedSamples) && res.MalformedSamples[malformed] != *r.Err {
				fatalf("%s: reader error %+v, scanner sample %+v", v.name, *r.Err, res.MalformedSamples[malformed])
			}
			malformed++
			continue
		}
		if len(r.Fields) != len(res.Header) {
			fatalf("%s: row %d has %d fields without an error, header %d", v.name, r.Num, len(r.Fields), len(res.Header))
		}
		good = append(good, r.Fields)
	}
	if malformed != res.MalformedRows {
		fatalf("%s: reader found %d malformed rows, scanner %d", v.name, malformed, res.MalformedRows)
	}
	if !slices.EqualFunc(good, onRow, slices.Equal[[]string]) {
		fatalf("%s: OnRow saw %q, reader %q", v.name, onRow, good)
	}

	// The independent oracle of the documented dialect, on every input.
	if !oOK || !slices.Equal(res.Header, oHeader) {
		fatalf("%s: header %q, oracle %q (ok %v)", v.name, res.Header, oHeader, oOK)
	}
	if len(oRows) != len(rows) {
		fatalf("%s: %d rows, oracle %d", v.name, len(rows), len(oRows))
	}
	for i, o := range oRows {
		r := rows[i]
		reason := ""
		if r.Err != nil {
			reason = r.Err.Reason
		}
		if r.Offset != o.offset || reason != o.reason || !slices.Equal(r.Fields, o.fields) {
			fatalf("%s: row %d at %d %q (%s), oracle at %d %q (%s)", v.name, i, r.Offset, r.Fields, reason, o.offset, o.fields, o.reason)
		}
	}

	// One reader over all the data gives the same rows as the chunks.
	all := readRange(t, data, res, delim, res.DataOffset, int64(len(data)), 0, res.TotalRows, v)
	if !slices.EqualFunc(all, rows, equalRows) {
		fatalf("%s: whole-range read differs from chunked read", v.name)
	}

	if !wellFormed {
		return false
	}
	if len(ref) == 0 {
		fatalf("%s: scan found header %q, encoding/csv found no records", v.name, res.Header)
	}
	if !slices.Equal(res.Header, ref[0]) {
		fatalf("%s: header %q, encoding/csv %q", v.name, res.Header, ref[0])
	}
	if int64(len(ref)-1) != res.TotalRows {
		fatalf("%s: TotalRows %d, encoding/csv reads %d data rows", v.name, res.TotalRows, len(ref)-1)
	}
	for i, r := range rows {
		want := ref[i+1]
		if !slices.Equal(r.Fields, want) {
			fatalf("%s: row %d fields %q, encoding/csv %q", v.name, i, r.Fields, want)
		}
		badCount := len(want) != len(res.Header)
		switch {
		case badCount && (r.Err == nil || r.Err.Reason != ReasonWrongFieldCount):
			fatalf("%s: row %d has %d fields (header %d) but err %v", v.name, i, len(want), len(res.Header), r.Err)
		case !badCount && r.Err != nil:
			fatalf("%s: well-formed row %d reported %v", v.name, i, r.Err)
		}
	}
	return true
}

func readRange(t testing.TB, data []byte, res *Result, delim rune, from, to, firstRow, expect int64, v variant) []Row {
	t.Helper()
	rd, err := NewReader(v.wrap(bytes.NewReader(data[from:to])), res.Header, ReaderOptions{
		Delimiter: delim, FirstRow: firstRow, Offset: from, ExpectRows: expect, bufSize: v.bufSize,
	})
	if err != nil {
		t.Fatal(err)
	}
	var rows []Row
	for rd.Next() {
		rows = append(rows, rd.Row())
	}
	if err := rd.Err(); err != nil {
		t.Fatalf("%s: reading [%d,%d): %v", v.name, from, to, err)
	}
	return rows
}

func equalRows(a, b Row) bool {
	if a.Num != b.Num || a.Offset != b.Offset || !slices.Equal(a.Fields, b.Fields) || (a.Err == nil) != (b.Err == nil) {
		return false
	}
	return a.Err == nil || *a.Err == *b.Err
}

func equalResults(a, b *Result) bool {
	return slices.Equal(a.Header, b.Header) && a.DataOffset == b.DataOffset && a.TotalRows == b.TotalRows &&
		a.BlankRows == b.BlankRows && a.Bytes == b.Bytes && slices.Equal(a.Offsets, b.Offsets) &&
		a.MalformedRows == b.MalformedRows && slices.Equal(a.MalformedSamples, b.MalformedSamples)
}

// referenceRead is encoding/csv's reading of data (minus a leading BOM, which encoding/csv would keep).
func referenceRead(data []byte, delim rune) ([][]string, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, utf8BOM)))
	r.Comma = delim
	r.FieldsPerRecord = -1
	r.LazyQuotes = false
	return r.ReadAll()
}

var delims = []rune{',', ';', '\t', '→'}

// genCSV writes a well-formed CSV with every hard case: quoted fields holding delimiters, quotes,
// LF and CRLF; CRLF and LF record ends; blank lines; a BOM; a last row with no newline or with a
// lone \r; empty fields; multi-byte text next to a multi-byte delimiter; occasional rows with a
// wrong field count.
func genCSV(rng *rand.Rand, delim rune) []byte {
	var b bytes.Buffer
	if rng.IntN(4) == 0 {
		b.Write(utf8BOM)
	}
	cols := 1 + rng.IntN(5)
	eol := func() string {
		if rng.IntN(2) == 0 {
			return "\r\n"
		}
		return "\n"
	}
	writeRow := func(n int) {
		for c := 0; c < n; c++ {
			if c > 0 {
				b.WriteRune(delim)
			}
			b.WriteString(genField(rng, delim))
		}
	}
	for rng.IntN(5) == 0 {
		b.WriteString(eol()) // blank lines before the header
	}
	writeRow(cols)
	rows := rng.IntN(25)
	for r := 0; r < rows; r++ {
		b.WriteString(eol())
		for rng.IntN(6) == 0 {
			b.WriteString(eol()) // blank lines between rows
		}
		n := cols
		if rng.IntN(30) == 0 {
			n = 1 + rng.IntN(cols+2) // a malformed row now and then
		}
		writeRow(n)
	}
	switch rng.IntN(4) {
	case 0: // no final newline
	case 1:
		b.WriteString("\r") // a lone \r before EOF, which encoding/csv drops
	default:
		b.WriteString(eol())
		for rng.IntN(4) == 0 {
			b.WriteString(eol())
		}
	}
	return b.Bytes()
}

var pieces = []string{"a", "bc", "hello", " ", "  x  ", "é", "東京", "←", "€49.99", "'", "-", "0", "\t"}

func genField(rng *rand.Rand, delim rune) string {
	var s strings.Builder
	needQuote := false
	n := rng.IntN(5)
	for i := 0; i < n; i++ {
		switch k := rng.IntN(12); {
		case k == 0:
			s.WriteRune(delim)
			needQuote = true
		case k == 1:
			s.WriteString(`"`)
			needQuote = true
		case k == 2:
			s.WriteString("\n")
			needQuote = true
		case k == 3:
			s.WriteString("\r\n")
			needQuote = true
		case k == 4:
			s.WriteString("\r")
			needQuote = true
		default:
			p := pieces[rng.IntN(len(pieces))]
			if strings.ContainsRune(p, delim) {
				needQuote = true
			}
			s.WriteString(p)
		}
	}
	if !needQuote && rng.IntN(5) > 0 {
		return s.String()
	}
	return `"` + strings.ReplaceAll(s.String(), `"`, `""`) + `"`
}

// TestPropertyWellFormed: for generated well-formed CSVs and any rowsPerChunk, the chunks read
// back are exactly encoding/csv's rows, each once, in order.
func TestPropertyWellFormed(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	compared := 0
	for i := 0; i < 1500; i++ {
		delim := delims[rng.IntN(len(delims))]
		data := genCSV(rng, delim)
		v := variants[i%len(variants)]
		for _, rpc := range []int64{1, 2, 3, 7, 1000} {
			if check(t, data, delim, rpc, v) {
				compared++
			}
		}
		if t.Failed() {
			t.Logf("input %d (delim %q): %q", i, delim, data)
			return
		}
	}
	// The generator's rare malformed rows may be rejected by encoding/csv only through field counts,
	// which FieldsPerRecord -1 allows, so nearly every input must have been compared.
	if compared < 1500*5*9/10 {
		t.Fatalf("only %d of %d inputs were compared with encoding/csv; the generator drifted", compared, 1500*5)
	}
}

// TestPropertyArbitrary: for arbitrary short byte soups over the CSV alphabet (mostly malformed),
// scanner and reader still agree row for row, and match encoding/csv whenever it accepts the input.
func TestPropertyArbitrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	alphabet := []string{"a", "b", ",", ";", `"`, `""`, "\n", "\r", "\r\n", " ", "→", "\xEF\xBB\xBF", "\xe2"}
	for i := 0; i < 6000; i++ {
		var b strings.Builder
		if rng.IntN(8) == 0 {
			b.Write(utf8BOM)
		}
		n := rng.IntN(40)
		for j := 0; j < n; j++ {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		data := []byte(b.String())
		delim := delims[rng.IntN(len(delims))]
		rpc := int64(1 + rng.IntN(4))
		check(t, data, delim, rpc, variants[i%len(variants)])
		if t.Failed() {
			t.Logf("input %d (delim %q, rpc %d): %q", i, delim, rpc, data)
			return
		}
	}
}

// TestPropertyRowLimit: a row limit changes which rows fail, never the boundaries: offsets and
// counts are those of an unlimited scan, and exactly the rows longer than the limit fail as
// row_too_long, with no fields kept.
func TestPropertyRowLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var checkedRows, longRows int
	for i := 0; i < 800; i++ {
		delim := delims[rng.IntN(len(delims))]
		data := genCSV(rng, delim)
		ref, err := Scan(bytes.NewReader(data), Options{Delimiter: delim, RowsPerChunk: 2})
		if err != nil {
			continue
		}
		lengths := rowLengths(t, data[ref.DataOffset:], delim)
		limit := 1 + rng.IntN(12)
		v := variants[i%len(variants)]
		res, err := Scan(v.wrap(bytes.NewReader(data)), Options{Delimiter: delim, RowsPerChunk: 2, MaxRowBytes: limit, bufSize: v.bufSize})
		if err != nil {
			if IsHeaderError(err) && strings.Contains(err.Error(), "longer than") {
				continue // the header itself is over the limit
			}
			t.Fatalf("input %q limit %d: %v", data, limit, err)
		}
		if !slices.Equal(res.Offsets, ref.Offsets) || res.TotalRows != ref.TotalRows || res.BlankRows != ref.BlankRows {
			t.Fatalf("input %q limit %d: offsets %v rows %d, unlimited %v rows %d", data, limit, res.Offsets, res.TotalRows, ref.Offsets, ref.TotalRows)
		}
		rd, err := NewReader(v.wrap(bytes.NewReader(data[res.DataOffset:])), res.Header, ReaderOptions{
			Delimiter: delim, Offset: res.DataOffset, MaxRowBytes: limit, ExpectRows: res.TotalRows, bufSize: v.bufSize})
		if err != nil {
			t.Fatal(err)
		}
		var tooLong int64
		for k := 0; rd.Next(); k++ {
			row := rd.Row()
			long := row.Err != nil && row.Err.Reason == ReasonRowTooLong
			checkedRows++
			if long {
				longRows++
			}
			if long != (lengths[k] > int64(limit)) {
				t.Fatalf("input %q limit %d: row %d of %d bytes: too long = %v", data, limit, k, lengths[k], long)
			}
			if long {
				tooLong++
				if row.Fields != nil {
					t.Fatalf("too-long row %d kept fields", k)
				}
			}
		}
		if rd.Err() != nil {
			t.Fatal(rd.Err())
		}
		if tooLong > res.MalformedRows {
			t.Fatalf("reader found %d too-long rows, scanner %d malformed in all", tooLong, res.MalformedRows)
		}
	}
	// The property means little unless both kinds of rows were seen.
	if longRows < 100 || checkedRows-longRows < 100 {
		t.Fatalf("checked %d rows, %d too long: the generator no longer exercises the limit", checkedRows, longRows)
	}
}

// rowLengths lists the raw length of each non-blank record, by an unlimited splitter.
func rowLengths(t testing.TB, data []byte, delim rune) []int64 {
	t.Helper()
	d, _ := delimiter(delim)
	sp := newSplitter(bytes.NewReader(data), d, 1<<30, 0)
	var out []int64
	var rec record
	for {
		ok, err := sp.next(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		if len(rec.body()) > 0 {
			out = append(out, rec.length)
		}
	}
}

// FuzzScan checks the same invariants as the property tests on any input:
// go test -run '^$' -fuzz FuzzScan ./internal/csvplan
func FuzzScan(f *testing.F) {
	seeds := []string{
		"id,text\n1,hello\n2,world\n",
		"id,text\r\n1,\"a,b\"\r\n2,\"multi\nline\"\r\n",
		"\xEF\xBB\xBFid,text\n1,\"say \"\"hi\"\"\"\n",
		"id,text\n\n1,a\n\r\n2,b",
		"id,text\n1,\"unterminated\n2,b\n",
		"id,text\n1,\"ab\"cd\n2,b\n",
		"id,text\n1,a\"b\n2,\"\"\n",
		"id\n\"\"\n\n\"\r\n\"\n",
		"a,b\n1,2,3\n4\n",
		"a\r",
		"\"a\"\r",
		"x,y\n1,\"a\r\nb\"\r",
		"",
		"\n\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint8(i%5), uint8(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, rpc uint8, knobs uint8) {
		delim := delims[int(knobs)%len(delims)]
		v := variants[int(knobs>>2)%len(variants)]
		check(t, data, delim, int64(rpc%8)+1, v)
	})
}

// Guard against a checker that can never fail: a reader that drops a row must be caught.
func TestCheckDetectsLostRow(t *testing.T) {
	data := []byte("id,text\n1,a\n2,b\n3,c\n")
	res, err := Scan(bytes.NewReader(data), Options{RowsPerChunk: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Reading chunk 0 with a range one row short must fail the row count.
	rd, _ := NewReader(bytes.NewReader(data[res.Offsets[0]:res.Offsets[1]-4]), res.Header, ReaderOptions{ExpectRows: 2})
	for rd.Next() {
	}
	var rce *RowCountError
	if !errors.As(rd.Err(), &rce) || rce.Got != 1 || rce.Want != 2 {
		t.Fatalf("err = %v, want a RowCountError 1 vs 2", rd.Err())
	}
	_ = fmt.Sprint(rce)
}
