package csvgen

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
)

// Changes are what Mutate did to a file, by row id.
type Changes struct {
	Changed, Removed []string
	// Kept is the number of data rows in the new file.
	Kept int
}

// Mutate rewrites a generated file for incremental-sync tests: of every changePerMille rows per
// thousand it changes formatted_text (appending a revision note), of every removePerMille rows it
// drops the row, and it keeps only the first keepPercent percent of the rows (100: all; less is a
// truncated export). Rows are chosen evenly through the file, deterministically.
func Mutate(data []byte, changePerMille, removePerMille, keepPercent int) ([]byte, Changes, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, Changes{}, fmt.Errorf("read header: %w", err)
	}
	var rows [][]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, Changes{}, fmt.Errorf("read row %d: %w", len(rows), err)
		}
		rows = append(rows, rec)
	}
	text := -1
	for i, h := range header {
		if h == "formatted_text" {
			text = i
		}
	}
	if text < 0 {
		return nil, Changes{}, fmt.Errorf("no formatted_text column")
	}
	var ch Changes
	var out bytes.Buffer
	w := csv.NewWriter(&out)
	if err := w.Write(header); err != nil {
		return nil, ch, err
	}
	limit := len(rows) * keepPercent / 100
	// Bresenham-style selection: row i is chosen when the running share crosses a whole row.
	picked := func(i, perMille int) bool { return perMille > 0 && (i+1)*perMille/1000 != i*perMille/1000 }
	for i, rec := range rows[:limit] {
		switch {
		case picked(i, removePerMille):
			ch.Removed = append(ch.Removed, rec[0])
			continue
		case picked(i+50, changePerMille):
			rec = append([]string(nil), rec...)
			rec[text] += " Updated listing, revision 2."
			ch.Changed = append(ch.Changed, rec[0])
		}
		if err := w.Write(rec); err != nil {
			return nil, ch, err
		}
		ch.Kept++
	}
	w.Flush()
	return out.Bytes(), ch, w.Error()
}
