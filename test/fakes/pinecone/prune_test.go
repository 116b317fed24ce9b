package pinecone_test

import (
	"fmt"
	"slices"
	"testing"

	pc "github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc/codes"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

// listAll pages through prefix with the given page limit (nil: the server's default).
func listAll(t *testing.T, conn *pc.IndexConnection, prefix string, limit *uint32) ([]string, int) {
	t.Helper()
	var ids []string
	var token *string
	pages := 0
	for {
		res, err := conn.ListVectors(ctx(t), &pc.ListVectorsRequest{Prefix: &prefix, Limit: limit, PaginationToken: token})
		if err != nil {
			t.Fatalf("list page %d: %v", pages, err)
		}
		pages++
		for _, id := range res.VectorIds {
			ids = append(ids, *id)
		}
		if token = res.NextPaginationToken; token == nil {
			return ids, pages
		}
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
	}
}

// TestListLimitsAndPagination: List is strict like Pinecone's (1..100 ids a page, 100 by
// default), pages in sorted order without gaps or repeats, and only sees its namespace and prefix.
func TestListLimitsAndPagination(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns1")
	other := connect(t, s, "docs", "ns2")
	for from := 0; from < 250; from += 50 {
		if _, err := conn.UpsertVectors(ctx(t), vectors(t, "q1.", from, 50, dim)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "q2.", 0, 7, dim)); err != nil {
		t.Fatal(err)
	}
	if _, err := other.UpsertVectors(ctx(t), vectors(t, "q1.", 0, 5, dim)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		limit     *uint32
		wantPages int
	}{{nil, 3}, {ptr(100), 3}, {ptr(7), 36}, {ptr(1), 250}} {
		ids, pages := listAll(t, conn, "q1.", tc.limit)
		if len(ids) != 250 || !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != 250 || pages != tc.wantPages {
			t.Errorf("limit %v: %d ids in %d pages (sorted %v), want 250 in %d", tc.limit, len(ids), pages, slices.IsSorted(ids), tc.wantPages)
		}
		for _, id := range ids {
			if id[:3] != "q1." {
				t.Fatalf("limit %v: listed %q outside the prefix", tc.limit, id)
			}
		}
	}
	if ids, _ := listAll(t, other, "q1.", nil); len(ids) != 5 {
		t.Errorf("ns2 lists %d ids, want its own 5", len(ids))
	}
	for _, bad := range []uint32{0, 101, 1000} {
		prefix := "q1."
		_, err := conn.ListVectors(ctx(t), &pc.ListVectorsRequest{Prefix: &prefix, Limit: &bad})
		if code(err) != codes.InvalidArgument {
			t.Errorf("limit %d: %v, want InvalidArgument", bad, err)
		}
	}
	prefix, garbage := "q1.", "!!not-a-token"
	if _, err := conn.ListVectors(ctx(t), &pc.ListVectorsRequest{Prefix: &prefix, PaginationToken: &garbage}); code(err) != codes.InvalidArgument {
		t.Errorf("bad token: %v, want InvalidArgument", err)
	}
}

// TestDeleteLimits: Delete by ids takes at most 1,000 non-empty ids and refuses the whole request
// otherwise (nothing deleted); ids not stored are no error; Stats count what went.
func TestDeleteLimits(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns1")
	for from := 0; from < 1200; from += 400 {
		if _, err := conn.UpsertVectors(ctx(t), vectors(t, "d.", from, 400, dim)); err != nil {
			t.Fatal(err)
		}
	}
	idx := s.Index("docs")
	ids := make([]string, 1001)
	for i := range ids {
		ids[i] = fmt.Sprintf("d.%03d", i)
	}
	if err := conn.DeleteVectorsById(ctx(t), ids); code(err) != codes.InvalidArgument {
		t.Fatalf("1,001 ids: %v, want InvalidArgument", err)
	}
	if err := conn.DeleteVectorsById(ctx(t), []string{"d.000", ""}); code(err) != codes.InvalidArgument {
		t.Fatalf("empty id: %v, want InvalidArgument", err)
	}
	if idx.Count() != 1200 {
		t.Fatalf("a refused delete removed vectors: %d left", idx.Count())
	}
	if err := conn.DeleteVectorsById(ctx(t), ids[:1000]); err != nil {
		t.Fatalf("1,000 ids: %v", err)
	}
	if err := conn.DeleteVectorsById(ctx(t), []string{"d.1000", "d.1000", "never-stored"}); err != nil {
		t.Fatal(err)
	}
	st := idx.Stats()
	if idx.Count() != 199 || st.DeletedVectors != 1001 || st.MaxDeleteBatch != 1000 || st.Calls["Delete"] != 4 {
		t.Errorf("count %d, stats %+v; want 199 left, 1001 deleted, max batch 1000, 4 delete calls", idx.Count(), st)
	}
}

// TestFailNext: injected failures hit only the method named, n times.
func TestFailNext(t *testing.T) {
	s := start(t, fake.Options{})
	conn := connect(t, s, "docs", "ns1")
	if _, err := conn.UpsertVectors(ctx(t), vectors(t, "f.", 0, 3, dim)); err != nil {
		t.Fatal(err)
	}
	s.Index("docs").FailNext("Delete", 2, codes.Unavailable)
	prefix := "f."
	if _, err := conn.ListVectors(ctx(t), &pc.ListVectorsRequest{Prefix: &prefix}); err != nil {
		t.Fatalf("list hit by a delete failure: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := conn.DeleteVectorsById(ctx(t), []string{"f.000"}); code(err) != codes.Unavailable {
			t.Fatalf("delete %d: %v, want Unavailable", i, err)
		}
	}
	if err := conn.DeleteVectorsById(ctx(t), []string{"f.000"}); err != nil {
		t.Fatalf("third delete: %v", err)
	}
	if s.Index("docs").Count() != 2 {
		t.Errorf("%d vectors left, want 2", s.Index("docs").Count())
	}
}

func ptr(v uint32) *uint32 { return &v }
