package ranges

import (
	"fmt"
	"math/rand"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestParseAndString(t *testing.T) {
	for in, want := range map[string]string{
		"":                "",
		"3":               "3",
		"0-41,43-55":      "0-41,43-55",
		"5,4,3":           "3-5",
		"1-3,2-6,10":      "1-6,10",
		"7,0-2, 3 ,9-9":   "0-3,7,9",
		"100-200,201-300": "100-300",
	} {
		s, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if got := s.String(); got != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"a", "3-1", "-1", "1-", "1,,2"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// The set must agree with a plain map whatever the order of additions.
func TestAgainstMap(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		var s Set
		ref := map[int]bool{}
		for n := r.Intn(60); n > 0; n-- {
			a := r.Intn(100)
			b := a + r.Intn(4)
			s.AddRange(a, b)
			for i := a; i <= b; i++ {
				ref[i] = true
			}
		}
		if s.Len() != len(ref) {
			t.Fatalf("Len %d, want %d (%s)", s.Len(), len(ref), s)
		}
		for i := 0; i < 110; i++ {
			if s.Has(i) != ref[i] {
				t.Fatalf("Has(%d) = %v, want %v (%s)", i, s.Has(i), ref[i], s)
			}
		}
		back, err := Parse(s.String())
		if err != nil || back.String() != s.String() {
			t.Fatalf("round trip %q -> %q, %v", s, back, err)
		}
		for i := 0; i < 110; i++ {
			want := i
			for ref[want] {
				want++
			}
			if got := s.NextAbsent(i); got != want {
				t.Fatalf("NextAbsent(%d) = %d, want %d (%s)", i, got, want, s)
			}
		}
		prev := -1
		s.Each(func(i int) bool {
			if i <= prev || !ref[i] {
				t.Fatalf("Each gave %d after %d", i, prev)
			}
			prev = i
			return true
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{"+3", "2147483648", "99999999999999999999999", "1-2147483648", "0x10", "1 2", "1--2", "-"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if s, err := Parse("2147483647"); err != nil || !s.Has(MaxValue) {
		t.Errorf("Parse(MaxValue) = %v, %v", s, err)
	}
}

func TestAddRangeIgnoresEmptyAndNegative(t *testing.T) {
	var s Set
	s.AddRange(5, 4)
	s.AddRange(-3, 2)
	s.Add(-1)
	if s.Len() != 0 {
		t.Fatalf("got %s, want the empty set", s)
	}
	s.AddRange(MaxValue-1, MaxValue)
	s.Add(MaxValue - 2)
	if got := s.String(); got != "2147483645-2147483647" {
		t.Fatalf("got %s", got)
	}
}

func TestCloneIsIndependent(t *testing.T) {
	s, _ := Parse("0-3,10")
	c := s.Clone()
	s.AddRange(4, 9)
	s.Add(20)
	if c.String() != "0-3,10" || s.String() != "0-10,20" {
		t.Fatalf("clone %s, original %s", c, s)
	}
}

// Parsing the same intervals in any order, overlapping or touching, gives the set a map
// would, and the same set as adding them one by one.
func TestParseAnyOrderAgainstMap(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for round := 0; round < 300; round++ {
		ref := map[int]bool{}
		var parts []string
		var added Set
		for n := r.Intn(80); n > 0; n-- {
			a := r.Intn(200)
			b := a + r.Intn(6)
			for i := a; i <= b; i++ {
				ref[i] = true
			}
			added.AddRange(a, b)
			if a == b && r.Intn(2) == 0 {
				parts = append(parts, fmt.Sprint(a))
			} else {
				parts = append(parts, fmt.Sprintf("%d-%d", a, b))
			}
		}
		r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		s, err := Parse(strings.Join(parts, ","))
		if err != nil {
			t.Fatal(err)
		}
		if s.String() != added.String() {
			t.Fatalf("Parse %q = %s, adding one by one = %s", strings.Join(parts, ","), s, added)
		}
		checkAgainst(t, s, ref, 210)
	}
}

func checkAgainst(t *testing.T, s Set, ref map[int]bool, upTo int) {
	t.Helper()
	if s.Len() != len(ref) {
		t.Fatalf("Len %d, want %d (%s)", s.Len(), len(ref), s)
	}
	for i := 0; i < upTo; i++ {
		if s.Has(i) != ref[i] {
			t.Fatalf("Has(%d) = %v, want %v (%s)", i, s.Has(i), ref[i], s)
		}
	}
	// The canonical form: sorted, disjoint, never touching.
	for k := 1; k < len(s.iv); k++ {
		if s.iv[k][0] <= s.iv[k-1][1]+1 {
			t.Fatalf("intervals %v and %v overlap or touch in %s", s.iv[k-1], s.iv[k], s)
		}
	}
}

// The worst case of a status string: every other chunk of the largest plan. 25,000 intervals
// took 11 s and 4.9 GB to parse when each one was merged by copying the list; sorting and merging
// once allocates about the size of the list. Allocation is measured rather than time, so the test
// does not depend on the machine's load.
func TestParseAndAddAreNotQuadratic(t *testing.T) {
	const chunks = 50000
	var every Set
	for i := 0; i < chunks; i += 2 {
		every.Add(i)
	}
	if every.Intervals() != chunks/2 {
		t.Fatalf("%d intervals, want %d", every.Intervals(), chunks/2)
	}
	str := every.String()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	s, err := Parse(str)
	runtime.ReadMemStats(&ms1)
	if err != nil {
		t.Fatal(err)
	}
	if s.String() != str {
		t.Fatal("round trip changed the set")
	}
	// 25,000 intervals of 16 bytes: 400 KB of list; allow a few times that.
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 4<<20 {
		t.Fatalf("Parse of %d intervals allocated %d bytes, want well under 4 MiB", s.Intervals(), alloc)
	}
	// Shuffled input still parses to the same set.
	parts := strings.Split(str, ",")
	rand.New(rand.NewSource(3)).Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	if s2, err := Parse(strings.Join(parts, ",")); err != nil || s2.String() != str {
		t.Fatalf("shuffled parse: %v", err)
	}
	// Chunks finish roughly in order: filling the holes of the last fifth one by one merges
	// them into one interval in place, without copying the list each time.
	runtime.ReadMemStats(&ms0)
	for i := chunks * 4 / 5; i < chunks; i++ {
		s.Add(i)
	}
	s.Add(1) // and one far from the end
	runtime.ReadMemStats(&ms1)
	if got, want := s.Intervals(), chunks*4/5/2-1+1; got != want {
		t.Fatalf("%d intervals after the adds, want %d", got, want)
	}
	if !strings.HasPrefix(s.String(), "0-2,4,6,") || !strings.HasSuffix(s.String(), ",39998,40000-49999") {
		t.Fatalf("got %.40s…%s", s.String(), s.String()[len(s.String())-30:])
	}
	if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 64<<10 {
		t.Fatalf("%d adds allocated %d bytes, want none beyond noise", chunks/5, alloc)
	}
}

func BenchmarkParseWorstCase(b *testing.B) {
	var s Set
	for i := 0; i < 50000; i += 2 {
		s.Add(i)
	}
	str := s.String()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(str); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParse: whatever the input, Parse never panics; what it accepts renders to a canonical
// string that parses back to the same set, and agrees with a map built from the same parts.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{"", "3", "0-41,43-55", "5,4,3", "1-3,2-6,10", "7,0-2, 3 ,9-9", "3-1", "1,,2", "2147483647", "-1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		out := s.String()
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) rendered %q, which does not parse: %v", in, out, err)
		}
		if back.String() != out {
			t.Fatalf("not canonical: %q -> %q -> %q", in, out, back.String())
		}
		// Small values only: compare with a map of the parts.
		if s.Len() == 0 || s.iv[len(s.iv)-1][1] > 10000 {
			return
		}
		ref := map[int]bool{}
		maxV := 0
		for _, part := range strings.Split(in, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
			a, _ := strconv.Atoi(lo)
			b := a
			if isRange {
				b, _ = strconv.Atoi(hi)
			}
			for i := a; i <= b; i++ {
				ref[i] = true
			}
			maxV = max(maxV, b)
		}
		checkAgainst(t, s, ref, maxV+2)
	})
}
