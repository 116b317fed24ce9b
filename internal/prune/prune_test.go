package prune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

func TestExceeds(t *testing.T) {
	for _, tc := range []struct {
		missing, listed int64
		max             int32
		want            bool
		minPercent      int64
	}{
		{0, 0, 10, false, 0},
		{0, 1000, 0, false, 0},
		{100, 1000, 10, false, 10}, // exactly 10 % passes
		{101, 1000, 10, true, 11},
		{1, 1000, 0, true, 1},         // 0: nothing may be deleted
		{1000, 1000, 100, false, 100}, // 100: no guard
		{1000, 1000, 99, true, 100},
		{400, 1000, 10, true, 40}, // the truncated export
		{5, 1000, 1, false, 1},
		{11, 1000, 1, true, 2},
		{1, 3, 33, true, 34},
	} {
		if got := Exceeds(tc.missing, tc.listed, tc.max); got != tc.want {
			t.Errorf("Exceeds(%d, %d, %d%%) = %v, want %v", tc.missing, tc.listed, tc.max, got, tc.want)
		}
		if got := MinPercent(tc.missing, tc.listed); got != tc.minPercent {
			t.Errorf("MinPercent(%d, %d) = %d, want %d", tc.missing, tc.listed, got, tc.minPercent)
		}
		if mp := MinPercent(tc.missing, tc.listed); Exceeds(tc.missing, tc.listed, int32(mp)) {
			t.Errorf("the override MinPercent(%d, %d) = %d still trips the guard", tc.missing, tc.listed, mp)
		}
	}
}

// TestCertain: the early stop of keeping ids never fires while the guard could still pass.
func TestCertain(t *testing.T) {
	for _, tc := range []struct {
		missing  int64
		fileKeys int
		max      int32
		want     bool
	}{
		{10, 100, 10, false}, // 10/110 = 9 %: more stored ids of the file may still come
		{12, 100, 10, true},  // 12/112 = 10.7 %: even if all 100 are stored
		{1, 0, 100, false},
		{1, 0, 0, true},
		{1000, 10, 99, true},
	} {
		if got := certain(tc.missing, tc.fileKeys, tc.max); got != tc.want {
			t.Errorf("certain(%d, %d, %d%%) = %v, want %v", tc.missing, tc.fileKeys, tc.max, got, tc.want)
		}
	}
}

func TestFileIDs(t *testing.T) {
	f := NewFileIDs()
	f.Add("ns", "q.1")
	f.Add("ns", "q.2")
	f.Add("ns", "q.1") // a duplicate row
	f.Add("other", "q.3")
	for _, tc := range []struct {
		ns, id string
		want   bool
	}{{"ns", "q.1", true}, {"ns", "q.2", true}, {"other", "q.3", true}, {"ns", "q.3", false}, {"other", "q.1", false}, {"ns", "q.10", false}} {
		if got := f.Has(tc.ns, tc.id); got != tc.want {
			t.Errorf("Has(%q, %q) = %v, want %v", tc.ns, tc.id, got, tc.want)
		}
	}
	if f.Len() != 3 {
		t.Errorf("Len %d, want 3", f.Len())
	}
	if got := strings.Join(f.Namespaces("ns", "target"), ","); got != "ns,other,target" {
		t.Errorf("Namespaces %s", got)
	}
}

func own(prefix string) ownership.Owner { return ownership.Owner{Prefix: prefix} }

type env struct {
	srv *fakepinecone.Server
	up  *pinecone.Upserter
}

func newEnv(t *testing.T) env {
	t.Helper()
	srv, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"docs": 4}, APIKeys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	up, err := pinecone.New(context.Background(), pinecone.Config{APIKey: "k", Index: "docs", ControlHost: srv.ControlURL(),
		BatchSize: 1000, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Close() })
	return env{srv: srv, up: up}
}

// store writes ids prefix0..: owned by prefix (as an ingestion with spec.sync writes them).
func (e env) store(t *testing.T, ns, prefix string, from, to int) {
	t.Helper()
	e.storeMarked(t, ns, prefix, prefix, from, to)
}

