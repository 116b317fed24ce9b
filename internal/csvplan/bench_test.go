package csvplan

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// benchData builds ≈ size bytes of rows shaped like the exports this reads: an id, a prepared
// text (quoted when it holds commas, quotes or newlines), a record type and a few metadata columns.
func benchData(size int, quoteText bool) []byte {
	rng := rand.New(rand.NewPCG(1, 1))
	words := strings.Fields("premium wireless headphones with active noise cancellation battery life " +
		"ships from Ohio leather wallet refurbished warranty discount seller rating returns accepted " +
		"café Zürich 東京 bundle edition limited stock")
	types := []string{"product", "listing", "review", "seller"}
	var b bytes.Buffer
	b.Grow(size + 4096)
	b.WriteString("id,formatted_text,record_type,price,created_at,category\n")
	var text strings.Builder
	for id := 1; b.Len() < size; id++ {
		text.Reset()
		n := 40 + rng.IntN(120)
		for i := 0; i < n; i++ {
			if i > 0 {
				text.WriteByte(' ')
			}
			text.WriteString(words[rng.IntN(len(words))])
			if quoteText {
				switch rng.IntN(25) {
				case 0:
					text.WriteByte(',')
				case 1:
					text.WriteString(`""7-inch""`)
				case 2:
					text.WriteString(".\n")
				}
			}
		}
		t := text.String()
		if quoteText {
			t = `"` + t + `"`
		}
		fmt.Fprintf(&b, "%d,%s,%s,%d.%02d,2025-01-%02dT10:45:23Z,cat-%d\n",
			id, t, types[id%len(types)], rng.IntN(500), rng.IntN(100), 1+id%28, rng.IntN(40))
	}
	return b.Bytes()
}

var (
	benchQuoted = sync.OnceValue(func() []byte { return benchData(50<<20, true) })
	benchPlain  = sync.OnceValue(func() []byte { return benchData(50<<20, false) })
)

func BenchmarkScan(b *testing.B) {
	for _, c := range []struct {
		name  string
		data  func() []byte
		onRow bool
	}{
		{"plain", benchPlain, false},
		{"quoted", benchQuoted, false},
		{"plain+OnRow", benchPlain, true},
		{"quoted+OnRow", benchQuoted, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			data := c.data()
			opts := Options{RowsPerChunk: 1000, Required: []string{"id", "formatted_text"}}
			var textBytes int
			if c.onRow {
				opts.OnRow = func(_ int64, f [][]byte) error { textBytes += len(f[1]); return nil }
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				res, err := Scan(bytes.NewReader(data), opts)
				if err != nil || res.MalformedRows != 0 {
					b.Fatalf("scan: %v, %d malformed", err, res.MalformedRows)
				}
			}
		})
	}
}

func BenchmarkReader(b *testing.B) {
	data := benchQuoted()
	res, err := Scan(bytes.NewReader(data), Options{RowsPerChunk: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(res.Bytes - res.DataOffset)
	b.ReportAllocs()
	for b.Loop() {
		rd, err := NewReader(bytes.NewReader(data[res.DataOffset:]), res.Header, ReaderOptions{ExpectRows: res.TotalRows})
		if err != nil {
			b.Fatal(err)
		}
		for rd.Next() {
			if rd.Row().Err != nil {
				b.Fatal(rd.Row().Err)
			}
		}
		if rd.Err() != nil {
			b.Fatal(rd.Err())
		}
	}
}
