package pinecone

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// Pinecone's metadata limits: at most 40 KB a vector, of strings, numbers, booleans and lists of
// strings; no null, no nested object.
const (
	MaxMetadataBytes = 40 * 1024
	// MetadataLimit is what the upserter lets through: a margin under Pinecone's limit, since
	// Pinecone measures its own serialization, of which MetadataSize is a careful reading. It is
	// the mapper's budget (mapping.MetadataBudget, which a mapping test holds equal): one budget,
	// so a record the mapper trimmed to fit is never refused here.
	MetadataLimit = MaxMetadataBytes - 512
)

// MetadataSize is the size of md as Pinecone measures it: compact JSON as its server writes it,
// strings in UTF-8 with only '"', '\\' and control characters escaped, numbers as 64-bit floats
// (an integral value keeps its ".0", so 12 counts as "12.0", two bytes more than encoding/json
// writes), lists of strings as arrays. Key order does not change the size.
func MetadataSize(md *structpb.Struct) int {
	if md == nil || len(md.Fields) == 0 {
		return 2
	}
	n := 1 // '{'
	for k, v := range md.Fields {
		n += jsonStringSize(k) + 1 + valueSize(v) + 1 // key, ':', value, ',' or '}'
	}
	return n
}

func valueSize(v *structpb.Value) int {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return jsonStringSize(k.StringValue)
	case *structpb.Value_NumberValue:
		return numberSize(k.NumberValue)
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return 4
		}
		return 5
	case *structpb.Value_ListValue:
		n := 1
		for _, e := range k.ListValue.GetValues() {
			n += valueSize(e) + 1
		}
		return max(n, 2)
	case *structpb.Value_StructValue:
		return MetadataSize(k.StructValue)
	}
	return 4 // null
}

// numberSize is the length of f written as a 64-bit float: shortest round-trip digits, and
// ".0" after an integral value.
func numberSize(f float64) int {
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'g', -1, 64)
	n := len(b)
	if f == math.Trunc(f) && math.Abs(f) < 1e16 {
		n = len(strconv.AppendFloat(buf[:0], f, 'f', -1, 64)) + 2
	}
	return n
}

// jsonStringSize is s as a JSON string with minimal escaping.
func jsonStringSize(s string) int {
	n := 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
			n += 2
		case c < 0x20:
			n += 6
		default:
			n++
		}
	}
	return n
}

// CheckMetadata returns why Pinecone would refuse md's value types, or nil: values must be
// strings, finite numbers, booleans or lists of strings.
func CheckMetadata(md *structpb.Struct) error {
	for k, v := range md.GetFields() {
		if !utf8.ValidString(k) {
			return fmt.Errorf("metadata key %q is not valid UTF-8", k)
		}
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue, *structpb.Value_BoolValue:
		case *structpb.Value_NumberValue:
			if math.IsNaN(x.NumberValue) || math.IsInf(x.NumberValue, 0) {
				return fmt.Errorf("metadata field %q is %v, not a finite number", k, x.NumberValue)
			}
		case *structpb.Value_ListValue:
			for _, e := range x.ListValue.GetValues() {
				if _, ok := e.GetKind().(*structpb.Value_StringValue); !ok {
					return fmt.Errorf("metadata field %q is a list holding a non-string; only lists of strings are supported", k)
				}
			}
		case *structpb.Value_StructValue:
			return fmt.Errorf("metadata field %q is a nested object, which Pinecone does not support", k)
		default:
			return fmt.Errorf("metadata field %q is null, which Pinecone does not support; leave the key out", k)
		}
	}
	return nil
}