// storeMarked writes ids prefix<i> with owner marker owner ("": none, as another writer).
func (e env) storeMarked(t *testing.T, ns, prefix, owner string, from, to int) {
	t.Helper()
	var vecs []pinecone.Vector
	for i := from; i < to; i++ {
		v := pinecone.Vector{ID: fmt.Sprintf("%s%d", prefix, i), Values: []float32{1, 2, 3, float32(i)}}
		if owner != "" {
			v.Metadata, _ = structpb.NewStruct(map[string]any{ownership.Key: owner, "n": i})
		}
		vecs = append(vecs, v)
	}
	if _, err := e.up.Upsert(context.Background(), ns, vecs); err != nil {
		t.Fatal(err)
	}
}

func fileOf(ns, prefix string, from, to int) *FileIDs {
	f := NewFileIDs()
	for i := from; i < to; i++ {
		f.Add(ns, fmt.Sprintf("%s%d", prefix, i))
	}
	return f
}

// TestFindAndExecute: of 1,000 stored ids under the prefix the file keeps 950; the 50 others go
// (5 %, under the 10 % guard), in both namespaces; ids of another prefix stay.
func TestFindAndExecute(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.store(t, "ns", "q1.", 0, 1000)
	e.store(t, "ns", "q2.", 0, 30) // another ingestion's prefix
	e.store(t, "ns2", "q1.", 0, 20)
	file := fileOf("ns", "q1.", 30, 1000)
	file.Add("ns2", "q1.0")
	file.Add("ns2", "q1.1") // ns2: 18 of 20 missing
	plan, err := Find(ctx, e.up, own("q1."), file.Namespaces("ns"), file, 10)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Listed != 1020 || plan.Missing != 48 || plan.Owned != 48 || plan.LeftAlone() != 0 || plan.ListRequests != 11 || plan.FetchRequests != 2 {
		t.Fatalf("plan: listed %d missing %d owned %d left alone %d in %d pages, %d fetches; want 1020, 48, 48, 0, 11, 2",
			plan.Listed, plan.Missing, plan.Owned, plan.LeftAlone(), plan.ListRequests, plan.FetchRequests)
	}
	n, err := plan.Execute(ctx, e.up)
	if err != nil || n != 48 {
		t.Fatalf("Execute: %d, %v", n, err)
	}
	idx := e.srv.Index("docs")
	if len(idx.Vectors("ns")) != 970+30 || len(idx.Vectors("ns2")) != 2 {
		t.Fatalf("left ns %d, ns2 %d; want 1000 (970 of q1. and 30 of q2.), 2", len(idx.Vectors("ns")), len(idx.Vectors("ns2")))
	}
	for id := range idx.Vectors("ns") {
		if strings.HasPrefix(id, "q1.") && !file.Has("ns", id) {
			t.Fatalf("%s is not in the file but still stored", id)
		}
	}
}

// TestGuardStopsATruncatedFile: a file of 60 % of the rows stops at the guard, deletes nothing,
// and says by how much and how to override.
func TestGuardStopsATruncatedFile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.store(t, "ns", "q1.", 0, 1000)
	file := fileOf("ns", "q1.", 0, 600)
	plan, err := Find(ctx, e.up, own("q1."), []string{"ns"}, file, 10)
	if err != nil {
		t.Fatal(err)
	}
	if plan.toDelete != nil {
		t.Errorf("ids kept after the guard was certain to stop: %d", len(plan.toDelete["ns"]))
	}
	n, err := plan.Execute(ctx, e.up)
	var ge *GuardError
	if !errors.As(err, &ge) || n != 0 {
		t.Fatalf("Execute: %d, %v; want a GuardError and nothing deleted", n, err)
	}
	msg := err.Error()
	for _, want := range []string{"400 of the 1000 vectors", `"q1."`, "(40.0%)", "maxDeletePercent (10%)", "nothing was deleted", "at least 40"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if e.srv.Index("docs").Count() != 1000 || e.srv.Index("docs").Stats().Calls["Delete"] != 0 {
		t.Fatalf("the guard let deletes through: %d left", e.srv.Index("docs").Count())
	}
	// The override: the same file with maxDeletePercent 40 deletes the 400.
	plan, err = Find(ctx, e.up, own("q1."), []string{"ns"}, file, 40)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := plan.Execute(ctx, e.up); err != nil || n != 400 || e.srv.Index("docs").Count() != 600 {
		t.Fatalf("override: %d, %v, %d left", n, err, e.srv.Index("docs").Count())
	}
}

