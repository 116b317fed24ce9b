package ranges

import (
	"math/rand"
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
