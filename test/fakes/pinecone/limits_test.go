package pinecone_test

import (
	"strings"
	"testing"

	pc "github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

// textOfSize is metadata {"text": "x…"} of exactly n bytes by the fake's measure.
func textOfSize(n int) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{"text": structpb.NewStringValue(strings.Repeat("x", n-len(`{"text":""}`)))}}
}

func TestFakeEnforcesPineconeLimits(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns")
	vec := func(id string, md *structpb.Struct) *pc.Vector {
		v := values(1, dim)
		return &pc.Vector{Id: id, Values: &v, Metadata: md}
	}
	md := func(m map[string]*structpb.Value) *structpb.Struct { return &structpb.Struct{Fields: m} }
	list := func(vs ...*structpb.Value) *structpb.Value {
		return structpb.NewListValue(&structpb.ListValue{Values: vs})
	}
	cases := []struct {
		name string
		vecs []*pc.Vector
		want string // "" accepted, else part of the InvalidArgument message
	}{
		{"metadata at the limit", []*pc.Vector{vec("a", textOfSize(fake.MaxMetadataBytes))}, ""},
		{"metadata a byte over", []*pc.Vector{vec("a", textOfSize(fake.MaxMetadataBytes+1))}, "exceeds the limit of 40960 bytes"},
		// 12 is "12.0" as a float: 2 bytes more than encoding/json writes.
		{"integral number measured as float", []*pc.Vector{vec("a", func() *structpb.Struct {
			m := textOfSize(fake.MaxMetadataBytes - len(`,"n":12.0`) + 1)
			m.Fields["n"] = structpb.NewNumberValue(12)
			return m
		}())}, "exceeds the limit"},
		{"null", []*pc.Vector{vec("a", md(map[string]*structpb.Value{"k": structpb.NewNullValue()}))}, "null"},
		{"nested", []*pc.Vector{vec("a", md(map[string]*structpb.Value{"k": structpb.NewStructValue(md(nil))}))}, "nested"},
		{"list of numbers", []*pc.Vector{vec("a", md(map[string]*structpb.Value{"k": list(structpb.NewNumberValue(1))}))}, "list of strings"},
		{"list of strings", []*pc.Vector{vec("a", md(map[string]*structpb.Value{"k": list(structpb.NewStringValue("x"))}))}, ""},
		{"id of 512 bytes", []*pc.Vector{vec(strings.Repeat("i", 512), nil)}, ""},
		{"id of 513 bytes", []*pc.Vector{vec(strings.Repeat("i", 513), nil)}, "maximum length of 512"},
	}
	for _, c := range cases {
		_, err := conn.UpsertVectors(ctx(t), c.vecs)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want accepted", c.name, err)
		case c.want != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want InvalidArgument with %q", c.name, err, c.want)
		}
	}

	// 2 MB decimal: 60 vectors of 34 KB of metadata pass 2,000,000 bytes (but not 2 MiB).
	var big []*pc.Vector
	for i := range 60 {
		big = append(big, vec(strings.Repeat("b", 10)+string(rune('A'+i)), textOfSize(34_000)))
	}
	if _, err := conn.UpsertVectors(ctx(t), big); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "2MB") {
		t.Errorf("request over 2,000,000 bytes: %v, want InvalidArgument", err)
	}

	long := connect(t, s, "docs", strings.Repeat("n", fake.MaxNamespaceBytes+1))
	if _, err := long.UpsertVectors(ctx(t), []*pc.Vector{vec("a", nil)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("namespace of 513 bytes: %v, want InvalidArgument", err)
	}
}
