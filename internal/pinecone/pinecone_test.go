package pinecone

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

const testKey = "pc-test-key"

func startFake(t testing.TB, opts fakepinecone.Options) *fakepinecone.Server {
	t.Helper()
	if opts.Indexes == nil {
		opts.Indexes = map[string]int{"docs": 8}
	}
	if opts.APIKeys == nil {
		opts.APIKeys = []string{testKey}
	}
	srv, err := fakepinecone.Start(opts)
	if err != nil {
		t.Fatalf("start fake pinecone: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func newUpserter(t testing.TB, cfg Config) *Upserter {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	if cfg.BaseBackoff == 0 {
		cfg.BaseBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	}
	u, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = u.Close() })
	return u
}

// vecs makes n vectors of dims values whose content derives from the id, with some metadata.
func vecs(prefix string, n, dims int) []Vector {
	out := make([]Vector, n)
	for i := range out {
		v := make([]float32, dims)
		for j := range v {
			v[j] = float32(i) + float32(j)/float32(dims)
		}
		md, _ := structpb.NewStruct(map[string]any{"row": float64(i), "text": fmt.Sprintf("row %d", i)})
		out[i] = Vector{ID: fmt.Sprintf("%s.%d", prefix, i), Values: v, Metadata: md}
	}
	return out
}

func TestNewResolvesHostAndDimensionFromControlPlane(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{Indexes: map[string]int{"docs": 8, "wide": 1536}})
	u := newUpserter(t, Config{Index: "wide", ControlHost: srv.ControlURL()})
	if u.Dimension() != 1536 || u.Host() != srv.Index("wide").Host() {
		t.Fatalf("dimension %d host %s, want 1536 at %s", u.Dimension(), u.Host(), srv.Index("wide").Host())
	}
	// The http:// host means plaintext gRPC: an upsert reaches the fake.
	if _, err := u.Upsert(context.Background(), "ns", vecs("a", 3, 1536)); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	if n := srv.Index("wide").Count(); n != 3 {
		t.Fatalf("index holds %d vectors, want 3", n)
	}
}

func TestNewWithHostTakesDimensionFromDataPlane(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	// No control plane at all: only the data plane is asked.
	u := newUpserter(t, Config{Host: srv.Index("docs").Host(), ControlHost: "http://127.0.0.1:1"})
	if u.Dimension() != 8 {
		t.Fatalf("dimension %d, want 8", u.Dimension())
	}
	if n := srv.Index("docs").Stats().Calls["DescribeIndexStats"]; n != 1 {
		t.Fatalf("DescribeIndexStats called %d times, want 1", n)
	}
}

