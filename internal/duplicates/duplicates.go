// Package duplicates finds the rows of a file whose vector (namespace and id) an earlier row
// already has, and stores the list so that each chunk can read only its own part of it.
//
// The planner reads every row once and calls Finder.Add with a 64-bit hash of the row's key; at the
// end the (hash, row) pairs are sorted and, of each run of equal hashes, every row but the first
// is a duplicate. The first occurrence in the file always wins, so the outcome does not depend on
// which chunk runs first. Memory is 16 bytes a row with a key (1M rows: 16 MiB; 10M rows:
// 160 MiB), sorted in place. Hashes are 64-bit (hash/maphash): two different keys collide with
// probability about n²/2⁶⁵ (3·10⁻⁸ for a million rows); a collision dead-letters a row as
// duplicate_id naming the row it collided with, so even that is visible, never silent.
//
// The list is one object (see Encode), pinned by its ETag in the plan:
//
//	"VDBDUPS1" | rowsPerChunk uint64 | chunks uint64 | index: (chunks+1) × uint64 | entries: n × (row uint64, first uint64)
//
// all little-endian. index[i] is the number of entries before chunk i's first, so chunk i reads
// index[i] and index[i+1] (one 16-byte ranged GET) and then its own entries (one more), whatever
// the file's size.
package duplicates

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
)

// Magic starts every list object.
const Magic = "VDBDUPS1"

const headerBytes = 8 + 8 + 8

// Row is one duplicate: Row repeats the key of First (First < Row).
type Row struct {
	Row, First int64
}

type entry struct {
	h   uint64
	row int64
}

// Finder collects row keys. Not safe for concurrent use.
type Finder struct {
	seed    maphash.Seed
	entries []entry
}

// NewFinder returns an empty Finder.
func NewFinder() *Finder { return &Finder{seed: maphash.MakeSeed()} }

// Add records that row has the vector key (namespace, id). Rows must be added in file order.
func (f *Finder) Add(row int64, namespace, id string) {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(namespace)
	h.WriteByte(0)
	h.WriteString(id)
	f.entries = append(f.entries, entry{h: h.Sum64(), row: row})
}

// Rows is how many rows were added.
func (f *Finder) Rows() int { return len(f.entries) }

// Duplicates returns the duplicate rows in row order and frees the Finder's memory.
func (f *Finder) Duplicates() []Row {
	e := f.entries
	f.entries = nil
	slices.SortFunc(e, func(a, b entry) int {
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

// Encode renders the list object for a plan of chunks chunks of rowsPerChunk rows. dups must be
// in row order (as Duplicates returns them).
func Encode(dups []Row, rowsPerChunk int64, chunks int) ([]byte, error) {
	if rowsPerChunk <= 0 || chunks < 0 {
		return nil, fmt.Errorf("duplicates: rowsPerChunk %d, chunks %d", rowsPerChunk, chunks)
	}
	var b bytes.Buffer
	b.Grow(headerBytes + 8*(chunks+1) + 16*len(dups))
	b.WriteString(Magic)
	put := func(v uint64) { _ = binary.Write(&b, binary.LittleEndian, v) }
	put(uint64(rowsPerChunk))
	put(uint64(chunks))
	j := 0
	for i := 0; i <= chunks; i++ {
		for j < len(dups) && dups[j].Row < int64(i)*rowsPerChunk {
			j++
		}
		put(uint64(j))
	}
	if j != len(dups) {
		return nil, fmt.Errorf("duplicates: row %d is beyond the %d chunks", dups[j].Row, chunks)
	}
	for i, d := range dups {
		if i > 0 && d.Row <= dups[i-1].Row {
			return nil, errors.New("duplicates: rows not in order")
		}
		put(uint64(d.Row))
		put(uint64(d.First))
	}
	return b.Bytes(), nil
}

// RangeReader reads [off, off+n) of the list object (pinned to its ETag).
type RangeReader func(ctx context.Context, off, n int64) (io.ReadCloser, error)

// ForChunk reads chunk i's duplicates as a map from row to the row that keeps the vector.
func ForChunk(ctx context.Context, read RangeReader, chunk int) (map[int64]int64, error) {
	head, err := readAt(ctx, read, 0, headerBytes)
	if err != nil {
		return nil, err
	}
	if string(head[:8]) != Magic {
		return nil, fmt.Errorf("duplicates list: not a %s object", Magic)
	}
	chunks := binary.LittleEndian.Uint64(head[16:])
	if chunk < 0 || uint64(chunk) >= chunks {
		return nil, fmt.Errorf("duplicates list: chunk %d not in [0,%d)", chunk, chunks)
	}
	idx, err := readAt(ctx, read, headerBytes+8*int64(chunk), 16)
	if err != nil {
		return nil, err
	}
	a, b := binary.LittleEndian.Uint64(idx), binary.LittleEndian.Uint64(idx[8:])
	if b < a {
		return nil, fmt.Errorf("duplicates list: index of chunk %d decreases", chunk)
	}
	out := make(map[int64]int64, b-a)
	if b == a {
		return out, nil
	}
	base := headerBytes + 8*int64(chunks+1)
	ents, err := readAt(ctx, read, base+16*int64(a), 16*int64(b-a))
	if err != nil {
		return nil, err
	}
	for k := 0; k < len(ents); k += 16 {
		out[int64(binary.LittleEndian.Uint64(ents[k:]))] = int64(binary.LittleEndian.Uint64(ents[k+8:]))
	}
	return out, nil
}

func readAt(ctx context.Context, read RangeReader, off, n int64) ([]byte, error) {
	rc, err := read(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("duplicates list: read %d bytes at %d: %w", n, off, err)
	}
	return buf, nil
}
