// Package ranges keeps sets of chunk indexes as compact range strings ("0-41,43-55"), so an
// ingestion's status stays small whatever the number of chunks.
//
// Every pass of the controller parses two of these strings and adds the chunks that finished, so
// the cost must grow with the number of intervals as k log k, never k²: Parse sorts and merges
// once, and AddRange edits the interval list in place (appending in the common case of chunks
// finishing roughly in order).
package ranges

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// MaxValue is the largest member a Set parses: chunk indexes are int32 in the API.
const MaxValue = math.MaxInt32

// Set is a set of non-negative ints stored as sorted, disjoint, non-adjacent closed intervals.
// Adding edits the storage in place: copy a Set that will change with Clone.
type Set struct {
	iv [][2]int
}

// Parse reads "0-41,43,45-47" (in any order, overlapping or not). The empty string is the empty
// set.
func Parse(s string) (Set, error) {
	if strings.TrimSpace(s) == "" {
		return Set{}, nil
	}
	iv := make([][2]int, 0, strings.Count(s, ",")+1)
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseValue(lo)
		if err != nil {
			return Set{}, fmt.Errorf("ranges: bad start %q in %q: %w", lo, abbrev(s), err)
		}
		b := a
		if isRange {
			if b, err = parseValue(hi); err != nil {
				return Set{}, fmt.Errorf("ranges: bad range %q in %q: %w", part, abbrev(s), err)
			}
			if b < a {
				return Set{}, fmt.Errorf("ranges: bad range %q in %q: end before start", part, abbrev(s))
			}
		}
		iv = append(iv, [2]int{a, b})
	}
	// Sort and merge once: O(k log k) however the input is ordered (it is already sorted when
	// it came from String, and the sort is then a single linear check).
	if !slices.IsSortedFunc(iv, byStart) {
		slices.SortFunc(iv, byStart)
	}
	out := iv[:0]
	for _, r := range iv {
		if n := len(out); n > 0 && r[0]-1 <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return Set{iv: slices.Clip(out)}, nil
}

func byStart(x, y [2]int) int { return cmp.Compare(x[0], y[0]) }

func parseValue(s string) (int, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a non-negative integer")
	}
	if v > MaxValue {
		return 0, fmt.Errorf("larger than %d", MaxValue)
	}
	return int(v), nil
}

// abbrev keeps error messages short when a whole status string is quoted.
func abbrev(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:77] + "..."
}

// Add puts i in the set.
func (s *Set) Add(i int) { s.AddRange(i, i) }

// AddRange puts [a, b] in the set; a negative or empty range adds nothing.
func (s *Set) AddRange(a, b int) {
	if a < 0 || b < a {
		return
	}
	n := len(s.iv)
	// Common case: at or past the end (chunks mostly finish in order).
	if n == 0 || a-1 > s.iv[n-1][1] {
		s.iv = append(s.iv, [2]int{a, b})
		return
	}
	if a >= s.iv[n-1][0] {
		s.iv[n-1][1] = max(s.iv[n-1][1], b)
		return
	}
	// First interval that ends at or after a-1 (so may merge with [a, b]); members are ≥ 0, so
	// a-1 and iv[j][0]-1 cannot overflow.
	k := sort.Search(n, func(j int) bool { return s.iv[j][1] >= a-1 })
	end := k
	for end < n && s.iv[end][0]-1 <= b {
		a = min(a, s.iv[end][0])
		b = max(b, s.iv[end][1])
		end++
	}
	s.iv = slices.Replace(s.iv, k, end, [2]int{a, b})
}

// Clone returns a Set that shares no storage with s.
func (s Set) Clone() Set { return Set{iv: slices.Clone(s.iv)} }

// Has reports whether i is in the set.
func (s Set) Has(i int) bool {
	k := sort.Search(len(s.iv), func(j int) bool { return s.iv[j][1] >= i })
	return k < len(s.iv) && s.iv[k][0] <= i
}

// NextAbsent is the smallest i >= from that is not in the set: a walk over the gaps of a set
// costs its intervals, not its members.
func (s Set) NextAbsent(from int) int {
	k := sort.Search(len(s.iv), func(j int) bool { return s.iv[j][1] >= from })
	if k < len(s.iv) && s.iv[k][0] <= from {
		return s.iv[k][1] + 1
	}
	return from
}

// Len is the number of members.
func (s Set) Len() int {
	n := 0
	for _, r := range s.iv {
		n += r[1] - r[0] + 1
	}
	return n
}

// Intervals is the number of disjoint intervals, i.e. of comma-separated parts in String.
func (s Set) Intervals() int { return len(s.iv) }

// String renders the compact form.
func (s Set) String() string {
	var b strings.Builder
	b.Grow(len(s.iv) * 12)
	var num [20]byte
	for i, r := range s.iv {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(strconv.AppendInt(num[:0], int64(r[0]), 10))
		if r[1] != r[0] {
			b.WriteByte('-')
			b.Write(strconv.AppendInt(num[:0], int64(r[1]), 10))
		}
	}
	return b.String()
}

// Each calls f for every member in increasing order until f returns false.
func (s Set) Each(f func(int) bool) {
	for _, r := range s.iv {
		for i := r[0]; i <= r[1]; i++ {
			if !f(i) {
				return
			}
		}
	}
}
