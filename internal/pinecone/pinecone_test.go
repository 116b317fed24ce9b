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
	if err := u.Upsert(context.Background(), "ns", vecs("a", 3, 1536)); err != nil {
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
	if err := u.Upsert(ctx, "v2", a); err != nil {
		t.Fatalf("Upsert v2: %v", err)
	}
	idx.FailNextUpserts(3, codes.ResourceExhausted)
	b := vecs("240", 321, 8)
	if err := u.Upsert(ctx, "", b); err != nil {
		t.Fatalf("Upsert default: %v", err)
	}
	idx.FailNextUpserts(2, codes.Internal)
	if err := u.Upsert(ctx, "v2", a[:50]); err != nil { // a re-run overwrites
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
	if err := u.Upsert(context.Background(), "ns", in); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	fs := idx.Stats()
	if idx.Count() != 300 {
		t.Fatalf("index holds %d vectors, want 300", idx.Count())
	}
	if fs.MaxUpsertBytes > MaxRequestBytes {
		t.Fatalf("largest request %d bytes, above %d", fs.MaxUpsertBytes, MaxRequestBytes)
	}
	// Packed, not merely small: the largest request is within a vector or two of the limit.
	if one := vectorSize(in[0].ID, 1536, in[0].Metadata); fs.MaxUpsertBytes < MaxRequestBytes-2*one {
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
		{codes.InvalidArgument, worker.ReasonPermanentError},
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
			err := u.Upsert(context.Background(), "ns", vecs("p", 5, 8))
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
	good := vecs("g", 3, 8)
	cases := map[string]struct {
		v      Vector
		reason string
	}{
		"wrong dimension": {Vector{ID: "x", Values: make([]float32, 7)}, worker.ReasonDimension},
		"empty id":        {Vector{ID: "", Values: make([]float32, 8)}, worker.ReasonPermanentError},
		"long id":         {Vector{ID: strings.Repeat("i", 513), Values: make([]float32, 8)}, worker.ReasonPermanentError},
		"huge metadata": {Vector{ID: "m", Values: make([]float32, 8), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"text": structpb.NewStringValue(strings.Repeat("x", MaxRequestBytes))}}}, worker.ReasonPermanentError},
	}
	for name, tc := range cases {
		err := u.Upsert(context.Background(), "ns", append(good[:2:2], tc.v))
		var perm *PermanentError
		if !errors.As(err, &perm) || perm.Reason != tc.reason {
			t.Errorf("%s: err = %v, want PermanentError %s", name, err, tc.reason)
		}
	}
	if n := idx.Stats().Calls["Upsert"]; n != 0 {
		t.Fatalf("%d upsert calls, want none: a bad batch is refused whole, before sending", n)
	}
}

func TestUpsertRetriesAreBounded(t *testing.T) {
	srv := startFake(t, fakepinecone.Options{})
	idx := srv.Index("docs")
	u := newUpserter(t, Config{Host: idx.Host(), MaxRetries: 2})
	idx.FailNextUpserts(100, codes.Unavailable)
	err := u.Upsert(context.Background(), "ns", vecs("r", 5, 8))
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
	if err := u.Upsert(context.Background(), "a", vecs("c", 1, 8)); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := u.Upsert(context.Background(), "a", vecs("c", 1, 8)); err == nil {
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