// TestDeleteErrors: a permanent refusal stops at once with Pinecone's message and the count so
// far; an empty prefix is refused before anything is listed.
func TestDeleteErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.store(t, "ns", "q1.", 0, 100)
	file := fileOf("ns", "q1.", 5, 100)
	plan, err := Find(ctx, e.up, own("q1."), []string{"ns"}, file, 10)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Index("docs").FailNext("Delete", 3, codes.PermissionDenied)
	n, err := plan.Execute(ctx, e.up)
	if p, ok := worker.AsPermanent(err); !ok || p.Reason != worker.ReasonUnauthorized || n != 0 || !strings.Contains(err.Error(), "injected Delete failure") {
		t.Fatalf("Execute: %d, %v; want a permanent Unauthorized error carrying Pinecone's message", n, err)
	}
	if _, err := Find(ctx, e.up, own(""), []string{"ns"}, file, 10); err == nil {
		t.Fatal("an empty prefix was accepted")
	}
	e.srv.Index("docs").FailNext("List", 1, codes.InvalidArgument)
	if _, err := Find(ctx, e.up, own("q1."), []string{"ns"}, file, 10); err == nil || !strings.Contains(err.Error(), "injected List failure") {
		t.Fatalf("Find with a refused list: %v", err)
	}
}

// TestFindLeavesOtherSourcesAlone: under A's prefix "q1." the index also holds B's vectors
// (ingested with idPrefix "q1.b-", so their ids start with A's prefix), a third writer's
// unmarked "q1.<n>" vectors, one marked with a number, and "q10.<n>" vectors (not listed at
// all). A's file dropped 5 % of its rows: exactly those are deleted; the rest is counted and
// stays, values and metadata unchanged. With adoptUnmarked the third writer's ids of A's form
// are adopted and deleted, B's still not, nor the unmarked ones of a source "q1.c-" (a valid
// prefix ending with another separator) written before the marker existed.
func TestFindLeavesOtherSourcesAlone(t *testing.T) {
	ctx := context.Background()
	for _, adopt := range []bool{false, true} {
		t.Run(fmt.Sprintf("adopt=%v", adopt), func(t *testing.T) {
			e := newEnv(t)
			e.store(t, "ns", "q1.", 0, 1000)
			e.store(t, "ns", "q1.b-", 0, 60)
			e.storeMarked(t, "ns", "q1.", "", 5000, 5030) // unmarked, of A's form
			e.storeMarked(t, "ns", "q1.x.", "", 0, 7)     // unmarked, nested form
			e.storeMarked(t, "ns", "q1.c-", "", 0, 9)     // unmarked, of source "q1.c-" (before the marker)
			e.store(t, "ns", "q10.", 0, 40)
			odd, _ := structpb.NewStruct(map[string]any{ownership.Key: 7})
			if _, err := e.up.Upsert(ctx, "ns", []pinecone.Vector{{ID: "q1.odd", Values: []float32{1, 1, 1, 1}, Metadata: odd}}); err != nil {
				t.Fatal(err)
			}
			idx := e.srv.Index("docs")
			before := idx.Vectors("ns")
			file := fileOf("ns", "q1.", 50, 1000) // rows 0..49 (5 %) removed
			plan, err := Find(ctx, e.up, ownership.Owner{Prefix: "q1.", AdoptUnmarked: adopt}, []string{"ns"}, file, 10)
			if err != nil {
				t.Fatal(err)
			}
			wantAdopted := int64(0)
			if adopt {
				wantAdopted = 30
			}
			if plan.Listed != 1000+60+30+7+9+1 || plan.Missing != 50+60+30+7+9+1 || plan.Owned != 50 || plan.Adopted != wantAdopted ||
				plan.Foreign != 61 || plan.Unmarked != 46-wantAdopted || plan.Gone != 0 {
				t.Fatalf("plan %+v", plan)
			}
			n, err := plan.Execute(ctx, e.up)
			if err != nil || n != 50+wantAdopted {
				t.Fatalf("Execute: %d, %v", n, err)
			}
			after := idx.Vectors("ns")
			for id, v := range before {
				gone := false
				switch {
				case strings.HasPrefix(id, "q1.") && !strings.HasPrefix(id, "q1.b-") && !strings.HasPrefix(id, "q1.x.") && !strings.HasPrefix(id, "q1.c-") && id != "q1.odd":
					var i int
					fmt.Sscanf(id, "q1.%d", &i)
					gone = i < 50 || (adopt && i >= 5000)
				}
				w, ok := after[id]
				if gone {
					if ok {
						t.Fatalf("%s should be deleted", id)
					}
					continue
				}
				if !ok {
					t.Fatalf("%s was deleted; it is not A's to delete", id)
				}
				if fmt.Sprint(w.Values, w.Metadata) != fmt.Sprint(v.Values, v.Metadata) {
					t.Fatalf("%s changed: %v %v -> %v %v", id, v.Values, v.Metadata, w.Values, w.Metadata)
				}
			}
		})
	}
}

