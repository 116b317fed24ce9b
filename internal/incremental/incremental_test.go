package incremental

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

func str(k, v string) mapping.Field {
	return mapping.Field{Key: k, Value: mapping.Value{Kind: mapping.KindString, Str: v}}
}

func num(k string, v float64) mapping.Field {
	return mapping.Field{Key: k, Value: mapping.Value{Kind: mapping.KindNumber, Num: v}}
}

func rec() mapping.Record {
	return mapping.Record{Row: 7, ID: "239.42", Namespace: "v2", Text: "Gala dinner, table 4",
		Metadata: []mapping.Field{str("row_id", "42"), str("city", "Austin"), num("price", 25),
			str(mapping.KeyTaskID, "task-a"), str(mapping.KeyProcessedAt, "2025-01-10T22:45:23Z"),
			num(mapping.KeyChunkID, 3), num(mapping.KeyRecordIndex, 7), str(mapping.KeyS3Key, "exports/a.csv"),
			str(mapping.KeySource, "s3_csv")}}
}

func TestHash(t *testing.T) {
	base := Hash(rec(), "text-embedding-3-small", 1536)
	if len(base) != 32 {
		t.Fatalf("hash %q", base)
	}
	same := []struct {
		name   string
		mutate func(*mapping.Record)
	}{
		{"another run's task, chunk, object and time", func(r *mapping.Record) {
			r.Row = 9
			r.Metadata = []mapping.Field{str("row_id", "42"), str("city", "Austin"), num("price", 25),
				str(mapping.KeyTaskID, "task-b"), str(mapping.KeyProcessedAt, "2026-01-01T00:00:00Z"),
				num(mapping.KeyChunkID, 0), num(mapping.KeyRecordIndex, 0), str(mapping.KeyS3Key, "exports/b.csv"),
				str(mapping.KeySource, "metabase")}
		}},
		{"metadata in another order", func(r *mapping.Record) {
			r.Metadata[1], r.Metadata[2] = r.Metadata[2], r.Metadata[1]
		}},
		{"a stored hash among the metadata", func(r *mapping.Record) { r.Metadata = WithHash(r.Metadata, "ffff") }},
	}
	for _, c := range same {
		r := rec()
		c.mutate(&r)
		if got := Hash(r, "text-embedding-3-small", 1536); got != base {
			t.Errorf("%s: hash changed", c.name)
		}
	}
	differ := []struct {
		name       string
		mutate     func(*mapping.Record)
		model      string
		dimensions int
	}{
		{"text", func(r *mapping.Record) { r.Text += "." }, "", 0},
		{"a metadata value", func(r *mapping.Record) { r.Metadata[1] = str("city", "Boston") }, "", 0},
		{"a number", func(r *mapping.Record) { r.Metadata[2] = num("price", 26) }, "", 0},
		{"a number become a string", func(r *mapping.Record) { r.Metadata[2] = str("price", "25") }, "", 0},
		{"a new column", func(r *mapping.Record) { r.Metadata = append(r.Metadata, str("zip", "78701")) }, "", 0},
		{"a column gone", func(r *mapping.Record) { r.Metadata = r.Metadata[1:] }, "", 0},
		{"namespace", func(r *mapping.Record) { r.Namespace = "events" }, "", 0},
		{"id", func(r *mapping.Record) { r.ID = "239.43" }, "", 0},
		{"model", func(r *mapping.Record) {}, "text-embedding-3-large", 0},
		{"dimensions", func(r *mapping.Record) {}, "", 256},
		// Length-prefixed fields: moving a boundary is a change.
		{"boundary between key and value", func(r *mapping.Record) { r.Metadata[1] = str("cityA", "ustin") }, "", 0},
	}
	for _, c := range differ {
		r := rec()
		c.mutate(&r)
		model, dims := "text-embedding-3-small", 1536
		if c.model != "" {
			model = c.model
		}
		if c.dimensions != 0 {
			dims = c.dimensions
		}
		if got := Hash(r, model, dims); got == base {
			t.Errorf("%s: hash unchanged", c.name)
		}
	}
}

func TestWithHashAndUnchanged(t *testing.T) {
	md := WithHash([]mapping.Field{str("content_hash", "from-a-column"), str("city", "Austin")}, "abc")
	if len(md) != 2 || md[1].Key != MetadataKey || md[1].Value.Str != "abc" || md[0].Key != "city" {
		t.Fatalf("metadata %+v", md)
	}
	stored := map[string]string{"a": "h1", "b": "", "c": "h3"}
	for _, c := range []struct {
		id, hash string
		want     bool
	}{
		{"a", "h1", true},
		{"a", "h2", false}, // changed
		{"b", "", false},   // stored without a hash: embed
		{"z", "h1", false}, // not stored
		{"c", "h3", true},
	} {
		if got := Unchanged(stored, c.id, c.hash); got != c.want {
			t.Errorf("Unchanged(%s, %s) = %v", c.id, c.hash, got)
		}
	}
}
