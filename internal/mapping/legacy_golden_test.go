package mapping_test

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

// TestLegacyMetadataGolden maps the rows of testdata/legacy_golden.csv with metadata.format
// legacy, as chunk 3 (rows 3000–3999) of a legacy ingestion, and compares every record with what
// the old service's code built for the same rows: testdata/legacy_golden.json, written by
// testdata/legacy_golden.py with Python's own csv.DictReader, truthiness, str() and
// datetime.isoformat(). It covers chunk_id "chunk_0003", record_index within the chunk, the id
// read untrimmed into row_id and kept as "id", microsecond processed_at, empty values skipped, a
// column named like a fixed field ("source") skipped, values kept untrimmed and the text cut to
// 1,000 characters.
func TestLegacyMetadataGolden(t *testing.T) {
	f, err := os.Open("testdata/legacy_golden.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/legacy_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []struct {
		Row      int64          `json:"row"`
		VectorID string         `json:"vector_id"`
		Keys     []string       `json:"keys"`
		Metadata map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	header, data := rows[0], rows[1:]
	if len(data) != len(want) {
		t.Fatalf("%d CSV rows, %d golden records", len(data), len(want))
	}

	spec := v1alpha1.MappingSpec{
		IDColumn: "id", IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy",
		Metadata: v1alpha1.MetadataSpec{Format: mapping.FormatLegacy, Include: "all", TextField: "text", TextMaxChars: 1000},
	}
	at := time.Date(2025, 1, 10, 14, 3, 7, 123456789, time.UTC)
	m, err := mapping.New(spec, header, mapping.Fixed{
		DefaultNamespace: "v2", Source: "s3_csv", S3Key: "exports/239-200-300.csv", TaskID: "q239-2025-01-10",
		QuestionID: 239, ChunkID: 3, FirstRow: 3000, ProcessedAt: mapping.FormatProcessedAt(mapping.FormatLegacy, at),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		rec, rerr := m.Map(w.Row, data[i])
		if rerr != nil {
			t.Fatalf("row %d: %v", w.Row, rerr)
		}
		if rec.ID != w.VectorID || rec.Namespace != "v2" {
			t.Errorf("row %d: id %q namespace %q, want %q in v2", w.Row, rec.ID, rec.Namespace, w.VectorID)
		}
		var keys []string
		for _, f := range rec.Metadata {
			keys = append(keys, f.Key)
		}
		if !reflect.DeepEqual(keys, w.Keys) {
			t.Errorf("row %d: keys\n got %q\nwant %q", w.Row, keys, w.Keys)
		}
		// Through JSON, as Pinecone stores it: numbers come back as float64 on both sides.
		got := map[string]any{}
		b, err := json.Marshal(rec.MetadataMap())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, w.Metadata) {
			for k, v := range w.Metadata {
				if !reflect.DeepEqual(got[k], v) {
					t.Errorf("row %d: %s = %#v, want %#v", w.Row, k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := w.Metadata[k]; !ok {
					t.Errorf("row %d: unexpected %s = %#v", w.Row, k, v)
				}
			}
		}
		if _, err := rec.MetadataStruct(); err != nil {
			t.Errorf("row %d: %v", w.Row, err)
		}
	}
}

// The standard format on the same rows keeps its own shape: numeric chunk_id and record_index
// (the global row), the id column left out and trimmed, seconds in processed_at.
func TestStandardFormatUnchanged(t *testing.T) {
	header := []string{"id", "formatted_text", "city"}
	at := time.Date(2025, 1, 10, 14, 3, 7, 123456789, time.UTC)
	m, err := mapping.New(v1alpha1.MappingSpec{TextColumn: "formatted_text", IDPrefix: "239.", Metadata: v1alpha1.MetadataSpec{TextField: "text"}}, header, mapping.Fixed{
		Source: "s3_csv", ChunkID: 3, FirstRow: 3000, ProcessedAt: mapping.FormatProcessedAt("", at),
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, rerr := m.Map(3001, []string{" 7 ", "hello", " Reno "})
	if rerr != nil {
		t.Fatal(rerr)
	}
	want := map[string]any{"text": "hello", "source": "s3_csv", "chunk_id": 3.0, "record_index": 3001.0,
		"row_id": "7", "processed_at": "2025-01-10T14:03:07Z", "city": "Reno"}
	if got := rec.MetadataMap(); !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
}

func TestFormatPythonISO(t *testing.T) {
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2025, 1, 10, 14, 3, 7, 123456789, time.UTC), "2025-01-10T14:03:07.123456"},
		{time.Date(2025, 1, 10, 14, 3, 7, 1000, time.UTC), "2025-01-10T14:03:07.000001"},
		// Python's isoformat leaves the fraction out when the microseconds are 0.
		{time.Date(2025, 1, 10, 14, 3, 7, 999, time.UTC), "2025-01-10T14:03:07"},
		// Naive UTC: another zone is converted, and no offset is written.
		{time.Date(2025, 1, 10, 9, 3, 7, 500000000, time.FixedZone("EST", -5*3600)), "2025-01-10T14:03:07.500000"},
	} {
		if got := mapping.FormatPythonISO(tc.at); got != tc.want {
			t.Errorf("FormatPythonISO(%v) = %q, want %q", tc.at, got, tc.want)
		}
	}
}

func TestLegacyFormatRejects(t *testing.T) {
	header := []string{"id", "formatted_text"}
	_, err := mapping.New(v1alpha1.MappingSpec{TextColumn: "formatted_text",
		Metadata: v1alpha1.MetadataSpec{Format: mapping.FormatLegacy, InferTypes: true}}, header, mapping.Fixed{})
	if err == nil {
		t.Error("legacy with inferTypes: no error")
	}
	_, err = mapping.New(v1alpha1.MappingSpec{TextColumn: "formatted_text",
		Metadata: v1alpha1.MetadataSpec{Format: "fancy"}}, header, mapping.Fixed{})
	if err == nil {
		t.Error("unknown format: no error")
	}
}
