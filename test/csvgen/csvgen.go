// Package csvgen writes realistic CSV files in the legacy format (id, formatted_text with HTML and
// dates, record_type and more columns) for the end-to-end suite, the demo and the benchmarks, with
// optional malformed rows whose row numbers and reasons are known in advance.
package csvgen

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"math/rand"
	"strconv"
	"strings"
)

// Header is the legacy export's columns.
var Header = []string{"id", "formatted_text", "record_type", "title", "category", "price", "created_at", "is_active"}

// RecordTypes route rows to namespaces when namespaceColumn is record_type.
var RecordTypes = []string{"auction", "item", "bid"}

// Options shape a file.
type Options struct {
	Rows int
	Seed int64
	// MalformedEvery puts one malformed row every N rows (0: none), cycling through the kinds
	// wrong_field_count, missing_id, empty_text, metadata_too_large.
	MalformedEvery int
	// UnbalancedQuoteAtEnd ends the file with a row whose quote never closes.
	UnbalancedQuoteAtEnd bool
	// MinText and MaxText bound formatted_text's length (default 200–1,500).
	MinText, MaxText int
	// IDOffset is added to every id (ids are IDOffset+row+1).
	IDOffset int
}

// Bad is a malformed row the file holds on purpose.
type Bad struct {
	Row    int64 // 0-based data row number
	Reason string
}

// Stats describe what was written.
type Stats struct {
	Rows  int64 // data rows written, malformed included
	Bytes int64
	Good  int64
	Bad   []Bad
	// IDs of the good rows, in order.
	GoodIDs []string
	// RecordType of each good row, by id.
	RecordType map[string]string
}

var words = strings.Fields(`auction lot vintage rare collectible signed original limited edition
mint condition estate jewelry watch painting sculpture furniture antique modern classic bid reserve
buyer seller premium shipping included appraisal certificate authentic provenance gallery museum
quality handmade artisan gold silver bronze ceramic glass leather wood oak walnut marble`)

// Write writes a file to w and says what it holds.
func Write(w io.Writer, o Options) (Stats, error) {
	if o.MinText <= 0 {
		o.MinText = 200
	}
	if o.MaxText < o.MinText {
		o.MaxText = 1500
	}
	r := rand.New(rand.NewSource(o.Seed))
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 1<<20)
	c := csv.NewWriter(bw)
	st := Stats{RecordType: map[string]string{}}
	if err := c.Write(Header); err != nil {
		return st, err
	}
	kinds := []string{"wrong_field_count", "missing_id", "empty_text", "metadata_too_large"}
	for i := 0; i < o.Rows; i++ {
		id := strconv.Itoa(o.IDOffset + i + 1)
		rt := RecordTypes[r.Intn(len(RecordTypes))]
		row := []string{id, text(r, o.MinText, o.MaxText), rt, title(r), words[r.Intn(len(words))],
			fmt.Sprintf("%d.%02d", r.Intn(5000), r.Intn(100)), fmt.Sprintf("2025-%02d-%02dT%02d:%02d:%02d", 1+r.Intn(12), 1+r.Intn(28), r.Intn(24), r.Intn(60), r.Intn(60)),
			strconv.FormatBool(r.Intn(2) == 0)}
		bad := ""
		if o.MalformedEvery > 0 && i%o.MalformedEvery == o.MalformedEvery/2 {
			bad = kinds[(i/o.MalformedEvery)%len(kinds)]
			switch bad {
			case "wrong_field_count":
				row = row[:len(row)-2]
			case "missing_id":
				row[0] = ""
			case "empty_text":
				row[1] = "<p> </p> <br/>"
			case "metadata_too_large":
				row[3] = strings.Repeat("x", 45*1024)
			}
			st.Bad = append(st.Bad, Bad{Row: int64(i), Reason: bad})
		} else {
			st.Good++
			st.GoodIDs = append(st.GoodIDs, id)
			st.RecordType[id] = rt
		}
		if err := c.Write(row); err != nil {
			return st, err
		}
		st.Rows++
	}
	c.Flush()
	if err := c.Error(); err != nil {
		return st, err
	}
	if o.UnbalancedQuoteAtEnd {
		fmt.Fprintf(bw, "%d,\"never closed, text,item,t,c,1.00,2025-01-01,true\n", o.IDOffset+o.Rows+1)
		st.Bad = append(st.Bad, Bad{Row: int64(o.Rows), Reason: "unbalanced_quote"})
		st.Rows++
	}
	if err := bw.Flush(); err != nil {
		return st, err
	}
	st.Bytes = cw.n
	return st, nil
}

func title(r *rand.Rand) string {
	n := 2 + r.Intn(4)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = words[r.Intn(len(words))]
	}
	return strings.Join(parts, " ")
}

// text is formatted_text as the old SQL prepared it: HTML, entities and dates in several forms.
func text(r *rand.Rand, minLen, maxLen int) string {
	target := minLen + r.Intn(maxLen-minLen+1)
	var b strings.Builder
	for b.Len() < target {
		switch r.Intn(10) {
		case 0:
			fmt.Fprintf(&b, "<p>Closing on %04d-%02d-%02d.</p> ", 2024+r.Intn(2), 1+r.Intn(12), 1+r.Intn(28))
		case 1:
			fmt.Fprintf(&b, "Listed %02d/%02d/%04d &amp; updated %04d-%02d-%02dT%02d:%02d:%02d. ", 1+r.Intn(12), 1+r.Intn(28), 2024+r.Intn(2),
				2025, 1+r.Intn(12), 1+r.Intn(28), r.Intn(24), r.Intn(60), r.Intn(60))
		case 2:
			b.WriteString("<b>" + title(r) + "</b> ")
		case 3:
			b.WriteString("<ul><li>" + title(r) + "</li><li>" + title(r) + "</li></ul> ")
		default:
			b.WriteString(words[r.Intn(len(words))])
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String())
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
