package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// overlapNS is the Pinecone namespace of this test alone.
const overlapNS = "overlap-e2e"

// Two runs with one index, namespace and prefix overlap, with real Jobs: the older run A's file
// lacks 5 % of the stored rows, the newer run B's file has every row (5 % of them changed, which
// B rewrites). A reaches its sync step while B is still to write (B is created suspended) and
// waits; suspended, A holds its sync step (no Job) while B writes and B's own sync step waits
// for A; unsuspended, A is superseded and deletes nothing, and B deletes nothing either. The
// index keeps exactly B's rows: A's removed rows, which B's file still has, were never deleted.
func TestOverlappingRunsAndSuspendHoldTheSyncStep(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	ns := "sync-overlap"
	idx := st.Pinecone.Index(stack.Index)
	_, key1 := scenario(t, ns, csvgen.Options{Rows: 600, Seed: 2211, IDOffset: 7100000, MaxText: 300})
	run := func(name, key string, sync *v1alpha1.SyncSpec, suspend bool) *v1alpha1.CsvIngestion {
		o := st.LegacyIngestion(ns, name, key)
		o.Spec.Mapping.IDPrefix = "ov."
		o.Spec.Target.Pinecone.Namespace = overlapNS
		o.Spec.Sync = sync
		o.Spec.Suspend = suspend
		return apply(t, o)
	}
	day1 := run("day1", key1, &v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull}, false)
	if done := waitTerminal(t, day1, 3*time.Minute); done.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("day1: %s: %s", done.Status.Phase, done.Status.Message)
	}
	stored := idx.Vectors(overlapNS)
	orig, err := st.Object(ctx, key1)
	if err != nil {
		t.Fatal(err)
	}
	fileA, chA, err := csvgen.Mutate(orig, 0, 50, 100)
	if err != nil {
		t.Fatal(err)
	}
	fileB, chB, err := csvgen.Mutate(orig, 50, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(chA.Removed) == 0 || len(chB.Changed) == 0 || len(chB.Removed) != 0 {
		t.Fatalf("mutations: A removed %d, B changed %d removed %d", len(chA.Removed), len(chB.Changed), len(chB.Removed))
	}
	for k, data := range map[string][]byte{"exports/" + ns + "-a.csv": fileA, "exports/" + ns + "-b.csv": fileB} {
		if err := st.Upload(ctx, k, data); err != nil {
			t.Fatal(err)
		}
	}
	prune := func() *v1alpha1.SyncSpec {
		return &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](10)}
	}
	// Created in this order (by name too, should they share a second): A is the older.
	a := run("ov-a", "exports/"+ns+"-a.csv", prune(), false)
	b := run("ov-b", "exports/"+ns+"-b.csv", prune(), true)

	reason := func(o *v1alpha1.CsvIngestion) (string, string) {
		cur := get(t, o)
		if c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionMissingDeleted); c != nil {
			return c.Reason, c.Message
		}
		return "", string(cur.Status.Phase) + ": " + cur.Status.Message
	}
	waitReason := func(o *v1alpha1.CsvIngestion, want string) {
		t.Helper()
		waitFor(t, o.Name+" MissingDeleted "+want, 2*time.Minute, func() (bool, string) {
			r, msg := reason(o)
			return r == want, r + ": " + msg
		})
	}
	waitReason(a, controllers.ReasonSyncWaiting)
	if _, msg := reason(a); !strings.Contains(msg, ns+"/ov-b") {
		t.Fatalf("A waits, but not for B: %s", msg)
	}
	update(t, a, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	waitReason(a, controllers.ReasonSyncSuspended)
	update(t, b, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	// B writes its changed rows, then its sync step waits for the older A, held.
	waitReason(b, controllers.ReasonSyncWaiting)
	cur := get(t, a)
	if cur.Status.Phase != v1alpha1.PhaseProcessingChunks || hasJob(t, ns, worker.SyncJobName(a.Name)) {
		t.Fatalf("suspended A: phase %s, sync Job %v", cur.Status.Phase, hasJob(t, ns, worker.SyncJobName(a.Name)))
	}
	waitEvents(t, a, controllers.ReasonSyncWaiting, controllers.ReasonSyncSuspended)

	update(t, a, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	doneA := waitTerminal(t, a, 2*time.Minute)
	if r, msg := reason(a); doneA.Status.Phase != v1alpha1.PhaseCompleted || r != controllers.ReasonSuperseded || !strings.Contains(msg, ns+"/ov-b") ||
		doneA.Status.Records.Deleted != 0 || hasJob(t, ns, worker.SyncJobName(a.Name)) {
		t.Fatalf("A: %s, MissingDeleted %s: %s, deleted %d", doneA.Status.Phase, r, msg, doneA.Status.Records.Deleted)
	}
	doneB := waitTerminal(t, b, 2*time.Minute)
	if r, msg := reason(b); doneB.Status.Phase != v1alpha1.PhaseCompleted || r != "Deleted" || doneB.Status.Records.Deleted != 0 {
		t.Fatalf("B: %s, MissingDeleted %s: %s, deleted %d", doneB.Status.Phase, r, msg, doneB.Status.Records.Deleted)
	}
	after := idx.Vectors(overlapNS)
	if len(after) != len(stored) {
		t.Fatalf("%d vectors after, want %d (B's file has every row)", len(after), len(stored))
	}
	for id := range stored {
		if _, ok := after[id]; !ok {
			t.Fatalf("vector %s, a row of the newer file, was deleted", id)
		}
	}
	for _, id := range chA.Removed {
		if _, ok := after["ov."+id]; !ok {
			t.Fatalf("row %s, gone from the older file only, was deleted", id)
		}
	}
}

// hasJob reports whether Job ns/name exists.
func hasJob(t *testing.T, ns, name string) bool {
	t.Helper()
	err := st.Cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &batchv1.Job{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}
