package pinecone

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The data plane's UpsertRequest is generated into go-pinecone's internal package, so it cannot
// be built here to ask proto.Size. Its wire size is computed field by field instead (exact, and
// checked against the generated message in the tests):
//
//	message UpsertRequest { repeated Vector vectors = 1; string namespace = 2; }
//	message Vector { string id = 1; repeated float values = 2 [packed]; google.protobuf.Struct metadata = 3; }

// vectorSize is the size of one entry of UpsertRequest.vectors, tag and length included.
func vectorSize(id string, dims int, md *structpb.Struct) int {
	n := 0
	if len(id) > 0 {
		n += 1 + protowire.SizeBytes(len(id))
	}
	if dims > 0 {
		n += 1 + protowire.SizeBytes(4*dims)
	}
	if md != nil {
		n += 1 + protowire.SizeBytes(proto.Size(md))
	}
	return 1 + protowire.SizeBytes(n)
}

// requestOverhead is the size of UpsertRequest's other fields.
func requestOverhead(namespace string) int {
	if namespace == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(namespace))
}
