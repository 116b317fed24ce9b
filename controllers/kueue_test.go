package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
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

// TestKueueLabelOnNonQueueIngestion: Kueue's label put on a chunk Job of an ingestion without
// spec.worker.queueName (by a user or a tool) does not hand the Job to Kueue: spec.suspend
// still suspends it, and resuming starts it again (it was left running, then never resumed,
// with the status saying it was queued in a LocalQueue named "").
func TestKueueLabelOnNonQueueIngestion(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	ctx := context.Background()
	obj := create(t, newIngestion(ns, "foreign-label", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 4000, 1000)
	j1 := waitJob(t, ns, worker.ChunkJobName(obj.Name, 1))
	if err := cluster.Client.Patch(ctx, j1, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"kueue.x-k8s.io/queue-name":"team-a"}}}`))); err != nil {
		t.Fatal(err)
	}
	suspendedAre := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			for _, i := range []int{0, 1} {
				j := getJob(t, ns, worker.ChunkJobName(obj.Name, i))
				if (j.Spec.Suspend != nil && *j.Spec.Suspend) != want {
					return false, fmt.Sprintf("chunk %d Job suspend %v", i, ptr.Deref(j.Spec.Suspend, false))
				}
			}
			return true, ""
		}
	}
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	eventually(t, "spec.suspend suspends both chunk Jobs, the labelled one too", 15*time.Second, suspendedAre(true))
	eventually(t, "Suspended says no chunk runs", 15*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionSuspended)
		return c != nil && c.Status == "True" && c.Message == "spec.suspend is set: no chunk runs", fmt.Sprintf("%+v", c)
	})
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	eventually(t, "resumed: both chunk Jobs run again", 15*time.Second, suspendedAre(false))
	eventually(t, "nothing said to be queued in Kueue", 15*time.Second, func() (bool, string) {
		m := get(t, obj).Status.Message
		return strings.HasPrefix(m, "0/4 chunks finished, 2 running") && !strings.Contains(m, "Kueue"), m
	})
}

// TestKueueWithdrawMeetsNewerJob: a queued Job changed since the pass read it (Kueue's stop
// of a preempted Job writes an annotation, its start time and the template, and the Job
// controller its status; the pass is woken by few of those) is not deleted, and the pass looks
// again soon rather than leave a Job to be admitted over the limit or during spec.suspend.
func TestKueueWithdrawMeetsNewerJob(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "queued", Namespace: ns, Labels: map[string]string{controllers.LabelKueueQueue: "team-a"}},
		Spec: batchv1.JobSpec{
			Suspend: ptr.To(true),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "embedder", Image: "vectordb-embedder:test"}}}},
		},
	}
	if err := cluster.Client.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ignoreNotFound(cluster.Client.Delete(context.Background(), j, client.PropagationPolicy(metav1.DeletePropagationBackground)))
	})
	read := j.DeepCopy()
	if err := cluster.Client.Patch(ctx, j, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"kueue.x-k8s.io/stopping":"true"}}}`))); err != nil {
		t.Fatal(err)
	}
	again, err := controllers.WithdrawQueued(ctx, cluster.Client, read)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(j), &batchv1.Job{}); err != nil {
		t.Fatalf("the Job changed since it was read must stay: %v", err)
	}
	if again <= 0 || again > 5*time.Second {
		t.Fatalf("the pass looks again in %v, want within a few seconds", again)
	}
	// Read again, it goes, and nothing more is to be looked at.
	fresh := &batchv1.Job{}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(j), fresh); err != nil {
		t.Fatal(err)
	}
	if again, err = controllers.WithdrawQueued(ctx, cluster.Client, fresh); err != nil || again != 0 {
		t.Fatalf("withdraw of the Job as it is: %v, look again in %v", err, again)
	}
	eventually(t, "the queued Job withdrawn", 10*time.Second, func() (bool, string) {
		err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(j), &batchv1.Job{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// TestKueuePreemptedChunk: Kueue preempts an admitted chunk Job (suspends it again after a pod
// ran; the pod, killed, holds its partial usage under the outcome finalizer). The controller
// neither restarts it nor starts another chunk in its place; spec.suspend withdraws it like a
// queued one; the chunk's next Job is queued again, and when it finishes the preempted
// attempt's usage is counted and its pod released.
func TestKueuePreemptedChunk(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	ctx := context.Background()
	obj := create(t, newIngestion(ns, "preempted", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Chunking.Parallelism = 1
		o.Spec.Worker.QueueName = "team-a"
	}))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 2000, 1000)
	name := worker.ChunkJobName(obj.Name, 0)
	setSuspend := func(suspend bool) {
		t.Helper()
		j := waitJob(t, ns, name)
		if err := cluster.Client.Patch(ctx, j, client.RawPatch(types.MergePatchType,
			[]byte(fmt.Sprintf(`{"spec":{"suspend":%v}}`, suspend)))); err != nil {
			t.Fatal(err)
		}
	}
	setSuspend(false) // admitted
	failAttempt(t, waitJob(t, ns, name), worker.Result{Error: "terminated", Tokens: 500, Requests: 2})
	setSuspend(true) // preempted
	onlyChunk0Queued := func() (bool, string) {
		jobs := listJobs(t, obj, worker.RoleChunk)
		if len(jobs) != 1 || jobs[0].Name != name || jobs[0].Spec.Suspend == nil || !*jobs[0].Spec.Suspend {
			return false, fmt.Sprintf("%d chunk Jobs", len(jobs))
		}
		return true, ""
	}
	eventually(t, "the preempted chunk counts as queued", 15*time.Second, func() (bool, string) {
		m := get(t, obj).Status.Message
		return strings.Contains(m, "0 running, 1 queued in Kueue LocalQueue team-a"), m
	})
	consistently(t, "the preempted Job is not restarted and no other chunk takes its place", time.Second, onlyChunk0Queued)

	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = true })
	eventually(t, "spec.suspend withdraws the preempted Job", 15*time.Second, func() (bool, string) {
		jobs := listJobs(t, obj, worker.RoleChunk)
		return len(jobs) == 0, fmt.Sprintf("%d chunk Jobs", len(jobs))
	})
	update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = false })
	eventually(t, "the chunk is queued again under the same name", 15*time.Second, onlyChunk0Queued)
	setSuspend(false)
	finishJob(t, waitJob(t, ns, name), okResult(1000), 0, "")
	eventually(t, "chunk 0 recorded with the preempted attempt's usage", 15*time.Second, func() (bool, string) {
		st := get(t, obj).Status
		return st.CompletedChunks == "0" && st.Usage != nil && st.Usage.Tokens == 1000*150+500 && st.Usage.Requests == 3,
			fmt.Sprintf("completed %q usage %+v", st.CompletedChunks, st.Usage)
	})
	eventually(t, "every pod of chunk 0 released, the preempted one too", 15*time.Second, func() (bool, string) {
		held := 0
		for _, p := range listPods(t, obj) {
			if p.Labels["batch.kubernetes.io/job-name"] == name && slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				held++
			}
		}
		return held == 0, fmt.Sprintf("%d pods of chunk 0 hold the outcome finalizer", held)
	})
	j1 := waitJob(t, ns, worker.ChunkJobName(obj.Name, 1))
	if err := cluster.Client.Patch(ctx, j1, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"suspend":false}}`))); err != nil {
		t.Fatal(err)
	}
	finishJob(t, waitJob(t, ns, j1.Name), okResult(1000), 0, "")
	if st := waitPhase(t, obj, v1alpha1.PhaseCompleted).Status; st.Records.Processed != 2000 {
		t.Fatalf("status %s", mustJSON(st))
	}
}
