package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// TestBatchLiveReports: with rate leases on, running batch-mode chunks report their batches to
// the lease service (as ratelease.Reporter does from the pod) and the status, the task item and
// the live gauge show them while the chunks run; a chunk that ends counts once, from its
// result; the run's end drops the live part and its series.
func TestBatchLiveReports(t *testing.T) {
	ns := newNamespace(t)
	url, key := leaseManager(t, ns)
	obj := batchIngestion(ns, "live")
	obj.Spec.Embedding.Batch = &v1alpha1.EmbeddingBatchSpec{PollInterval: metav1.Duration{Duration: time.Second}}
	obj = create(t, obj)
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 3000, 1000)
	eventually(t, "3 chunks running", 20*time.Second, func() (bool, string) {
		n := len(runningChunkJobs(t, obj))
		return n == 3, fmt.Sprint(n)
	})
	obj = get(t, obj)
	reporter := func(chunk int, uid string) *ratelease.Reporter {
		return ratelease.NewReporter(ratelease.ReportURL(url), ratelease.Credential(key, ns, obj.Name), ns, obj.Name, uid, chunk, nil, logr.Discard())
	}
	post := func(chunk int, s v1alpha1.BatchStatus) {
		t.Helper()
		if !reporter(chunk, string(obj.UID)).Report(context.Background(), s) {
			t.Fatalf("report of chunk %d not taken", chunk)
		}
	}
	c0 := v1alpha1.BatchStatus{Batches: 1, InProgress: 1, Lines: 1000, LinesDone: 300}
	c1 := v1alpha1.BatchStatus{Batches: 2, Validating: 2, Lines: 1000}
	post(0, c0)
	post(1, c1)
	// A pod of an earlier ingestion of the same name (same credential, another UID): not shown.
	if !reporter(2, "an-earlier-uid").Report(context.Background(), v1alpha1.BatchStatus{Batches: 9, Completed: 9}) {
		t.Fatal("report of another UID not taken")
	}
	want := v1alpha1.BatchStatus{Batches: 3, InProgress: 1, Validating: 2, Lines: 2000, LinesDone: 300}
	waitBatch := func(what string, batch, live v1alpha1.BatchStatus) {
		t.Helper()
		eventually(t, what, 20*time.Second, func() (bool, string) {
			st := get(t, obj).Status
			return st.Batch != nil && st.BatchLive != nil && *st.Batch == batch && *st.BatchLive == live,
				fmt.Sprintf("batch %+v live %+v", st.Batch, st.BatchLive)
		})
	}
	waitBatch("live reports in status", want, want)
	eventually(t, "live counts in the task item", 15*time.Second, func() (bool, string) {
		item, _ := taskItem(t, obj.Spec.TaskID)
		if item.Batch == nil {
			return false, "none"
		}
		return *item.Batch == tasktable.BatchCounts{Batches: 3, InProgress: 1, Validating: 2, Lines: 2000, LinesDone: 300}, fmt.Sprintf("%+v", *item.Batch)
	})
	gauge := func() string {
		g := gather(t, "vectordb_batches_live")
		return fmt.Sprintf("validating %v in_progress %v completed %v",
			g["name=live,namespace="+ns+",state=validating"], g["name=live,namespace="+ns+",state=in_progress"], g["name=live,namespace="+ns+",state=completed"])
	}
	eventually(t, "live gauge", 10*time.Second, func() (bool, string) {
		return gauge() == "validating 2 in_progress 1 completed 0", gauge()
	})

	// A report moves on: the status follows without any other event (the pass requeues).
	c0 = v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 1000, LinesDone: 1000}
	post(0, c0)
	waitBatch("a newer report", v1alpha1.BatchStatus{Batches: 3, Completed: 1, Validating: 2, Lines: 2000, LinesDone: 1000},
		v1alpha1.BatchStatus{Batches: 3, Completed: 1, Validating: 2, Lines: 2000, LinesDone: 1000})

	// Chunk 0 ends: counted from its result, not again from its last report (still kept).
	for _, j := range runningChunkJobs(t, obj) {
		if j.Labels[worker.LabelChunk] == "0" {
			res := okResult(1000)
			res.Batch = &v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 1000, LinesDone: 1000}
			finishJob(t, &j, res, 0, "")
		}
	}
	waitBatch("chunk 0 recorded, chunk 1 live",
		v1alpha1.BatchStatus{Batches: 3, Completed: 1, Validating: 2, Lines: 2000, LinesDone: 1000}, c1)
	if st := get(t, obj).Status; st.CompletedChunks != "0" {
		t.Errorf("completed chunks %q, want 0", st.CompletedChunks)
	}

	// The run ends: the live part and its series go.
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
	waitPhase(t, obj, v1alpha1.PhaseCancelled)
	eventually(t, "live part dropped", 20*time.Second, func() (bool, string) {
		st := get(t, obj).Status
		return st.BatchLive == nil && st.Batch != nil && *st.Batch == v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 1000, LinesDone: 1000},
			fmt.Sprintf("batch %+v live %+v", st.Batch, st.BatchLive)
	})
	eventually(t, "live series gone", 10*time.Second, func() (bool, string) {
		return gauge() == "validating 0 in_progress 0 completed 0", gauge()
	})
	finishCleanup(t, obj)
}
