package pinecone

import (
	"math"
	"strconv"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Pinecone's documented limits on what one vector may carry, enforced here so that the client's
// own checks are not the only guard in tests: a regression in them fails a test instead of
// passing against a lenient fake.
const (
	// MaxMetadataBytes is the metadata a vector may carry, as MetadataSize measures it.
	MaxMetadataBytes = 40960
	// MaxIDBytes is the longest vector id.
	MaxIDBytes = 512
	// MaxNamespaceBytes is the longest namespace name.
	MaxNamespaceBytes = 512
)

// MetadataSize is the fake's reading of how Pinecone measures metadata: compact JSON with
// strings in UTF-8 (only '"', '\\' and control characters escaped) and numbers as 64-bit floats,
// an integral value keeping its ".0".
func MetadataSize(md *structpb.Struct) int {
	if md == nil || len(md.Fields) == 0 {
		return 2
	}
	n := 1
	for k, v := range md.Fields {
		n += strSize(k) + 1 + valSize(v) + 1
	}
	return n
}

func valSize(v *structpb.Value) int {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return strSize(k.StringValue)
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if f == math.Trunc(f) && math.Abs(f) < 1e16 {
			return len(strconv.FormatFloat(f, 'f', -1, 64)) + 2
		}
		return len(strconv.FormatFloat(f, 'g', -1, 64))
	case *structpb.Value_BoolValue:
		if k.BoolValue {
			return 4
		}
		return 5
	case *structpb.Value_ListValue:
		n := 1
		for _, e := range k.ListValue.GetValues() {
			n += valSize(e) + 1
		}
		return max(n, 2)
	case *structpb.Value_StructValue:
		return MetadataSize(k.StructValue)
	}
	return 4
}

func strSize(s string) int {
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

// checkNamespace refuses a namespace Pinecone would not create.
func checkNamespace(ns string) error {
	if len(ns) > MaxNamespaceBytes {
		return status.Errorf(codes.InvalidArgument, "Namespace name exceeds the maximum length of %d bytes", MaxNamespaceBytes)
	}
	if !utf8.ValidString(ns) {
		return status.Error(codes.InvalidArgument, "Namespace name must be valid UTF-8")
	}
	for i := 0; i < len(ns); i++ {
		if ns[i] == 0 {
			return status.Error(codes.InvalidArgument, "Namespace name must not contain null characters")
		}
	}
	return nil
}

// checkVector refuses an id or metadata Pinecone would refuse, with its kind of message.
func checkVector(id string, md *structpb.Struct) error {
	if len(id) > MaxIDBytes {
		return status.Errorf(codes.InvalidArgument, "Vector ID %.40q... is %d bytes, which exceeds the maximum length of %d", id, len(id), MaxIDBytes)
	}
	if !utf8.ValidString(id) {
		return status.Error(codes.InvalidArgument, "Vector ID must be valid UTF-8")
	}
	if md == nil {
		return nil
	}
	for k, v := range md.Fields {
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue, *structpb.Value_BoolValue:
		case *structpb.Value_NumberValue:
			if math.IsNaN(x.NumberValue) || math.IsInf(x.NumberValue, 0) {
				return status.Errorf(codes.InvalidArgument, "Metadata value for field '%s' must be a finite number", k)
			}
		case *structpb.Value_ListValue:
			for _, e := range x.ListValue.GetValues() {
				if _, ok := e.GetKind().(*structpb.Value_StringValue); !ok {
					return status.Errorf(codes.InvalidArgument, "Metadata value for field '%s' must be a string, number, boolean or list of strings; lists may hold only strings", k)
				}
			}
		case *structpb.Value_StructValue:
			return status.Errorf(codes.InvalidArgument, "Metadata value for field '%s' is a nested object; nested JSON objects are not supported", k)
		default:
			return status.Errorf(codes.InvalidArgument, "Metadata value for field '%s' is null; null metadata values are not supported", k)
		}
	}
	if n := MetadataSize(md); n > MaxMetadataBytes {
		return status.Errorf(codes.InvalidArgument, "Metadata size is %d bytes, which exceeds the limit of %d bytes per vector", n, MaxMetadataBytes)
	}
	return nil
}

// requestTooLarge is Pinecone's answer to an upsert over MaxUpsertBytes.
func requestTooLarge(size int) error {
	return status.Errorf(codes.InvalidArgument, "Your request is larger than the maximum supported size - 2MB (%d bytes). Please try to reduce your batch size.", size)
}

// RefuseVectors makes Upsert refuse, with InvalidArgument and message, any request holding a
// vector whose id refuse accepts: a stand-in for a vector Pinecone refuses for reasons the
// client cannot check. nil turns it off.
func (x *Index) RefuseVectors(refuse func(id string) bool, message string) {
	x.mu.Lock()
	x.refuse, x.refuseMsg = refuse, message
	x.mu.Unlock()
}

func (x *Index) refused(ids []string) error {
	x.mu.Lock()
	refuse, msg := x.refuse, x.refuseMsg
	x.mu.Unlock()
	if refuse == nil {
		return nil
	}
	for _, id := range ids {
		if refuse(id) {
			return status.Error(codes.InvalidArgument, msg)
		}
	}
	return nil
}