func TestNewPermanentErrors(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	cases := []struct {
		name   string
		cfg    Config
		reason string
	}{
		{"missing index", Config{Index: "nope", ControlHost: srv.ControlURL()}, worker.ReasonIndexNotFound},
		{"bad key on control plane", Config{APIKey: "wrong", Index: "docs", ControlHost: srv.ControlURL()}, worker.ReasonUnauthorized},
		{"bad key on data plane", Config{APIKey: "wrong", Host: srv.Index("docs").Host()}, worker.ReasonUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.MaxRetries = 5
			if tc.cfg.APIKey == "" {
				tc.cfg.APIKey = testKey
			}
			_, err := New(context.Background(), tc.cfg)
			var perm *PermanentError
			if !errors.As(err, &perm) || perm.Reason != tc.reason {
				t.Fatalf("err = %v, want PermanentError %s", err, tc.reason)
			}
			if strings.Contains(err.Error(), "wrong") && tc.cfg.APIKey == "wrong" {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestUpsertExactCountAfterTransientFailures(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), BatchSize: 100, MaxInFlight: 3})
	ctx := context.Background()

	idx.FailNextUpserts(4, codes.Unavailable)
	a := vecs("239", 1234, 8)
	if _, err := u.Upsert(ctx, "v2", a); err != nil {
		t.Fatalf("Upsert v2: %v", err)
	}
	idx.FailNextUpserts(3, codes.ResourceExhausted)
	b := vecs("240", 321, 8)
	if _, err := u.Upsert(ctx, "", b); err != nil {
		t.Fatalf("Upsert default: %v", err)
	}
	idx.FailNextUpserts(2, codes.Internal)
	if _, err := u.Upsert(ctx, "v2", a[:50]); err != nil { // a re-run overwrites
		t.Fatalf("re-Upsert: %v", err)
	}

	for ns, want := range map[string][]Vector{"v2": a, "": b} {
		got := idx.Vectors(ns)
		if len(got) != len(want) {
			t.Fatalf("namespace %q holds %d vectors, want %d", ns, len(got), len(want))
		}
		for _, v := range want {
			g, ok := got[v.ID]
			if !ok || len(g.Values) != 8 || g.Values[3] != v.Values[3] || g.Metadata["text"] != v.Metadata.AsMap()["text"] {
				t.Fatalf("namespace %q: vector %s stored as %+v", ns, v.ID, g)
			}
		}
	}
	st, fs := u.Stats(), idx.Stats()
	if st.Vectors != 1234+321+50 || fs.UpsertedVectors != st.Vectors {
		t.Errorf("vectors: upserter %d, fake %d, want %d", st.Vectors, fs.UpsertedVectors, 1234+321+50)
	}
	if st.Retries != 9 || st.Requests != fs.UpsertCalls+9 {
		t.Errorf("stats %+v, fake accepted %d calls; want 9 retries", st, fs.UpsertCalls)
	}
	if fs.MaxUpsertBatch != 100 {
		t.Errorf("largest batch %d, want 100", fs.MaxUpsertBatch)
	}
	if fs.DuplicateUpserts != 50 {
		t.Errorf("%d overwritten vectors, want only the 50 re-upserted", fs.DuplicateUpserts)
	}
}

func TestBatchesStayWithinRequestSize(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{Indexes: map[string]int{"docs": 1536}, DiscardValues: true})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), BatchSize: 1000})
	// About 6 KB of values and 30 KB of metadata each: 2 MB holds about 55.
	in := vecs("big", 300, 1536)
	for i := range in {
		in[i].Metadata.Fields["text"] = structpb.NewStringValue(strings.Repeat("x", 30_000+i))
	}
	if _, err := u.Upsert(context.Background(), "ns", in); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	fs := idx.Stats()
	if idx.Count() != 300 {
		t.Fatalf("index holds %d vectors, want 300", idx.Count())
	}
	if fs.MaxUpsertBytes > RequestBytesLimit {
		t.Fatalf("largest request %d bytes, above %d", fs.MaxUpsertBytes, RequestBytesLimit)
	}
	// Packed, not merely small: the largest request is within a vector or two of the limit.
	if one := vectorSize(in[0].ID, 1536, in[0].Metadata); fs.MaxUpsertBytes < RequestBytesLimit-2*one {
		t.Errorf("largest request %d bytes: batches are packed loosely", fs.MaxUpsertBytes)
	}
	if fs.MaxUpsertBatch >= 100 {
		t.Errorf("largest batch %d vectors: the size limit did not cut batches", fs.MaxUpsertBatch)
	}
}

func TestUpsertPermanentErrors(t *testing.T) {
	cases := []struct {
		code   codes.Code
		reason string
	}{
		{codes.PermissionDenied, worker.ReasonUnauthorized},
		{codes.Unauthenticated, worker.ReasonUnauthorized},
		{codes.NotFound, worker.ReasonIndexNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.code.String(), func(t *testing.T) {
			srv := startFake(t, fakepinecone.Options{})
			idx := srv.Index("docs")
			u := newUpserter(t, Config{Host: idx.Host(), BatchSize: 10, MaxInFlight: 1, MaxRetries: 5})
			idx.FailNextUpserts(1, tc.code)
			_, err := u.Upsert(context.Background(), "ns", vecs("p", 5, 8))
			var perm *PermanentError
			if !errors.As(err, &perm) || perm.Reason != tc.reason {
				t.Fatalf("err = %v, want PermanentError %s", err, tc.reason)
			}
			if n := idx.Stats().Calls["Upsert"]; n != 1 || u.Stats().Retries != 0 {
				t.Fatalf("%d upsert calls, %d retries; want 1 call and no retry", n, u.Stats().Retries)
			}
		})
	}
}

