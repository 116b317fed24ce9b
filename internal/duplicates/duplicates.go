// Package duplicates finds the rows of a file whose vector (namespace and id) an earlier row
// already has, and stores the list so that each chunk can read only its own part of it.
//
// The planner reads every row once and calls Finder.Add with a 64-bit hash of the row's key; at the
// end the (hash, row) pairs are sorted and, of each run of equal hashes, every row but the first
// is a duplicate. The first occurrence in the file always wins, so the outcome does not depend on
// which chunk runs first. Memory is 12 bytes a row with a key (1M rows: 11.4 MiB; 10M rows:
// 114 MiB), held in fixed-size blocks that are sorted in place and merged: one growing slice
// copied itself on every growth, so the plan pod briefly held the old and the new array (and the
// runtime kept the freed ones resident), which put a 1M-row plan over 64 MiB. Hashes are 64-bit
// (hash/maphash): two different keys collide with
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
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"slices"
)

// Magic starts every list object.
const Magic = "VDBDUPS1"

const headerBytes = 8 + 8 + 8

// Row is one duplicate: Row repeats the key of First (First < Row).
type Row struct {
	Row, First int64
}

// entry is one row's key hash and the row's offset from its block's base row: 12 bytes (a
// uint64 hash beside it would pad the entry to 16).
type entry struct {
	hi, lo uint32
	off    uint32
}

func (e entry) hash() uint64 { return uint64(e.hi)<<32 | uint64(e.lo) }

// block holds up to blockEntries entries of consecutive added rows; base is the first one's row,
// so a row offset fits in 32 bits whatever the file's size.
type block struct {
	base int64
	e    []entry
}

// blockEntries is the capacity of a block (384 KiB). A variable so tests can cross many blocks
// with few rows.
var blockEntries = 1 << 15

// Finder collects row keys. Not safe for concurrent use.
type Finder struct {
	seed   maphash.Seed
	blocks []block
	rows   int
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
	sum := h.Sum64()
	n := len(f.blocks)
	if n == 0 || len(f.blocks[n-1].e) == cap(f.blocks[n-1].e) || row-f.blocks[n-1].base > math.MaxUint32 {
		f.blocks = append(f.blocks, block{base: row, e: make([]entry, 0, blockEntries)})
		n++
	}
	b := &f.blocks[n-1]
	b.e = append(b.e, entry{hi: uint32(sum >> 32), lo: uint32(sum), off: uint32(row - b.base)})
	f.rows++
}

// Rows is how many rows were added.
func (f *Finder) Rows() int { return f.rows }

// Duplicates returns the duplicate rows in row order and frees the Finder's memory.
func (f *Finder) Duplicates() []Row {
	blocks := f.blocks
	f.blocks, f.rows = nil, 0
	// Each block sorted by (hash, row), then merged: blocks hold increasing rows, so among equal
	// hashes the lower block comes first and the merge meets every key's first row first.
	for _, b := range blocks {
		slices.SortFunc(b.e, func(x, y entry) int {
			if c := cmp.Compare(x.hash(), y.hash()); c != 0 {
				return c
			}
			return cmp.Compare(x.off, y.off)
		})
	}
	m := make(merger, 0, len(blocks))
	for i := range blocks {
		if len(blocks[i].e) > 0 {
			m = append(m, cursor{b: &blocks[i], idx: i})
		}
	}
	heap.Init(&m)
	var out []Row
	var prev uint64
	first, started := int64(0), false
	for len(m) > 0 {
		c := &m[0]
		e := c.b.e[c.pos]
		h, row := e.hash(), c.b.base+int64(e.off)
		if !started || h != prev {
			prev, first, started = h, row, true
		} else {
			out = append(out, Row{Row: row, First: first})
		}
		if c.pos++; c.pos == len(c.b.e) {
			c.b.e = nil // done with this block: let the collector have it
			heap.Pop(&m)
		} else {
			heap.Fix(&m, 0)
		}
	}
	slices.SortFunc(out, func(a, b Row) int { return cmp.Compare(a.Row, b.Row) })
	return out
}

// cursor is the merge's position in one sorted block; idx is the block's place in file order.
type cursor struct {
	b   *block
	idx int
	pos int
}

// merger is a min-heap of cursors by (hash, block), for container/heap.
type merger []cursor

func (m merger) Len() int { return len(m) }
func (m merger) Less(i, j int) bool {
	hi, hj := m[i].b.e[m[i].pos].hash(), m[j].b.e[m[j].pos].hash()
	if hi != hj {
		return hi < hj
	}
	return m[i].idx < m[j].idx
}
func (m merger) Swap(i, j int) { m[i], m[j] = m[j], m[i] }
func (m *merger) Push(x any)   { *m = append(*m, x.(cursor)) }
func (m *merger) Pop() any {
	old := *m
	c := old[len(old)-1]
	*m = old[:len(old)-1]
	return c
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
