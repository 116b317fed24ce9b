package pinecone

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestSizeMatchesGeneratedMessage builds the real UpsertRequest (registered by go-pinecone's
// generated code) and checks the computed size against proto.Size, across varint boundaries.
func TestSizeMatchesGeneratedMessage(t *testing.T) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName("UpsertRequest")
	if err != nil {
		t.Fatalf("UpsertRequest not registered: %v", err)
	}
	md, err := structpb.NewStruct(map[string]any{"text": strings.Repeat("é", 100), "n": 3.5, "ok": true, "tags": []any{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ns   string
		vecs []Vector
	}{
		{"", []Vector{{ID: "a", Values: make([]float32, 8)}}},
		{"v2", []Vector{{ID: "239.1", Values: make([]float32, 1536), Metadata: md}}},
		{strings.Repeat("n", 200), []Vector{
			{ID: strings.Repeat("i", 127), Values: make([]float32, 31)},
			{ID: strings.Repeat("i", 128), Values: make([]float32, 32), Metadata: &structpb.Struct{}},
			{ID: strings.Repeat("i", 512), Values: make([]float32, 3072), Metadata: md},
			{ID: "big", Values: make([]float32, 4), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				"t": structpb.NewStringValue(strings.Repeat("x", 40_000))}}},
		}},
	}
	for i, tc := range cases {
		m := mt.New()
		fields := m.Descriptor().Fields()
		list := m.Mutable(fields.ByName("vectors")).List()
		want := requestOverhead(tc.ns)
		for _, v := range tc.vecs {
			pv := list.NewElement().Message()
			vf := pv.Descriptor().Fields()
			pv.Set(vf.ByName("id"), protoreflect.ValueOfString(v.ID))
			vals := pv.Mutable(vf.ByName("values")).List()
			for j := range v.Values {
				vals.Append(protoreflect.ValueOfFloat32(float32(j) * 1.5))
			}
			if v.Metadata != nil {
				pv.Set(vf.ByName("metadata"), protoreflect.ValueOfMessage(v.Metadata.ProtoReflect()))
			}
			list.Append(protoreflect.ValueOfMessage(pv))
			want += vectorSize(v.ID, len(v.Values), v.Metadata)
		}
		if tc.ns != "" {
			m.Set(fields.ByName("namespace"), protoreflect.ValueOfString(tc.ns))
		}
		if got := proto.Size(m.Interface()); got != want {
			t.Errorf("case %d: proto.Size = %d, computed %d", i, got, want)
		}
	}
}
