// Package ownership says which vectors an ingestion's spec.sync.deleteMissing may delete. Every
// vector an ingestion with spec.sync writes carries its owner, the exact spec.mapping.idPrefix,
// in metadata key id_prefix. A vector listed under the prefix is this source's only when that
// marker equals the prefix: a raw id-prefix listing also returns the ids of other sources whose
// ids happen to start with the same characters (prefix "q1" lists "q10…"), and those of writers
// that do not mark their vectors at all.
package ownership

import (
	"strings"

	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

// Key is the metadata key holding a vector's owner (the exact id prefix of the source that wrote
// it).
const Key = "id_prefix"

// Stamp returns md with the owner marker set to prefix, replacing a column of that name (a row's
// own value must never claim another owner). An empty prefix stamps nothing.
func Stamp(md []mapping.Field, prefix string) []mapping.Field {
	if prefix == "" {
		return md
	}
	out := make([]mapping.Field, 0, len(md)+1)
	for _, f := range md {
		if f.Key != Key {
			out = append(out, f)
		}
	}
	return append(out, mapping.Field{Key: Key, Value: mapping.Value{Kind: mapping.KindString, Str: prefix}})
}

// Separators are the characters a prefix-free id prefix may end with (the CRD's CEL rule allows
// the same).
const Separators = ".:/-_#|"

// PrefixFree reports whether prefix ends with one of Separators that does not occur earlier in
// it. Then no other prefix of that form ending with the same separator starts with it: "q1."
// cannot be the start of "q10.", and "orders-" cannot be the start of "orders-eu-" (which has
// '-' before its end). A prefix ending with another separator can ("q1." starts "q1.b-"): there
// the owner marker decides, and adoption leaves ids with any separator after the prefix alone.
func PrefixFree(prefix string) bool {
	if prefix == "" {
		return false
	}
	sep := prefix[len(prefix)-1]
	return strings.IndexByte(Separators, sep) >= 0 && strings.IndexByte(prefix[:len(prefix)-1], sep) < 0
}

// Class is what the ownership check found for one listed vector that is not in the file.
type Class int

const (
	// Owned: the vector's marker is this source's prefix; it may be deleted.
	Owned Class = iota
	// Adopted: unmarked, but adoptUnmarked is set and its id has the form prefix + rest with no
	// separator in rest; it may be deleted.
	Adopted
	// Foreign: another source's marker (or a marker that is not a string).
	Foreign
	// Unmarked: no marker, and not adopted; left alone.
	Unmarked
	// Gone: listed, but no longer in the index when fetched.
	Gone
)

func (c Class) String() string {
	switch c {
	case Owned:
		return "owned"
	case Adopted:
		return "adopted"
	case Foreign:
		return "foreign"
	case Unmarked:
		return "unmarked"
	case Gone:
		return "gone"
	}
	return "unknown"
}

// Deletable reports whether a vector of this class may be deleted.
func (c Class) Deletable() bool { return c == Owned || c == Adopted }

// Marker is a fetched vector's owner marker.
type Marker struct {
	// Present: the index holds the vector.
	Present bool
	// Set: the vector has metadata key Key; Value is its value when it is a string, and
	// NotString says it is another type.
	Set       bool
	Value     string
	NotString bool
}

// Owner is the source whose vectors a sync step may delete.
type Owner struct {
	// Prefix is spec.mapping.idPrefix, exactly.
	Prefix string
	// AdoptUnmarked treats unmarked vectors of the form Prefix + rest (rest not empty and
	// without any of Separators) as owned: vectors this source wrote before the marker existed.
	// Ids whose rest holds a separator are left alone: they look like another source's prefix
	// nested under this one, and a prefix-free prefix may end with any separator ("q1." +
	// "b.7", but also "q1." + "b-7" of source "q1.b-", which the CEL rule accepts).
	AdoptUnmarked bool
}

// Classify decides about one listed vector that the file does not have.
func (o Owner) Classify(id string, m Marker) Class {
	switch {
	case o.Prefix == "" || !strings.HasPrefix(id, o.Prefix):
		return Foreign // never listed under the prefix; never deleted
	case !m.Present:
		return Gone
	case m.Set && !m.NotString && m.Value == o.Prefix:
		return Owned
	case m.Set && (m.NotString || m.Value != ""):
		return Foreign
	case o.AdoptUnmarked && o.adoptable(id):
		return Adopted
	}
	return Unmarked
}

func (o Owner) adoptable(id string) bool {
	rest := id[len(o.Prefix):]
	if rest == "" {
		return false
	}
	return !strings.ContainsAny(rest, Separators)
}
