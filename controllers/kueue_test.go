package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// TestKueueQueuedChunkJobs plays Kueue through the API: it admits a chunk Job by unsuspending
// it. The controller creates them suspended with the queue label, never unsuspends one, never
// suspends an admitted one, and withdraws queued ones on spec.suspend and a lowered parallelism.
func TestKueueQueuedChunkJobs(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	ctx := context.Background()
	obj := create(t, newIngestion(ns, "kueue", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Chunking.Parallelism = 2
		o.Spec.Worker.QueueName = "team-a"
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 4000, 1000)

	// Unfinished chunk Jobs by index.
	chunkJobs := func() map[int]batchv1.Job {
		out := map[int]batchv1.Job{}
		for _, j := range listJobs(t, obj, worker.RoleChunk) {
			if j.DeletionTimestamp.IsZero() && j.Status.CompletionTime == nil {
				var i int
				fmt.Sscan(j.Labels[worker.LabelChunk], &i)
				out[i] = j
			}
		}
		return out
	}
	queuedOnly := func(want ...int) func() (bool, string) {
		return func() (bool, string) {
			jobs := chunkJobs()
			got := []int{}
			for i, j := range jobs {
				if j.Spec.Suspend == nil || !*j.Spec.Suspend {
					return false, fmt.Sprintf("chunk Job %s is not suspended", j.Name)
				}
				if j.Labels[controllers.LabelKueueQueue] != "team-a" || j.Spec.Template.Labels[controllers.LabelKueueQueue] != "" {
					return false, fmt.Sprintf("chunk Job %s labels %v, pod template labels %v", j.Name, j.Labels, j.Spec.Template.Labels)
				}
				got = append(got, i)
			}
			sort.Ints(got)
			return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("queued chunk Jobs %v, want %v", got, want)
		}
	}
	eventually(t, "two chunk Jobs queued", 15*time.Second, queuedOnly(0, 1))
	eventually(t, "the status says they are queued", 15*time.Second, func() (bool, string) {
		m := get(t, obj).Status.Message
		return strings.Contains(m, "2 queued in Kueue LocalQueue team-a"), m
	})
	consistently(t, "the controller unsuspends no queued Job and starts no third", 2*time.Second, queuedOnly(0, 1))

	admit := func(i int) {
		t.Helper()
		j := &batchv1.Job{}
		if err := cluster.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: worker.ChunkJobName(obj.Name, i)}, j); err != nil {
			t.Fatal(err)
		}
		if err := cluster.Client.Patch(ctx, j, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"suspend":false}}`))); err != nil {
			t.Fatal(err)
		}
	}
	admitted := func(i int) func() (bool, string) {
		return func() (bool, string) {
			j, ok := chunkJobs()[i]
			return ok && j.Spec.Suspend != nil && !*j.Spec.Suspend, fmt.Sprintf("chunk %d Job %v", i, j.Spec.Suspend)
		}
	}
	admit(0)
	// A lowered parallelism withdraws the queued chunk 1; the admitted chunk 0 runs on.
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 1 })
	eventually(t, "queued chunk 1 withdrawn", 15*time.Second, func() (bool, string) {
		jobs := chunkJobs()
		_, has1 := jobs[1]
		return !has1 && len(jobs) == 1, fmt.Sprintf("%d chunk Jobs", len(jobs))
	})
	consistently(t, "the admitted chunk 0 is never suspended", time.Second, admitted(0))

	// spec.suspend: the admitted chunk runs to the end, and nothing new is created.
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	eventually(t, "Suspended names the admitted chunk", 15*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionSuspended)
		return c != nil && c.Status == "True" && strings.Contains(c.Message, "1 chunk Jobs Kueue admitted run to the end"), fmt.Sprintf("%+v", c)
	})
	consistently(t, "the admitted chunk 0 runs while suspended", time.Second, admitted(0))
	finishJob(t, waitJob(t, ns, worker.ChunkJobName(obj.Name, 0)), okResult(1000), 0, "")
	eventually(t, "chunk 0 recorded while suspended", 15*time.Second, func() (bool, string) {
		st := get(t, obj).Status
		return st.CompletedChunks == "0", st.CompletedChunks
	})
	consistently(t, "no chunk Job created while suspended", time.Second, queuedOnly())

	// Resumed at parallelism 2: chunks 1 and 2 are queued again, suspended, until admitted.
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false; o.Spec.Chunking.Parallelism = 2 })
	eventually(t, "chunks 1 and 2 queued", 15*time.Second, queuedOnly(1, 2))
	for _, i := range []int{1, 2, 3} {
		if i == 3 {
			eventually(t, "chunk 3 queued", 15*time.Second, func() (bool, string) { _, ok := chunkJobs()[3]; return ok, "" })
		}
		admit(i)
		finishJob(t, waitJob(t, ns, worker.ChunkJobName(obj.Name, i)), okResult(1000), 0, "")
	}
	final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
	if final.Status.Records.Processed != 4000 || final.Status.CompletedChunks != "0-3" {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
}