// TestFindGuardCountsOnlyOwned: another source's vectors under the prefix neither trip the
// guard nor dilute it.
func TestFindGuardCountsOnlyOwned(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.store(t, "ns", "q1.", 0, 100)
	e.store(t, "ns", "q1.b-", 0, 900) // would be 90 % "missing" by prefix alone
	plan, err := Find(ctx, e.up, own("q1."), []string{"ns"}, fileOf("ns", "q1.", 5, 100), 10)
	if err != nil || plan.Guard() != nil || plan.Deletable() != 5 || plan.Foreign != 900 {
		t.Fatalf("plan %+v, err %v, guard %v", plan, err, plan.Guard())
	}
	// 20 of A's 100 gone from the file: over 10 % of A's, though only 2 % of all listed.
	plan, err = Find(ctx, e.up, own("q1."), []string{"ns"}, fileOf("ns", "q1.", 20, 100), 10)
	var ge *GuardError
	if err != nil || !errors.As(plan.Guard(), &ge) || ge.Missing != 20 || ge.Listed != 100 {
		t.Fatalf("plan %+v, err %v, guard %v", plan, err, plan.Guard())
	}
}

// TestFindParallelNamespaces: many namespaces are listed at once, with the same counts as one by
// one.
func TestFindParallelNamespaces(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	file := NewFileIDs()
	var nss []string
	for n := range 9 {
		ns := fmt.Sprintf("ns%d", n)
		nss = append(nss, ns)
		e.store(t, ns, "q1.", 0, 150)
		for i := 10; i < 150; i++ {
			file.Add(ns, fmt.Sprintf("q1.%d", i))
		}
	}
	plan, err := Find(ctx, e.up, own("q1."), nss, file, 10)
	if err != nil || plan.Listed != 9*150 || plan.Owned != 90 || plan.ListRequests != 18 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	if n, err := plan.Execute(ctx, e.up); err != nil || n != 90 {
		t.Fatalf("Execute %d, %v", n, err)
	}
}

// TestDeadline: the sync step's deadline grows with the file, from a floor.
func TestDeadline(t *testing.T) {
	for _, tc := range []struct {
		rows int64
		want time.Duration
	}{
		{0, 10 * time.Minute},
		{-5, 10 * time.Minute},
		{2000, 10 * time.Minute},                     // 40 pages, 2 checks: 11 s, rounded away
		{100000, 10*time.Minute + 620*time.Second},   // 2,000 pages, 200 checks, 20 s of reading
		{1000000, 10*time.Minute + 6200*time.Second}, // 20,000 pages, 2,000 checks, 200 s
	} {
		if got := Deadline(tc.rows); got != tc.want.Round(time.Minute) {
			t.Errorf("Deadline(%d) = %s, want %s", tc.rows, got, tc.want.Round(time.Minute))
		}
	}
	if Deadline(3000000) <= Deadline(1000000) {
		t.Error("a larger file must get more time")
	}
	// A row count from a corrupt or hostile plan must not overflow into a negative deadline.
	for _, rows := range []int64{1 << 40, 1 << 50, math.MaxInt64 / 2, math.MaxInt64} {
		if got := Deadline(rows); got < Deadline(1000000) {
			t.Errorf("Deadline(%d) = %s, less than for 1,000,000 rows", rows, got)
		}
	}
}