func TestUpsertRejectsBadVectorsBeforeSending(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host()})
	md := func(k string, v *structpb.Value) *structpb.Struct {
		return &structpb.Struct{Fields: map[string]*structpb.Value{k: v}}
	}
	// A text of n bytes in Pinecone's measure.
	text := func(n int) *structpb.Struct {
		return md("text", structpb.NewStringValue(strings.Repeat("x", n-len(`{"text":""}`))))
	}
	cases := map[string]struct {
		v      Vector
		reason string
	}{
		"empty id":      {Vector{ID: "", Values: make([]float32, 8)}, ReasonInvalidID},
		"long id":       {Vector{ID: strings.Repeat("i", 513), Values: make([]float32, 8)}, ReasonInvalidID},
		"invalid id":    {Vector{ID: "a\xff", Values: make([]float32, 8)}, ReasonInvalidID},
		"null":          {Vector{ID: "n", Values: make([]float32, 8), Metadata: md("k", structpb.NewNullValue())}, ReasonInvalidMetadata},
		"nested":        {Vector{ID: "n", Values: make([]float32, 8), Metadata: md("k", structpb.NewStructValue(&structpb.Struct{}))}, ReasonInvalidMetadata},
		"list of bools": {Vector{ID: "n", Values: make([]float32, 8), Metadata: md("k", structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true)}}))}, ReasonInvalidMetadata},
		// Under Pinecone's 40,960 but inside the margin: refused before sending.
		"metadata in the margin": {Vector{ID: "m", Values: make([]float32, 8), Metadata: text(MetadataLimit + 1)}, ReasonMetadataTooLarge},
		"huge metadata":          {Vector{ID: "m", Values: make([]float32, 8), Metadata: text(MaxRequestBytes)}, ReasonMetadataTooLarge},
	}
	for name, tc := range cases {
		rej, err := u.Upsert(context.Background(), "ns", []Vector{tc.v})
		if err != nil || len(rej) != 1 || rej[0].Reason != tc.reason || rej[0].Index != 0 {
			t.Errorf("%s: rejected %+v, err %v; want it rejected with %s", name, rej, err, tc.reason)
		}
	}
	if n := idx.Stats().Calls["Upsert"]; n != 0 {
		t.Fatalf("%d upsert calls, want none: vectors Pinecone would refuse are not sent", n)
	}
	// At the margin it is sent and accepted; with good vectors around a bad one, they land.
	good := vecs("g", 3, 8)
	in := append(good, Vector{ID: "edge", Values: make([]float32, 8), Metadata: text(MetadataLimit)}, Vector{ID: "", Values: make([]float32, 8)})
	rej, err := u.Upsert(context.Background(), "ns", in)
	if err != nil || len(rej) != 1 || rej[0].Index != 4 {
		t.Fatalf("rejected %+v, err %v; want only the empty id", rej, err)
	}
	if idx.Count() != 4 {
		t.Fatalf("index holds %d vectors, want 4", idx.Count())
	}
	// A wrong dimension concerns every vector: an error.
	_, err = u.Upsert(context.Background(), "ns", []Vector{{ID: "x", Values: make([]float32, 7)}})
	var perm *PermanentError
	if !errors.As(err, &perm) || perm.Reason != worker.ReasonDimension {
		t.Fatalf("wrong dimension: err = %v, want PermanentError %s", err, worker.ReasonDimension)
	}
}

func TestUpsertIsolatesRefusedVectors(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), BatchSize: 100})
	const msg = "Vector refused by the index"
	idx.RefuseVectors(func(id string) bool { return id == "v.17" || id == "v.60" }, msg)
	rej, err := u.Upsert(context.Background(), "ns", vecs("v", 100, 8))
	if err != nil {
		t.Fatalf("Upsert: %v (refused vectors must not fail the upsert)", err)
	}
	if len(rej) != 2 {
		t.Fatalf("rejected %+v, want v.17 and v.60", rej)
	}
	for _, r := range rej {
		if (r.ID != "v.17" || r.Index != 17) && (r.ID != "v.60" || r.Index != 60) || r.Reason != ReasonRefused || r.Detail != msg {
			t.Errorf("rejected %+v, want reason %s and Pinecone's message", r, ReasonRefused)
		}
	}
	if n := idx.Count(); n != 98 {
		t.Fatalf("index holds %d vectors, want the other 98", n)
	}
	if calls := idx.Stats().Calls["Upsert"]; calls > 30 {
		t.Errorf("%d upsert calls to isolate 2 of 100: not a bisection", calls)
	}

	// A refusal of a whole request (every vector alone refused) is an error, not 100 dead letters.
	idx.RefuseVectors(func(string) bool { return true }, "Namespace is read-only")
	_, err = u.Upsert(context.Background(), "ns", vecs("w", 8, 8))
	var perm *PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "Namespace is read-only") {
		t.Fatalf("err = %v, want a PermanentError with Pinecone's message", err)
	}
}

