package duplicates

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
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

// oldDuplicates is the Finder before it held blocks (one slice of 16-byte entries sorted whole),
// kept here to show the blocked Finder gives the same list.
func oldDuplicates(seed maphash.Seed, rows []int64, keys [][2]string) []Row {
	type old struct {
		h   uint64
		row int64
	}
	var e []old // grown by append, as the old Finder grew it
	for i, row := range rows {
		var h maphash.Hash
		h.SetSeed(seed)
		h.WriteString(keys[i][0])
		h.WriteByte(0)
		h.WriteString(keys[i][1])
		e = append(e, old{h.Sum64(), row})
	}
	slices.SortFunc(e, func(a, b old) int {
		if a.h != b.h {
			if a.h < b.h {
				return -1
			}
			return 1
		}
		return int(a.row - b.row)
	})
	var out []Row
	first := int64(0)
	for i := range e {
		if i == 0 || e[i].h != e[i-1].h {
			first = e[i].row
			continue
		}
		out = append(out, Row{Row: e[i].row, First: first})
	}
	slices.SortFunc(out, func(a, b Row) int { return int(a.Row - b.Row) })
	return out
}

// The blocked Finder gives exactly the list the single-slice one gave and a map of the exact keys
// gives, across many blocks (shrunk), with keys repeated inside a block, across blocks and
// far apart, rows skipped (rows without a key) and row gaps wider than 32 bits.
func TestBlockedFinderMatchesTheOldOneAndAMap(t *testing.T) {
	defer func(n int) { blockEntries = n }(blockEntries)
	for _, size := range []int{1, 7, 1 << 10, 1 << 15} {
		blockEntries = size
		rng := rand.New(rand.NewPCG(uint64(size), 3))
		f := NewFinder()
		var rows []int64
		var keys [][2]string
		firstOf := map[[2]string]int64{}
		var want []Row
		row := int64(0)
		for range 60000 {
			switch r := rng.IntN(100); {
			case r < 5:
				row += 1 + int64(rng.IntN(50)) // rows without a key
			case r == 5:
				row += math.MaxUint32 + int64(rng.IntN(3)) // beyond a block's 32-bit offsets
			default:
				row++
			}
			k := [2]string{fmt.Sprint("ns", rng.IntN(3)), fmt.Sprint(rng.IntN(40000))}
			f.Add(row, k[0], k[1])
			rows, keys = append(rows, row), append(keys, k)
			if first, ok := firstOf[k]; ok {
				want = append(want, Row{Row: row, First: first})
			} else {
				firstOf[k] = row
			}
		}
		if f.Rows() != len(rows) {
			t.Fatalf("block %d: Rows %d, want %d", size, f.Rows(), len(rows))
		}
		seed := f.seed
		got := f.Duplicates()
		if len(want) < 10000 {
			t.Fatalf("the generator made only %d duplicates", len(want))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("block %d: %d duplicates, want %d (first difference at %d)", size, len(got), len(want), firstDiff(got, want))
		}
		if old := oldDuplicates(seed, rows, keys); !slices.Equal(got, old) {
			t.Fatalf("block %d: differs from the single-slice Finder at %d", size, firstDiff(got, old))
		}
		if f.Rows() != 0 || f.Duplicates() != nil {
			t.Fatalf("block %d: the Finder keeps its rows after Duplicates", size)
		}
	}
}

func firstDiff(a, b []Row) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Memory is 12 bytes a row in fixed blocks: no growth copies, so the allocated bytes are the
// blocks themselves.
func TestFinderMemoryPerRow(t *testing.T) {
	const rows = 1 << 18
	f := NewFinder()
	ids := make([]string, rows)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	allocs := testing.AllocsPerRun(1, func() {
		f = NewFinder()
		for i, id := range ids {
			f.Add(int64(i), "ns", id)
		}
	})
	// One per block, the Finder, and the block list's own growth.
	blocks := rows / blockEntries
	if want := float64(blocks + bits.Len(uint(blocks)) + 2); allocs > want {
		t.Fatalf("%v allocations for %d rows, want at most %v (one per block of %d)", allocs, rows, want, blockEntries)
	}
	if s := unsafe.Sizeof(entry{}); s != 12 {
		t.Fatalf("an entry takes %d bytes, want 12", s)
	}
}

// 1,000,000 rows with 1 % repeated keys, through the Finder and through the single-slice one it
// replaced (go test -bench Finder -benchmem ./internal/duplicates): time and bytes allocated.
func benchKeys() ([]int64, [][2]string) {
	const n = 1_000_000
	rows := make([]int64, n)
	keys := make([][2]string, n)
	for i := range n {
		id := i
		if i%100 == 99 {
			id = i / 2
		}
		rows[i], keys[i] = int64(i), [2]string{"ns", fmt.Sprint(id)}
	}
	return rows, keys
}

func BenchmarkFinder1M(b *testing.B) {
	rows, keys := benchKeys()
	b.ResetTimer()
	for range b.N {
		f := NewFinder()
		for i, row := range rows {
			f.Add(row, keys[i][0], keys[i][1])
		}
		if len(f.Duplicates()) == 0 {
			b.Fatal("no duplicates")
		}
	}
}

func BenchmarkSingleSliceFinder1M(b *testing.B) {
	rows, keys := benchKeys()
	seed := maphash.MakeSeed()
	b.ResetTimer()
	for range b.N {
		if len(oldDuplicates(seed, rows, keys)) == 0 {
			b.Fatal("no duplicates")
		}
	}
}
