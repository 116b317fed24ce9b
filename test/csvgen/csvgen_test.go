package csvgen

import (
	"bytes"
	"encoding/csv"
	"testing"
)

// The file must parse as the header plus Rows rows, and the bad rows be where Stats says.
func TestWriteIsValidAndAccounted(t *testing.T) {
	var buf bytes.Buffer
	st, err := Write(&buf, Options{Rows: 1000, Seed: 7, MalformedEvery: 100})
	if err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(bytes.NewReader(buf.Bytes()))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1001 || int64(len(recs)-1) != st.Rows || st.Bytes != int64(buf.Len()) {
		t.Fatalf("%d records, stats %+v", len(recs), st.Rows)
	}
	if len(st.Bad) != 10 || st.Good != 990 || len(st.GoodIDs) != 990 {
		t.Fatalf("bad %d good %d", len(st.Bad), st.Good)
	}
	for _, b := range st.Bad {
		rec := recs[b.Row+1]
		switch b.Reason {
		case "wrong_field_count":
			if len(rec) == len(Header) {
				t.Errorf("row %d should have a wrong field count", b.Row)
			}
		case "missing_id":
			if rec[0] != "" {
				t.Errorf("row %d should have no id", b.Row)
			}
		}
	}
	for _, rec := range recs[1:] {
		if len(rec) == len(Header) && (len(rec[1]) < 200 || len(rec[1]) > 1700) && rec[1] != "<p> </p> <br/>" {
			t.Fatalf("text of %d bytes", len(rec[1]))
		}
	}
}
