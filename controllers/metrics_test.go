package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// series is one gathered sample: its labels rendered as k=v,… in name order.
type series map[string]float64

// gather reads one metric family from the manager's registry (what /metrics serves).
func gather(t *testing.T, name string) series {
	t.Helper()
	out, err := gatherErr(name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The counters as this test binary started, before any manager ran or any chunk finished.
var (
	chunksAtStart, chunksAtStartErr = gatherErr("vectordb_chunks_finished_total")
	rowsAtStart, rowsAtStartErr     = gatherErr("vectordb_rows_total")
)

func gatherErr(name string) (series, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return nil, err
	}
	out := series{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var kv []string
			for _, l := range m.GetLabel() {
				kv = append(kv, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(kv)
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[strings.Join(kv, ",")] = v
		}
	}
	return out, nil
}

// setStatus writes obj's status as a controller would have before a restart.
func setStatus(t *testing.T, obj *v1alpha1.CsvIngestion, st v1alpha1.CsvIngestionStatus) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := get(t, obj)
		cur.Status = st
		return cluster.Client.Status().Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatalf("status of %s: %v", obj.Name, err)
	}
}

func phaseGauges(t *testing.T) map[string]float64 {
	out := map[string]float64{}
	for k, v := range gather(t, "vectordb_ingestions") {
		out[strings.TrimPrefix(k, "phase=")] = v
	}
	return out
}

func wantPhases(want map[string]float64) func(got map[string]float64) (bool, string) {
	return func(got map[string]float64) (bool, string) {
		for _, ph := range []string{"Pending", "Planning", "ProcessingChunks", "Completed", "PartiallyCompleted", "Failed", "Cancelled"} {
			if got[ph] != want[ph] {
				return false, fmt.Sprintf("vectordb_ingestions %v, want %v", got, want)
			}
		}
		return true, ""
	}
}

// The gauges come from the cache, not from what this process happened to write: a manager that
// starts finds finished ingestions counted by phase and a stuck one with its real last progress,
// old enough for VectorDBIngestionStalled; one deleted while no manager ran is gone after the
// next start.
func TestGaugesAfterRestart(t *testing.T) {
	ns := newNamespace(t)
	long := metav1.NewTime(time.Now().Add(-3 * time.Hour).Truncate(time.Second))
	stuckSince := metav1.NewTime(time.Now().Add(-2 * time.Hour).Truncate(time.Second))

	// Written while no manager runs, as a previous manager would have left them.
	done := create(t, newIngestion(ns, "done", nil))
	setStatus(t, done, v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseCompleted, StartTime: &long, CompletionTime: &stuckSince,
		LastProgressTime: &stuckSince, Chunks: v1alpha1.ChunkCounts{Total: 10, Succeeded: 10}, CompletedChunks: "0-9", Progress: "10/10"})
	broken := create(t, newIngestion(ns, "broken", nil))
	setStatus(t, broken, v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseFailed, StartTime: &long, CompletionTime: &long,
		Chunks: v1alpha1.ChunkCounts{Total: 10, Failed: 1, Pending: 9}})
	stuck := create(t, newIngestion(ns, "stuck", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	writePlan(t, stuck, 10000, 1000)
	setStatus(t, stuck, v1alpha1.CsvIngestionStatus{Phase: v1alpha1.PhaseProcessingChunks, StartTime: &long, LastProgressTime: &stuckSince,
		Chunks: v1alpha1.ChunkCounts{Total: 10, Succeeded: 4, Pending: 6}, CompletedChunks: "0-3", Progress: "4/10",
		Records: v1alpha1.RecordCounts{Total: 10000, Processed: 4000}})

	stop := startManager(t, nil, ns)
	eventually(t, "phase gauges from the cache", 30*time.Second, func() (bool, string) {
		return wantPhases(map[string]float64{"Completed": 1, "Failed": 1, "ProcessingChunks": 1})(phaseGauges(t))
	})
	// The stuck one gets its chunk Jobs, but nothing finishes: its clock stays two hours old.
	eventually(t, "stuck ingestion's chunks running", 30*time.Second, func() (bool, string) {
		return len(runningChunkJobs(t, stuck)) == 2 && get(t, stuck).Status.Chunks.Active == 2, ""
	})
	progress := gather(t, "vectordb_ingestion_last_progress_timestamp_seconds")
	want := series{"name=stuck,namespace=" + ns: float64(stuckSince.Unix())}
	if !maps.Equal(progress, want) {
		t.Fatalf("last progress %v, want %v (finished ingestions have none)", progress, want)
	}
	if age := time.Since(time.Unix(int64(progress["name=stuck,namespace="+ns]), 0)); age < 30*time.Minute {
		t.Fatalf("stuck for %s by the gauge; VectorDBIngestionStalled (30 min) could not fire", age)
	}
	eventually(t, "chunk gauges", 30*time.Second, func() (bool, string) {
		st := get(t, stuck).Status.Chunks
		g := gather(t, "vectordb_chunks")
		return g["state=pending"] == float64(st.Pending) && g["state=active"] == float64(st.Active) && st.Active == 2,
			fmt.Sprintf("gauges %v, status %+v", g, st)
	})
	stop()

	// While no manager runs: one finished ingestion is deleted, a new one is created.
	if err := cluster.Client.Delete(context.Background(), get(t, done)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted", 15*time.Second, func() (bool, string) {
		err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(done), &v1alpha1.CsvIngestion{})
		return ignoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
	late := create(t, newIngestion(ns, "late", nil))

	startManager(t, nil, ns)
	eventually(t, "phase gauges after the second start", 30*time.Second, func() (bool, string) {
		return wantPhases(map[string]float64{"Planning": 1, "Failed": 1, "ProcessingChunks": 1})(phaseGauges(t))
	})
	eventually(t, "progress series after the second start", 30*time.Second, func() (bool, string) {
		got := gather(t, "vectordb_ingestion_last_progress_timestamp_seconds")
		l, ok := got["name=late,namespace="+ns]
		cur := get(t, late)
		return ok && len(got) == 2 && got["name=stuck,namespace="+ns] == float64(stuckSince.Unix()) &&
				cur.Status.LastProgressTime != nil && l == float64(cur.Status.LastProgressTime.Unix()),
			fmt.Sprintf("%v", got)
	})
}

// A deleted ingestion's series go with it, tracked or not.
func TestDeletedIngestionSeriesVanish(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "gone", func(o *v1alpha1.CsvIngestion) { o.Spec.Tracking = nil }))
	key := "name=gone,namespace=" + ns
	eventually(t, "series of a running ingestion", 30*time.Second, func() (bool, string) {
		_, ok := gather(t, "vectordb_ingestion_last_progress_timestamp_seconds")[key]
		return ok && phaseGauges(t)["Planning"] == 1, fmt.Sprint(phaseGauges(t))
	})
	if err := cluster.Client.Delete(context.Background(), get(t, obj)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "series gone", 30*time.Second, func() (bool, string) {
		_, ok := gather(t, "vectordb_ingestion_last_progress_timestamp_seconds")[key]
		return !ok && phaseGauges(t)["Planning"] == 0, fmt.Sprint(phaseGauges(t))
	})
}

