package mapping

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// benchRows builds n rows shaped like the legacy exports: id, formatted_text of 200–1,500
// characters with HTML, entities and dates, record_type and five other columns.
func benchRows(n int) [][]string {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("auction lot vintage oak table estate sale bidding closes reserve " +
		"condition excellent shipping available pickup only café naïve collector item signed")
	rows := make([][]string, n)
	for i := range rows {
		var b strings.Builder
		target := 200 + rng.IntN(1301)
		for b.Len() < target {
			switch rng.IntN(12) {
			case 0:
				fmt.Fprintf(&b, "<p>Starts %04d-%02d-%02dT%02d:%02d:%02dZ</p>\n", 2024+rng.IntN(2), 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60))
			case 1:
				fmt.Fprintf(&b, " ends %02d/%02d/%04d.", 1+rng.IntN(12), 1+rng.IntN(28), 2025)
			case 2:
				b.WriteString(" <b>Lot</b> &amp; <i>more</i>&nbsp;")
			case 3:
				b.WriteString(" $1,250.00 (firm) 👍 ")
			default:
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
		}
		rows[i] = []string{
			fmt.Sprint(100000 + i),
			b.String(),
			[]string{"product", "auction", "lot"}[rng.IntN(3)],
			fmt.Sprintf("%d.%02d", rng.IntN(5000), rng.IntN(100)),
			[]string{"true", "false"}[rng.IntN(2)],
			fmt.Sprintf("%05d", rng.IntN(99999)),
			"Lot " + fmt.Sprint(rng.IntN(1000)),
			[]string{"", "fragile", "local pickup"}[rng.IntN(3)],
		}
	}
	return rows
}

func BenchmarkMap(b *testing.B) {
	rows := benchRows(1024)
	var chars int
	for _, r := range rows {
		chars += len(r[1])
	}
	cases := []struct {
		name string
		spec func(*v1alpha1.MappingSpec)
	}{
		{"basic", func(s *v1alpha1.MappingSpec) {}},
		{"legacy", func(s *v1alpha1.MappingSpec) { s.Sanitize = SanitizeLegacy }},
		{"legacy+inferTypes+namespace", func(s *v1alpha1.MappingSpec) {
			s.Sanitize, s.Metadata.InferTypes, s.NamespaceColumn = SanitizeLegacy, true, "record_type"
		}},
		{"template", func(s *v1alpha1.MappingSpec) {
			s.TextColumn, s.TextTemplate = "", "{{.title}}: {{.formatted_text}}"
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			spec := legacySpec()
			tc.spec(&spec)
			m, err := New(spec, testHeader, testFixed)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0, ok := processCPU()
			i := 0
			for b.Loop() {
				if _, rerr := m.Map(int64(i), rows[i%len(rows)]); rerr != nil {
					b.Fatal(rerr)
				}
				i++
			}
			if cpu1, ok1 := processCPU(); ok && ok1 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(i), "cpu-ns/row")
			}
			b.ReportMetric(float64(chars/len(rows)), "text-bytes/row")
		})
	}
}

// BenchmarkMetadataStruct is the upserter's share: building the protobuf Struct of a record.
func BenchmarkMetadataStruct(b *testing.B) {
	rows := benchRows(256)
	m, err := New(legacySpec(), testHeader, testFixed)
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]Record, len(rows))
	for i, r := range rows {
		var rerr *RowError
		if recs[i], rerr = m.Map(int64(i), r); rerr != nil {
			b.Fatal(rerr)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := recs[i%len(recs)].MetadataStruct(); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
