package csvplan

import (
	"strings"
	"testing"
)

// TestSplitterReleasesAnOutliersBuffer: a record of megabytes grows the buffer; once it is
// consumed the buffer goes back to its usual size instead of pinning the megabytes.
func TestSplitterReleasesAnOutliersBuffer(t *testing.T) {
	var b strings.Builder
	b.WriteString("1,short\n2," + strings.Repeat("x", 3<<20) + "\n")
	for i := range 2000 {
		b.WriteString("3,row " + strings.Repeat("y", i%50) + "\n")
	}
	s := newSplitter(strings.NewReader(b.String()), []byte(","), 0, 64<<10)
	var rec record
	grown, n := 0, 0
	for {
		ok, err := s.next(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		n++
		grown = max(grown, len(s.buf))
	}
	if n != 2002 || grown < 3<<20 {
		t.Fatalf("%d records, buffer grew to %d", n, grown)
	}
	if len(s.buf) > 2*s.target {
		t.Fatalf("buffer still %d bytes after the outlier, want ≤ %d", len(s.buf), 2*s.target)
	}
}
