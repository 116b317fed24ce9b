package tokens

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"sync"

	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// The rank table holds cl100k_base's 100,256 mergeable tokens in 2.1 MB: every token's bytes in
// one arena ordered by rank, and an open-addressing hash table of uint32 slots, with no pointers
// for the GC to scan. tiktoken-go's maps and sorted token list keep about 11 MB.
const (
	rankBits  = 17 // ranks + 1 must fit; cl100k has 100,256 ranks
	rankMask  = 1<<rankBits - 1
	slotsLog2 = 18 // 262,144 slots: load factor 0.38 keeps misses (most BPE probes) short
	slotMask  = 1<<slotsLog2 - 1
	noRank    = math.MaxUint32
)

type rankTable struct {
	seed  maphash.Seed
	arena []byte   // token bytes, rank after rank
	offs  []uint32 // token r is arena[offs[r]:offs[r+1]]
	// slots hold tag<<rankBits | (rank+1), 0 when empty. The tag, 15 more bits of the hash,
	// lets a probe skip most wrong slots without comparing bytes.
	slots []uint32
	// maxTok is the longest token in bytes: a text of L bytes has at least ceil(L/maxTok)
	// tokens, the bound that lets CountUpTo stop before tokenizing a huge text.
	maxTok int
	// maxHigh is the most bytes ≥ 0x80 in one token (48): the bound for text without ASCII,
	// such as CJK, whose tokens are far shorter than the longest token.
	maxHigh int
}

func (t *rankTable) token(r uint32) []byte { return t.arena[t.offs[r]:t.offs[r+1]] }

// rank returns the rank of the token b, or noRank.
func (t *rankTable) rank(b string) uint32 {
	h := maphash.String(t.seed, b)
	tag := uint32(h >> (64 - (32 - rankBits)))
	for i := uint32(h) & slotMask; ; i = (i + 1) & slotMask {
		e := t.slots[i]
		if e == 0 {
			return noRank
		}
		if e>>rankBits == tag {
			if r := e&rankMask - 1; string(t.token(r)) == b {
				return r
			}
		}
	}
}

func (t *rankTable) insert(r uint32) error {
	b := t.token(r)
	h := maphash.Bytes(t.seed, b)
	tag := uint32(h >> (64 - (32 - rankBits)))
	for i := uint32(h) & slotMask; ; i = (i + 1) & slotMask {
		e := t.slots[i]
		if e == 0 {
			t.slots[i] = tag<<rankBits | (r + 1)
			return nil
		}
		if e>>rankBits == tag && bytes.Equal(t.token(e&rankMask-1), b) {
			return fmt.Errorf("token %q has two ranks", b)
		}
	}
}

const tableFile = "cl100k_base.tiktoken"

