package e2e

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// ownerNS is the Pinecone namespace of this test alone.
const ownerNS = "owners-e2e"

// Three writers share one namespace: source A (idPrefix "q1.", 2,000 rows), source B (another
// ingestion, idPrefix "q1.b-": every id of it starts with A's raw prefix, as "q10…" starts with
// "q1"), and a third writer that upserts unmarked vectors of A's very id form ("q1.<n>")
// through the Pinecone API. A's next file drops 5 % of its rows and one row fails (empty text):
// the run ends PartiallyCompleted and its sync step deletes exactly the removed rows' vectors;
// the failed row keeps its vector, B's and the third writer's vectors are untouched (ids,
// values, metadata), and A's status counts the ones it left alone.
func TestDeleteMissingDeletesOnlyItsOwn(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	ns := "sync-owner"
	idx := st.Pinecone.Index(stack.Index)
	idx.SetDiscardValues(false)
	t.Cleanup(func() { idx.SetDiscardValues(true) })

	statsA, keyA := scenario(t, ns, csvgen.Options{Rows: 2000, Seed: 2201, IDOffset: 7000000, MaxText: 400})
	var bufB bytes.Buffer
	statsB, err := csvgen.Write(&bufB, csvgen.Options{Rows: 300, Seed: 2202, IDOffset: 8000000, MaxText: 400})
	if err != nil {
		t.Fatal(err)
	}
	keyB := "exports/" + ns + "-b.csv"
	if err := st.Upload(ctx, keyB, bufB.Bytes()); err != nil {
		t.Fatal(err)
	}
	source := func(name, key, prefix string, sync *v1alpha1.SyncSpec) *v1alpha1.CsvIngestion {
		o := st.LegacyIngestion(ns, name, key)
		o.Spec.Mapping.IDPrefix = prefix
		o.Spec.Target.Pinecone.Namespace = ownerNS
		o.Spec.Sync = sync
		return o
	}
	for _, o := range []*v1alpha1.CsvIngestion{
		source("a-day1", keyA, "q1.", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}),
		source("b-day1", keyB, "q1.b-", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}),
	} {
		apply(t, o)
		if done := waitTerminal(t, o, 5*time.Minute); done.Status.Phase != v1alpha1.PhaseCompleted {
			t.Fatalf("%s: %s: %s", o.Name, done.Status.Phase, done.Status.Message)
		}
	}

	// The third writer: unmarked vectors "q1.<n>" with n outside A's ids.
	up, err := pinecone.New(ctx, pinecone.Config{APIKey: stack.PineconeKey, Host: idx.Host(), Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	var third []pinecone.Vector
	for i := range 50 {
		md, _ := structpb.NewStruct(map[string]any{"writer": "legacy-cron", "n": i})
		id := fmt.Sprintf("q1.%d", 9000000+i)
		third = append(third, pinecone.Vector{ID: id, Values: fakeopenai.Vector("third writer "+id, st.Opts.Dimensions), Metadata: md})
	}
	if rejected, err := up.Upsert(ctx, ownerNS, third); err != nil || len(rejected) > 0 {
		t.Fatalf("third writer: rejected %+v, %v", rejected, err)
	}
	_ = up.Close()

	before := idx.Vectors(ownerNS)
	var nA, nB int
	for id, v := range before {
		switch v.Metadata[ownership.Key] {
		case "q1.":
			nA++
		case "q1.b-":
			nB++
		}
		if !strings.HasPrefix(id, "q1.") {
			t.Fatalf("unexpected id %s in %s", id, ownerNS)
		}
	}
	if int64(nA) != statsA.Good || int64(nB) != statsB.Good || len(before) != nA+nB+50 {
		t.Fatalf("before: %d of A (want %d), %d of B (want %d), %d in all", nA, statsA.Good, nB, statsB.Good, len(before))
	}

	// Day 2 of A: 5 % of the rows removed, one row's text emptied (it fails, with its id).
	orig, err := st.Object(ctx, keyA)
	if err != nil {
		t.Fatal(err)
	}
	day2, ch, err := csvgen.Mutate(orig, 0, 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	day2, failedID := emptyOneText(t, day2, 7)
	keyA2 := "exports/" + ns + "-day2.csv"
	if err := st.Upload(ctx, keyA2, day2); err != nil {
		t.Fatal(err)
	}
	removed := map[string]bool{}
	for _, id := range ch.Removed {
		removed["q1."+id] = true
	}
	if len(removed) != int(statsA.Good)/20 {
		t.Fatalf("%d rows removed, want 5 %% of %d", len(removed), statsA.Good)
	}
	a2 := source("a-day2", keyA2, "q1.", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](10)})
	apply(t, a2)
	done := waitTerminal(t, a2, 5*time.Minute)
	c := meta.FindStatusCondition(done.Status.Conditions, v1alpha1.ConditionMissingDeleted)
	r := done.Status.Records
	if done.Status.Phase != v1alpha1.PhasePartiallyCompleted || r.Failed != 1 || c == nil || c.Status != metav1.ConditionTrue ||
		r.Deleted != int64(len(removed)) || r.LeftAlone != int64(nB+50) {
		t.Fatalf("A's sync run: %s, records %+v, MissingDeleted %+v: %s; want PartiallyCompleted, 1 failed, %d deleted, %d left alone",
			done.Status.Phase, r, c, done.Status.Message, len(removed), nB+50)
	}
	want := fmt.Sprintf("%d vectors under the prefix belong to another source; left alone (50 of them carry no owner marker", nB+50)
	if !strings.Contains(c.Message, want) {
		t.Fatalf("MissingDeleted message %q lacks %q", c.Message, want)
	}
	waitEvents(t, a2, "Deleted")

	after := idx.Vectors(ownerNS)
	for id, v := range before {
		w, ok := after[id]
		if removed[id] {
			if ok {
				t.Fatalf("removed row's vector %s is still stored", id)
			}
			continue
		}
		if !ok {
			t.Fatalf("vector %s (owner %v) was deleted", id, v.Metadata[ownership.Key])
		}
		if v.Metadata[ownership.Key] == "q1." {
			continue // A's own rows may be rewritten
		}
		if !slices.Equal(v.Values, w.Values) || fmt.Sprint(v.Metadata) != fmt.Sprint(w.Metadata) {
			t.Fatalf("vector %s of another writer changed: %v %v -> %v %v", id, v.Values[:2], v.Metadata, w.Values[:2], w.Metadata)
		}
	}
	if _, ok := after["q1."+failedID]; !ok {
		t.Fatalf("the failed row's vector q1.%s was deleted", failedID)
	}
	if len(after) != len(before)-len(removed) {
		t.Fatalf("%d vectors after, want %d", len(after), len(before)-len(removed))
	}
}

// emptyOneText blanks the text of data row n of a CSV (its row then fails with empty_text) and
// returns the file and the row's id.
func emptyOneText(t *testing.T, data []byte, n int) ([]byte, string) {
	t.Helper()
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	text := slices.Index(rows[0], "formatted_text")
	rows[n+1][text] = "  "
	var out bytes.Buffer
	w := csv.NewWriter(&out)
	if err := w.WriteAll(rows); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), rows[n+1][0]
}
