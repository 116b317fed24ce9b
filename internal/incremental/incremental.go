// Package incremental decides which rows an incremental sync embeds again. Every vector carries a
// content hash in metadata; a row whose stored hash equals the hash of what would be written now
// is skipped (no tokens, no upsert).
package incremental

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"sort"
	"strings"

	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

// MetadataKey is the metadata key holding a vector's content hash.
const MetadataKey = "content_hash"

// perRun are metadata keys that change from run to run for the same row (which task, chunk or
// object wrote it, and when): they are not content, so they are left out of the hash.
var perRun = map[string]bool{
	mapping.KeySource:      true,
	mapping.KeyS3Key:       true,
	mapping.KeyChunkID:     true,
	mapping.KeyRecordIndex: true,
	mapping.KeyTaskID:      true,
	mapping.KeyProcessedAt: true,
	MetadataKey:            true,
}

// Hash is the content hash of a record as it would be written with model and dimensions: its
// id, namespace, text and the metadata that comes from its row, in a canonical order. It is hex
// of the first 16 bytes of a SHA-256.
func Hash(rec mapping.Record, model string, dimensions int) string {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put("v1")
	put(model)
	binary.LittleEndian.PutUint64(n[:], uint64(dimensions))
	h.Write(n[:])
	put(rec.ID)
	put(rec.Namespace)
	put(rec.Text)
	fields := make([]mapping.Field, 0, len(rec.Metadata))
	for _, f := range rec.Metadata {
		if !perRun[f.Key] {
			fields = append(fields, f)
		}
	}
	sort.Slice(fields, func(i, j int) bool { return fields[i].Key < fields[j].Key })
	for _, f := range fields {
		put(f.Key)
		h.Write([]byte{byte(f.Value.Kind)})
		switch f.Value.Kind {
		case mapping.KindNumber:
			binary.LittleEndian.PutUint64(n[:], math.Float64bits(f.Value.Num))
			h.Write(n[:])
		case mapping.KindBool:
			if f.Value.Bool {
				h.Write([]byte{1})
			} else {
				h.Write([]byte{0})
			}
		default:
			put(f.Value.Str)
		}
	}
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

// WithHash returns the record's metadata with its content hash set (replacing a column of that
// name, which could not be content the sync relies on).
func WithHash(md []mapping.Field, hash string) []mapping.Field {
	out := make([]mapping.Field, 0, len(md)+1)
	for _, f := range md {
		if f.Key != MetadataKey {
			out = append(out, f)
		}
	}
	return append(out, mapping.Field{Key: MetadataKey, Value: mapping.Value{Kind: mapping.KindString, Str: hash}})
}

// HashField is a content-hash field as WithHash adds it (any hash: they all have the same size),
// for the mapper to leave room for it in the metadata budget.
func HashField() mapping.Field {
	return mapping.Field{Key: MetadataKey, Value: mapping.Value{Kind: mapping.KindString, Str: strings.Repeat("0", 32)}}
}

// Unchanged reports whether a row must not be embedded again: its id is stored with the same
// hash. A vector without a hash (written before hashes, or by another writer) is embedded.
func Unchanged(stored map[string]string, id, hash string) bool {
	s, ok := stored[id]
	return ok && s != "" && s == hash
}
