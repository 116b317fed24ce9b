package duplicates

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// The first occurrence wins, whatever the order of hashes; every later one names it.
func TestFinderKeepsTheFirstOccurrence(t *testing.T) {
	f := NewFinder()
	keys := []struct{ ns, id string }{
		{"v2", "12"}, {"v2", "13"}, {"v2", "12"}, {"other", "12"}, {"v2", "13"}, {"v2", "12"}, {"", "12"}, {"other", "12"},
	}
	for i, k := range keys {
		f.Add(int64(i), k.ns, k.id)
	}
	got := f.Duplicates()
	want := []Row{{2, 0}, {4, 1}, {5, 0}, {7, 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("duplicates %v, want %v", got, want)
	}
	// The namespace separator keeps ("a", "bc") apart from ("ab", "c").
	f = NewFinder()
	f.Add(0, "a", "bc")
	f.Add(1, "ab", "c")
	if d := f.Duplicates(); len(d) != 0 {
		t.Fatalf("false duplicates %v", d)
	}
}

// Against a map: random keys with many repeats, checked row by row.
func TestFinderMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	f := NewFinder()
	firstOf := map[string]int64{}
	want := map[int64]int64{}
	for row := int64(0); row < 20000; row++ {
		id := fmt.Sprint(rng.IntN(5000))
		f.Add(row, "ns", id)
		if first, ok := firstOf[id]; ok {
			want[row] = first
		} else {
			firstOf[id] = row
		}
	}
	got := f.Duplicates()
	if len(got) != len(want) {
		t.Fatalf("%d duplicates, want %d", len(got), len(want))
	}
	for i, d := range got {
		if i > 0 && d.Row <= got[i-1].Row {
			t.Fatalf("not in row order at %d", i)
		}
		if want[d.Row] != d.First {
			t.Fatalf("row %d: first %d, want %d", d.Row, d.First, want[d.Row])
		}
	}
}

func TestEncodeAndReadEachChunk(t *testing.T) {
	dups := []Row{{2, 0}, {5, 1}, {7, 3}, {30, 8}, {31, 8}}
	const rpc, chunks = 10, 4
	obj, err := Encode(dups, rpc, chunks)
	if err != nil {
		t.Fatal(err)
	}
	var reads [][2]int64
	read := func(_ context.Context, off, n int64) (io.ReadCloser, error) {
		reads = append(reads, [2]int64{off, n})
		if off < 0 || off+n > int64(len(obj)) {
			return nil, fmt.Errorf("range %d+%d beyond %d", off, n, len(obj))
		}
		return io.NopCloser(bytes.NewReader(obj[off : off+n])), nil
	}
	want := []map[int64]int64{{2: 0, 5: 1, 7: 3}, {}, {}, {30: 8, 31: 8}}
	for i := range chunks {
		reads = nil
		got, err := ForChunk(context.Background(), read, i)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Fatalf("chunk %d: %v, want %v", i, got, want[i])
		}
		// Header, index pair, and entries only when there are some: small reads, never the list.
		if len(reads) > 3 || (len(want[i]) == 0 && len(reads) != 2) {
			t.Fatalf("chunk %d reads %v", i, reads)
		}
		for _, r := range reads[:2] {
			if r[1] > 24 {
				t.Fatalf("chunk %d read %d bytes for the header or index", i, r[1])
			}
		}
	}
	if _, err := ForChunk(context.Background(), read, chunks); err == nil {
		t.Fatal("chunk beyond the plan read without error")
	}
	bad := append([]byte("NOTDUPS!"), obj[8:]...)
	if _, err := ForChunk(context.Background(), func(_ context.Context, off, n int64) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(bad[off : off+n])), nil
	}, 0); err == nil {
		t.Fatal("wrong magic accepted")
	}
	if _, err := Encode([]Row{{45, 1}}, rpc, chunks); err == nil {
		t.Fatal("a row beyond the chunks encoded")
	}
	if _, err := Encode([]Row{{5, 1}, {3, 1}}, rpc, chunks); err == nil {
		t.Fatal("rows out of order encoded")
	}
}
