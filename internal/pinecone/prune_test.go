package pinecone

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

func TestListPageAndDeleteIDs(t *testing.T) {
	ctx := context.Background()
	srv := startFake(t, fakepinecone.Options{})
	u := newUpserter(t, Config{Index: "docs", ControlHost: srv.ControlURL(), BatchSize: 1000})
	if _, err := u.Upsert(ctx, "ns", vecs("q7", 2500, 8)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Upsert(ctx, "ns", vecs("q8", 10, 8)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	token, pages := "", 0
	for {
		page, next, err := u.ListPage(ctx, "ns", "q7.", token)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > MaxListLimit {
			t.Fatalf("page of %d ids", len(page))
		}
		ids, token, pages = append(ids, page...), next, pages+1
		if token == "" {
			break
		}
	}
	if len(ids) != 2500 || pages != 25 || u.Stats().Lists != 25 {
		t.Fatalf("listed %d ids in %d pages (%d requests), want 2500 in 25", len(ids), pages, u.Stats().Lists)
	}

	// A transient failure is retried; the delete goes out in batches of at most 1,000.
	srv.Index("docs").FailNext("Delete", 1, codes.Unavailable)
	n, err := u.DeleteIDs(ctx, "ns", ids)
	if err != nil || n != 2500 {
		t.Fatalf("DeleteIDs: %d, %v", n, err)
	}
	st := srv.Index("docs").Stats()
	if st.MaxDeleteBatch != 1000 || st.DeletedVectors != 2500 || u.Stats().Deletes != 4 || srv.Index("docs").Count() != 10 {
		t.Fatalf("fake %+v, client deletes %d, %d left; want batches of 1000, 3 requests + 1 retry, 10 left", st, u.Stats().Deletes, srv.Index("docs").Count())
	}
}

func TestDeleteIDsPermanentFailsFast(t *testing.T) {
	ctx := context.Background()
	srv := startFake(t, fakepinecone.Options{})
	u := newUpserter(t, Config{Index: "docs", ControlHost: srv.ControlURL()})
	ids := make([]string, 1500)
	for i := range ids {
		ids[i] = fmt.Sprintf("x.%d", i)
	}
	srv.Index("docs").FailNext("Delete", 5, codes.PermissionDenied)
	n, err := u.DeleteIDs(ctx, "ns", ids)
	perm, ok := worker.AsPermanent(err)
	if !ok || perm.Reason != worker.ReasonUnauthorized || n != 0 || u.Stats().Deletes != 1 {
		t.Fatalf("DeleteIDs: %d, %v (%d requests); want a permanent Unauthorized error after one request", n, err, u.Stats().Deletes)
	}
	srv.Index("docs").FailNext("List", 5, codes.InvalidArgument)
	_, _, err = u.ListPage(ctx, "ns", "x.", "")
	if err == nil || u.Stats().Lists != 1 {
		t.Fatalf("ListPage: %v after %d requests; want a permanent error after one", err, u.Stats().Lists)
	}
	if _, ok := worker.AsPermanent(err); !ok {
		t.Fatalf("ListPage error %v is not permanent", err)
	}
}