// Every result of the counters exists before its first event, so the first failed chunk of a
// fresh manager is an increase Prometheus sees (increase() needs a sample before the event;
// a series born at 1 has none) and VectorDBChunksFailed fires.
func TestFirstFailureShowsInIncrease(t *testing.T) {
	if chunksAtStartErr != nil || rowsAtStartErr != nil {
		t.Fatal(chunksAtStartErr, rowsAtStartErr)
	}
	// As the process started, before any event: every result at 0.
	wantAtStart := map[string]series{
		"vectordb_chunks_finished_total": {"result=succeeded": 0, "result=failed": 0},
		"vectordb_rows_total":            {"result=processed": 0, "result=failed": 0, "result=skipped": 0},
	}
	for name, got := range map[string]series{"vectordb_chunks_finished_total": chunksAtStart, "vectordb_rows_total": rowsAtStart} {
		if !maps.Equal(got, wantAtStart[name]) {
			t.Errorf("%s at process start = %v, want %v", name, got, wantAtStart[name])
		}
	}

	ns := newNamespace(t)
	startManager(t, nil, ns)
	chunks0 := gather(t, "vectordb_chunks_finished_total")
	rows0 := gather(t, "vectordb_rows_total")
	for _, k := range []string{"result=succeeded", "result=failed"} {
		if _, ok := chunks0[k]; !ok {
			t.Fatalf("vectordb_chunks_finished_total{%s} is not exported before its first event: %v", k, chunks0)
		}
	}
	for _, k := range []string{"result=processed", "result=failed", "result=skipped"} {
		if _, ok := rows0[k]; !ok {
			t.Fatalf("vectordb_rows_total{%s} is not exported before its first event: %v", k, rows0)
		}
	}

	obj := create(t, newIngestion(ns, "wrongkey", nil))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
		return worker.Result{Role: "chunk", Reason: worker.ReasonUnauthorized, Error: "openai: 401 Incorrect API key provided"},
			worker.ExitPermanent, batchv1.JobReasonPodFailurePolicy
	}, nil)
	if final.Status.Phase != v1alpha1.PhaseFailed {
		t.Fatalf("phase %s", final.Status.Phase)
	}
	// increase() over the two scrapes, as Prometheus computes it from two samples of a series.
	// The pass that wrote Failed may count just after the API server shows it: poll.
	eventually(t, "the failure counted", 30*time.Second, func() (bool, string) {
		chunks1 := gather(t, "vectordb_chunks_finished_total")
		rows1 := gather(t, "vectordb_rows_total")
		dc, dr := chunks1["result=failed"]-chunks0["result=failed"], rows1["result=failed"]-rows0["result=failed"]
		return dc == 1 && dr == 1000, fmt.Sprintf("increase of failed chunks = %v (want 1), of failed rows = %v (want 1000)", dc, dr)
	})
	// And it stays at one failure: a later pass must not count it again.
	consistently(t, "the failure counted once", 2*time.Second, func() (bool, string) {
		chunks1 := gather(t, "vectordb_chunks_finished_total")
		rows1 := gather(t, "vectordb_rows_total")
		dc, dr := chunks1["result=failed"]-chunks0["result=failed"], rows1["result=failed"]-rows0["result=failed"]
		return dc == 1 && dr == 1000, fmt.Sprintf("increase of failed chunks = %v (want 1), of failed rows = %v (want 1000)", dc, dr)
	})
}
