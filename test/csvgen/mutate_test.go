package csvgen

import (
	"bytes"
	"encoding/csv"
	"testing"
)

func TestMutate(t *testing.T) {
	var buf bytes.Buffer
	if _, err := Write(&buf, Options{Rows: 10000, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	out, ch, err := Mutate(buf.Bytes(), 10, 5, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Changed) != 100 || len(ch.Removed) != 50 || ch.Kept != 9950 {
		t.Fatalf("changed %d, removed %d, kept %d", len(ch.Changed), len(ch.Removed), ch.Kept)
	}
	rows, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 9951 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	removed := map[string]bool{}
	for _, id := range ch.Removed {
		removed[id] = true
	}
	for _, r := range rows[1:] {
		if removed[r[0]] {
			t.Fatalf("removed row %s still there", r[0])
		}
	}
	_, ch, err = Mutate(buf.Bytes(), 0, 0, 40)
	if err != nil || ch.Kept != 4000 || len(ch.Changed)+len(ch.Removed) != 0 {
		t.Fatalf("truncated: %+v %v", ch, err)
	}
}