func TestInvalidArgumentOnceIsIsolatedToNothing(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), BatchSize: 10})
	idx.FailNextUpserts(1, codes.InvalidArgument)
	rej, err := u.Upsert(context.Background(), "ns", vecs("p", 10, 8))
	if err != nil || len(rej) != 0 || idx.Count() != 10 {
		t.Fatalf("rejected %v, err %v, count %d; want the halves upserted", rej, err, idx.Count())
	}
}

func TestMetadataSize(t *testing.T) {
	for _, c := range []struct {
		m    map[string]any
		want string
	}{
		{map[string]any{}, `{}`},
		{map[string]any{"a": "x"}, `{"a":"x"}`},
		{map[string]any{"n": 12.0}, `{"n":12.0}`},
		{map[string]any{"n": 1.5}, `{"n":1.5}`},
		{map[string]any{"b": true, "c": false}, `{"b":true,"c":false}`},
		{map[string]any{"l": []any{"a", "b"}}, `{"l":["a","b"]}`},
		{map[string]any{"l": []any{}}, `{"l":[]}`},
		{map[string]any{"s": "é\"\n<&>"}, `{"s":"é\"\n<&>"}`},
		{map[string]any{"s": "\x01"}, `{"s":"\u0001"}`},
	} {
		md, err := structpb.NewStruct(c.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := MetadataSize(md); got != len(c.want) {
			t.Errorf("MetadataSize(%v) = %d, want %d (%s)", c.m, got, len(c.want), c.want)
		}
	}
}

func TestUpsertRetriesAreBounded(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), MaxRetries: 2})
	idx.FailNextUpserts(100, codes.Unavailable)
	_, err := u.Upsert(context.Background(), "ns", vecs("r", 5, 8))
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 || ex.Reason() != worker.ReasonRetryableError {
		t.Fatalf("err = %v, want RetryExhaustedError after 3 attempts", err)
	}
	if n := idx.Stats().Calls["Upsert"]; n != 3 {
		t.Fatalf("%d upsert calls, want 3", n)
	}
	if idx.Count() != 0 {
		t.Fatalf("index holds %d vectors after failed upserts", idx.Count())
	}
}

func TestDataPlaneDownIsRetryable(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	host := srv.Index("docs").Host()
	_ = srv.Close()
	_, err := New(context.Background(), Config{APIKey: testKey, Host: host, MaxRetries: 1, BaseBackoff: time.Millisecond})
	var ex *RetryExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 2 {
		t.Fatalf("err = %v, want RetryExhaustedError after 2 attempts", err)
	}
}

func TestCloseAndInvalidConfig(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	u := newUpserter(t, Config{Host: srv.Index("docs").Host()})
	if _, err := u.Upsert(context.Background(), "a", vecs("c", 1, 8)); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := u.Upsert(context.Background(), "a", vecs("c", 1, 8)); err == nil {
		t.Fatal("Upsert after Close succeeded")
	}
	for name, cfg := range map[string]Config{
		"no key":      {Index: "docs"},
		"no index":    {APIKey: "k"},
		"batch 1001":  {APIKey: "k", Index: "docs", BatchSize: 1001},
		"bad host":    {APIKey: "k", Host: "http://[::1"},
		"batch below": {APIKey: "k", Index: "docs", BatchSize: -1},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestCheckHost(t *testing.T) {
	for host, ok := range map[string]bool{
		"docs-abc123.svc.aped-4627-b74a.pinecone.io": true,
		"https://docs-abc.svc.pinecone.io":           true,
		"http://127.0.0.1:5081":                      true,
		"127.0.0.1:5081":                             true,
		"http://[::1]:5081":                          true,
		"":                                           false,
		"http://":                                    false,
		"http://[::1":                                false,
		"grpc://host:1":                              false,
		"https://host/path":                          false,
		"host with space":                            false,
	} {
		if err := checkHost(host); (err == nil) != ok {
			t.Errorf("checkHost(%q) = %v, want ok=%v", host, err, ok)
		}
	}
}
