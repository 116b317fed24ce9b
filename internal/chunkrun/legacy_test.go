package chunkrun_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// The legacy export format the old system consumed: id, formatted_text (prepared in SQL, with
// HTML and dates), record_type, and other columns that become metadata.
var legacyHeader = []string{"id", "formatted_text", "record_type", "title", "price", "city", "created_at", "is_active"}

// legacyRow is one generated row with what the legacy sanitizer must make of its text. The
// expectations are built from the pieces the text was assembled from, not by running the
// sanitizer.
type legacyRow struct {
	fields   []string
	wantText string
}

func (r legacyRow) id() string         { return r.fields[0] }
func (r legacyRow) recordType() string { return r.fields[2] }

// handRows are checked against what the old service's sanitize_text returned for each text
// (printed by Python 3.11 from the old source; internal/mapping checks 24,000 more).
func handRows() []legacyRow {
	return []legacyRow{
		{[]string{"1001", "<p>Lot #12: <b>Vintage</b> clock &amp; stand</p> Closes 2025-01-10T22:45:23Z", "lot",
			"Vintage clock", "120.50", "Boise", "2025-01-10T22:45:23Z", "true"},
			"Lot 12: Vintage clock  stand Closes January 10th, 2025 10:45:23 PM"},
		{[]string{"1002", "Pickup on 01/03/2025 at <i>Main St.</i><br/>Bring ID!", "auction",
			"Pickup, Main St.", "0.00", "Salt Lake City", "2025-01-02", "false"},
			"Pickup on January 3rd, 2025 12:00:00 AM at Main St.Bring ID!"},
		{[]string{"1003", "Line one,\nline two &quot;quoted&quot; 12-25-2024", "item",
			`A "quoted" title`, "15", "Reno", "2024-12-20", "true"},
			"Line one, line two quoted December 25th, 2024 12:00:00 AM"},
		{[]string{"1004", "Price: $1,200.50 (approx.) — 50% off 😀 [today] {x}", "",
			"No type", "1200.50", "Ogden", "2025-01-05", "true"},
			"Price: $1,200.50 (approx.)  50 off  [today] {x}"},
		{[]string{"1005", "Café naïve résumé 2025-03-02", "lot",
			"Résumé", "7.25", "Provo", "2025-03-01", "false"},
			"Café naïve résumé March 2nd, 2025 12:00:00 AM"},
		{[]string{"1006", "<div>Starts 2025-01-01 09:05:07</div>", "auction",
			"Early start", "3.10", "Logan", "2024-12-31", "true"},
			"Starts January 1st, 2025 09:05:07 AM"},
	}
}

var (
	words  = []string{"vintage", "clock", "oak", "table", "lamp", "Café", "naïve", "estate", "sale", "mirror", "Über", "chair", "rug", "set", "of", "4"}
	cities = []string{"Boise", "Reno", "Ogden", "Provo", "Salt Lake City", "Logan"}
	types  = []string{"lot", "lot", "auction", "item", ""}
	months = []string{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"}
)

func ordinal(d int) string {
	switch {
	case d%100 >= 11 && d%100 <= 13:
		return strconv.Itoa(d) + "th"
	case d%10 == 1:
		return strconv.Itoa(d) + "st"
	case d%10 == 2:
		return strconv.Itoa(d) + "nd"
	case d%10 == 3:
		return strconv.Itoa(d) + "rd"
	}
	return strconv.Itoa(d) + "th"
}

// piece is a bit of raw text and what the legacy sanitizer turns it into.
type piece struct{ raw, want string }

func genPiece(r *rand.Rand) piece {
	w := func() string { return words[r.IntN(len(words))] }
	y, m, d := 2020+r.IntN(7), 1+r.IntN(12), 1+r.IntN(28)
	spoken := fmt.Sprintf("%s %s, %d", months[m-1], ordinal(d), y)
	midnight := spoken + " 12:00:00 AM" // the old code gave a date without a time midnight
	switch r.IntN(14) {
	case 0, 1, 2, 3:
		x := w()
		return piece{x, x}
	case 4:
		x := w()
		return piece{"<b>" + x + "</b>", x}
	case 5:
		a, b := w(), w()
		return piece{"<p>" + a + "</p><p>" + b + "</p>", a + b}
	case 6:
		return piece{fmt.Sprintf("%04d-%02d-%02d", y, m, d), midnight}
	case 7:
		return piece{fmt.Sprintf("%02d/%02d/%04d", m, d, y), midnight}
	case 8:
		return piece{fmt.Sprintf("%02d-%02d-%04d", m, d, y), midnight}
	case 9:
		h, mi, s := r.IntN(24), r.IntN(60), r.IntN(60)
		h12, ampm := h%12, "AM"
		if h12 == 0 {
			h12 = 12
		}
		if h >= 12 {
			ampm = "PM"
		}
		return piece{fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d, h, mi, s),
			fmt.Sprintf("%s %02d:%02d:%02d %s", spoken, h12, mi, s, ampm)}
	case 10:
		x := w()
		switch r.IntN(4) {
		case 0:
			return piece{"&amp;", ""}
		case 1:
			return piece{"Tom&#39;s", "Toms"}
		case 2:
			return piece{"&quot;" + x + "&quot;", x}
		}
		return piece{"&lt;b&gt;", "b"}
	case 11:
		p := fmt.Sprintf("$%d.%02d", r.IntN(5000), r.IntN(100))
		return piece{p, p}
	case 12:
		n := strconv.Itoa(5 + r.IntN(90))
		return piece{n + "%", n}
	}
	return [2]piece{{"😀", ""}, {"—", ""}}[r.IntN(2)]
}

var separators = []string{" ", " ", " ", "\n", "  \t"}

// genLegacy returns the hand rows followed by generated ones, n in all, from a fixed seed.
func genLegacy(n int, seed uint64) []legacyRow {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rows := handRows()
	for i := len(rows); i < n; i++ {
		first := words[r.IntN(len(words))]
		raw, want := []string{first}, []string{first}
		for range r.IntN(12) {
			p := genPiece(r)
			raw = append(raw, separators[r.IntN(len(separators))], p.raw)
			want = append(want, " ", p.want)
		}
		title := words[r.IntN(len(words))] + ", " + words[r.IntN(len(words))]
		rows = append(rows, legacyRow{
			fields: []string{
				strconv.Itoa(1001 + i),
				strings.Join(raw, ""),
				types[r.IntN(len(types))],
				title,
				fmt.Sprintf("%d.%02d", r.IntN(10000), r.IntN(100)),
				cities[r.IntN(len(cities))],
				fmt.Sprintf("2025-%02d-%02d", 1+r.IntN(12), 1+r.IntN(28)),
				strconv.FormatBool(r.IntN(2) == 0),
			},
			// The old code collapsed white space before its character filter, not after: each
			// separator is one space, and a piece the filter removes leaves its spaces.
			wantText: strings.Join(want, ""),
		})
	}
	return rows
}

func legacyCSV(rows []legacyRow) [][]string {
	out := [][]string{legacyHeader}
	for _, r := range rows {
		out = append(out, r.fields)
	}
	return out
}