// loadTable reads the .tiktoken file tiktoken-go-loader embeds ("<base64 token> <rank>" a line,
// ranks 0, 1, 2, … in order) straight from its embed.FS, streaming, so that loading never holds
// the decoded file, a map or the loader's 100,000 strings: the embedder's RSS budget is tight.
func loadTable() (*rankTable, error) {
	f, err := assets.Assets.Open(tableFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The first pass sizes the arena exactly; the second fills it.
	var n, size int
	err = scanTable(f, func(tok []byte, rank int) error {
		if rank != n {
			return fmt.Errorf("line %d has rank %d, want ranks in order", n+1, rank)
		}
		m, err := decodedLen(tok)
		if err != nil {
			return fmt.Errorf("rank %d: %w", rank, err)
		}
		n++
		size += m
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n == 0 || n+1 > rankMask || size > math.MaxUint32 || float64(n) > 0.6*(slotMask+1) {
		return nil, fmt.Errorf("%d tokens of %d bytes do not fit the rank table", n, size)
	}
	seeker, ok := f.(io.Seeker)
	if !ok {
		return nil, errors.New("embedded file cannot seek")
	}
	if _, err := seeker.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	t := &rankTable{
		seed:  maphash.MakeSeed(),
		arena: make([]byte, 0, size),
		offs:  make([]uint32, 1, n+1),
		slots: make([]uint32, slotMask+1),
	}
	err = scanTable(f, func(tok []byte, rank int) error {
		var buf [256]byte
		m, err := base64.StdEncoding.Decode(buf[:], tok)
		if err != nil || m == 0 || rank != len(t.offs)-1 || len(t.arena)+m > cap(t.arena) {
			return fmt.Errorf("rank %d: bad token or file changed between passes", rank)
		}
		t.arena = append(t.arena, buf[:m]...)
		t.offs = append(t.offs, uint32(len(t.arena)))
		t.maxTok = max(t.maxTok, m)
		t.maxHigh = max(t.maxHigh, highBytes(string(buf[:m])))
		return t.insert(uint32(rank))
	})
	if err != nil {
		return nil, err
	}
	if len(t.offs) != n+1 {
		return nil, errors.New("embedded file changed between passes")
	}
	return t, nil
}

// decodedLen is the exact decoded length of a padded base64 token of at most 256 bytes.
func decodedLen(b []byte) (int, error) {
	if len(b) == 0 || len(b)%4 != 0 || len(b) > 4*256/3 {
		return 0, fmt.Errorf("bad base64 token %q", b)
	}
	m := len(b) / 4 * 3
	for i := len(b) - 1; i >= len(b)-2 && b[i] == '='; i-- {
		m--
	}
	return m, nil
}

func scanTable(r io.Reader, fn func(tok []byte, rank int) error) error {
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		sp := bytes.IndexByte(b, ' ')
		if sp < 0 {
			return fmt.Errorf("%s line %d: no rank", tableFile, line)
		}
		rank, ok := parseRank(b[sp+1:])
		if !ok {
			return fmt.Errorf("%s line %d: bad rank %q", tableFile, line, b[sp+1:])
		}
		if err := fn(b[:sp], rank); err != nil {
			return fmt.Errorf("%s line %d: %w", tableFile, line, err)
		}
	}
	return sc.Err()
}

// parseRank parses a decimal rank; strconv.Atoi would need a string, an allocation a line.
func parseRank(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// countPiece is the number of tokens byte-pair encoding gives piece, merging the lowest-ranked
// adjacent pair first and the leftmost of equal ones, exactly as tiktoken does.
func (t *rankTable) countPiece(p string) int {
	if len(p) == 1 || t.rank(p) != noRank {
		return 1
	}
	if len(p) <= smallPiece {
		return t.mergeSmall(p)
	}
	return t.mergeLarge(p)
}

// Below smallPiece bytes the quadratic scan over a stack array beats a heap; most pieces are words
// of a few bytes and are whole tokens anyway.
const smallPiece = 48

func (t *rankTable) mergeSmall(p string) int {
	// start[k] is where part k begins, rank[k] the rank of part k joined with part k+1.
	var start [smallPiece + 1]int32
	var rank [smallPiece + 1]uint32
	n := len(p) // parts
	for k := 0; k < n; k++ {
		start[k] = int32(k)
	}
	start[n] = int32(len(p))
	for k := 0; k+1 < n; k++ {
		rank[k] = t.rank(p[k : k+2])
	}
	rank[n-1] = noRank
	for n > 1 {
		best, bestRank := -1, uint32(noRank)
		for k := 0; k+1 < n; k++ {
			if rank[k] < bestRank {
				best, bestRank = k, rank[k]
			}
		}
		if best < 0 {
			break
		}
		// Join parts best and best+1, then re-rank the joined part with its neighbours.
		copy(start[best+1:n], start[best+2:n+1])
		copy(rank[best+1:n-1], rank[best+2:n])
		n--
		rank[best] = noRank
		if best+1 < n {
			rank[best] = t.rank(p[start[best]:start[best+2]])
		}
		if best > 0 {
			rank[best-1] = t.rank(p[start[best-1]:start[best+1]])
		}
	}
	return n
}

// mergeScratch is the working memory of mergeLarge, pooled so that counting long pieces (CJK text
// without spaces, long runs of one character) does not allocate.
type mergeScratch struct {
	next []int32  // next[i]: start of the part after the part starting at i
	prev []int32  // prev[i]: start of the part before it, -1 for the first
	rank []uint32 // rank[i]: rank of the part at i joined with the next, noRank if none or dead
	heap []uint64 // rank<<32 | start, a min-heap: lowest rank first, then leftmost
}

var scratchPool = sync.Pool{New: func() any { return new(mergeScratch) }}

// mergeLarge is mergeSmall in O(n log n): parts form a linked list and candidate pairs wait in a
// heap ordered like mergeSmall's scan (rank, then position); entries whose pair has since changed
// are skipped when popped.
func (t *rankTable) mergeLarge(p string) int {
	s := scratchPool.Get().(*mergeScratch)
	defer putScratch(s)
	return t.merge(p, s)
}

// putScratch keeps scratch for pieces up to 64 KiB (about 1.5 MB); a rare huge piece's is left
// to the GC, so one outlier row does not pin its working memory.
func putScratch(s *mergeScratch) {
	if cap(s.next) <= 1<<16 {
		scratchPool.Put(s)
	}
}

// pieceEnds appends the end offset of each of piece p's tokens to dst.
func (t *rankTable) pieceEnds(p string, dst []int) []int {
	if len(p) == 1 || t.rank(p) != noRank {
		return append(dst, len(p))
	}
	s := scratchPool.Get().(*mergeScratch)
	defer putScratch(s)
	t.merge(p, s)
	for i := 0; i < len(p); i = int(s.next[i]) {
		dst = append(dst, int(s.next[i]))
	}
	return dst
}

// merge runs the byte-pair merges of p in s and returns the number of parts; s.next then links
// each part's start to the next one's.
func (t *rankTable) merge(p string, s *mergeScratch) int {
	n := len(p)
	if cap(s.next) < n {
		s.next = make([]int32, n)
		s.prev = make([]int32, n)
		s.rank = make([]uint32, n)
	}
	next, prev, rank := s.next[:n], s.prev[:n], s.rank[:n]
	h := s.heap[:0]
	for i := range n {
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		rank[i] = noRank
		if i+2 <= n {
			if r := t.rank(p[i : i+2]); r != noRank {
				rank[i] = r
				h = append(h, uint64(r)<<32|uint64(i))
			}
		}
	}
	heapInit(h)
	parts := n
	for len(h) > 0 {
		top := h[0]
		h = heapPop(h)
		i, r := int32(top), uint32(top>>32)
		if rank[i] != r {
			continue // stale: part i has merged since, or died
		}
		j := next[i]
		rank[j] = noRank
		next[i] = next[j]
		if int(next[j]) < n {
			prev[next[j]] = i
		}
		parts--
		rank[i] = noRank
		if int(next[i]) < n {
			if r := t.rank(p[i:next[next[i]]]); r != noRank {
				rank[i] = r
				h = heapPush(h, uint64(r)<<32|uint64(i))
			}
		}
		if pi := prev[i]; pi >= 0 {
			rank[pi] = noRank
			if r := t.rank(p[pi:next[i]]); r != noRank {
				rank[pi] = r
				h = heapPush(h, uint64(r)<<32|uint64(pi))
			}
		}
	}
	s.heap = h
	return parts
}

func heapInit(h []uint64) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		siftDown(h, i)
	}
}

func heapPush(h []uint64, v uint64) []uint64 {
	h = append(h, v)
	for i := len(h) - 1; i > 0; {
		up := (i - 1) / 2
		if h[up] <= h[i] {
			break
		}
		h[up], h[i] = h[i], h[up]
		i = up
	}
	return h
}

func heapPop(h []uint64) []uint64 {
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	siftDown(h, 0)
	return h
}

func siftDown(h []uint64, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r] < h[l] {
			m = r
		}
		if h[i] <= h[m] {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
