// Package ranges keeps sets of chunk indexes as compact range strings ("0-41,43-55"), so an
// ingestion's status stays small whatever the number of chunks.
package ranges

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Set is a set of non-negative ints stored as sorted, disjoint, non-adjacent closed intervals.
type Set struct {
	iv [][2]int
}

// Parse reads "0-41,43,45-47". The empty string is the empty set.
func Parse(s string) (Set, error) {
	var out Set
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return Set{}, fmt.Errorf("ranges: bad start %q in %q", lo, s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return Set{}, fmt.Errorf("ranges: bad range %q in %q", part, s)
			}
		}
		out.AddRange(a, b)
	}
	return out, nil
}

// Add puts i in the set.
func (s *Set) Add(i int) { s.AddRange(i, i) }

// AddRange puts [a, b] in the set.
func (s *Set) AddRange(a, b int) {
	// Find the first interval that ends at or after a-1 (could merge).
	k := sort.Search(len(s.iv), func(j int) bool { return s.iv[j][1] >= a-1 })
	end := k
	for end < len(s.iv) && s.iv[end][0] <= b+1 {
		a = min(a, s.iv[end][0])
		b = max(b, s.iv[end][1])
		end++
	}
	merged := append([][2]int{}, s.iv[:k]...)
	merged = append(merged, [2]int{a, b})
	s.iv = append(merged, s.iv[end:]...)
}

// Has reports whether i is in the set.
func (s Set) Has(i int) bool {
	k := sort.Search(len(s.iv), func(j int) bool { return s.iv[j][1] >= i })
	return k < len(s.iv) && s.iv[k][0] <= i
}

// Len is the number of members.
func (s Set) Len() int {
	n := 0
	for _, r := range s.iv {
		n += r[1] - r[0] + 1
	}
	return n
}

// String renders the compact form.
func (s Set) String() string {
	var b strings.Builder
	for i, r := range s.iv {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(r[0]))
		if r[1] != r[0] {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(r[1]))
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
