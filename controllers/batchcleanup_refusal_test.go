package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// An admission policy refuses the cleanup Job of a deleted batch-mode ingestion: the refusal is
// reported (a Warning event with the server's message) and the deletion waits at most the
// finalizer timeout (5 s in these tests), then goes with BatchCleanupFailed, as in a terminating
// namespace. Before, the error was only logged and the ingestion never went.
func TestBatchCleanupRefusedJobDoesNotHoldDeletion(t *testing.T) {
	ns := newNamespace(t)
	denyJobs(t, ns, worker.RoleCleanup)
	startManager(t, nil, ns)

	obj := runningBatch(t, ns, "refused")
	deleteIngestion(t, obj)
	waitGone(t, obj)
	wantEvents(t, obj, controllers.ReasonBatchCleanupBlocked, controllers.ReasonBatchCleanupFailed)
	if msg := eventMessage(t, obj, controllers.ReasonBatchCleanupFailed); !strings.Contains(msg, "not allowed here by policy") {
		t.Errorf("BatchCleanupFailed event %q does not carry the server's message", msg)
	}
	if jobs := listJobs(t, obj, worker.RoleCleanup); len(jobs) != 0 {
		t.Errorf("%d cleanup Jobs despite the policy", len(jobs))
	}
}

// Someone else's Job under the cleanup Job's name is neither adopted nor deleted: its end does
// not release the finalizer; the BatchCleanup condition says the name is taken; once that Job is
// gone the ingestion's own cleanup Job runs and releases it. Before: a Job without the
// ingestion's labels (invisible to the manager's cache) made the create fail with AlreadyExists,
// which was ignored, so the finalizer was held without a word; one carrying another UID label
// was deleted by the manager once it had ended, though it was no cleanup Job at all.
func TestBatchCleanupForeignJobNotAdopted(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	startManager(t, nil, ns)
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"unlabelled", map[string]string{"app": "someone-else"}},
		{"another uid", map[string]string{"app": "someone-else", worker.LabelUID: "not-an-ingestion"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "taken-" + strings.ReplaceAll(tc.name, " ", "-")
			foreign := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: worker.CleanupJobName(name), Namespace: ns, Labels: tc.labels},
				Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
					Containers: []corev1.Container{{Name: "c", Image: "someone/else:1"}}}}}}
			if err := cluster.Client.Create(ctx, foreign); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cluster.Client.Delete(ctx, foreign, client.PropagationPolicy(metav1.DeletePropagationBackground))
			})

			obj := runningBatch(t, ns, name)
			update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
			waitPhase(t, obj, v1alpha1.PhaseCancelled)
			eventually(t, "BatchCleanup blocked by the taken name", 20*time.Second, func() (bool, string) {
				c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBatchCleanup)
				return c != nil && c.Status == metav1.ConditionFalse && c.Reason == controllers.ReasonBatchCleanupBlocked &&
					strings.Contains(c.Message, "not this ingestion's"), fmt.Sprintf("%+v", c)
			})
			wantEvents(t, obj, controllers.ReasonBatchCleanupBlocked)
			completeJob(t, foreign)
			consistently(t, "the foreign Job's end does not release the finalizer, and the Job is left alone", 3*time.Second, func() (bool, string) {
				cur := get(t, obj)
				j := getJob(t, ns, foreign.Name)
				return slices.Contains(cur.Finalizers, controllers.FinalizerBatchCleanup) && j.UID == foreign.UID && j.DeletionTimestamp.IsZero(),
					fmt.Sprintf("finalizers %v, job %s", cur.Finalizers, j.UID)
			})
			deleteCleanupJob(t, getJob(t, ns, foreign.Name))
			j := waitCleanupJob(t, obj, foreign.UID)
			if j.Labels[worker.LabelUID] != string(obj.UID) {
				t.Fatalf("cleanup Job labels %v", j.Labels)
			}
			finishJob(t, j, worker.Result{Role: worker.RoleCleanup}, 0, "")
			eventually(t, "finalizer released by the ingestion's own cleanup", 30*time.Second, func() (bool, string) {
				cur := get(t, obj)
				c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBatchCleanup)
				return c != nil && c.Reason == controllers.ReasonBatchCleanupDone && !slices.Contains(cur.Finalizers, controllers.FinalizerBatchCleanup),
					fmt.Sprintf("%+v, finalizers %v", c, cur.Finalizers)
			})
			deleteIngestion(t, get(t, obj))
			waitGone(t, obj)
		})
	}
}

// The batch-cleanup finalizer on an online ingestion (added by hand or copied from another
// manifest) is never held. A pass of a live ingestion removes it; one deleted while the manager
// was away reaches the manager on the deletion path, which before never looked at it: the
// ingestion stayed forever.
func TestBatchCleanupStrayFinalizerOnOnline(t *testing.T) {
	ns := newNamespace(t)
	obj := create(t, newIngestion(ns, "stray", func(o *v1alpha1.CsvIngestion) {
		o.Finalizers = []string{controllers.FinalizerBatchCleanup}
	}))
	deleteIngestion(t, obj)
	startManager(t, nil, ns)
	waitGone(t, obj)
}

// The cleanup Job of a deleted ingestion whose pod cannot start (here its key's Secret was
// deleted with it, as `kubectl delete -f` of a directory or a GitOps prune does) is reported with
// the kubelet's reason, and holds the deletion at most the finalizer timeout instead of the Job's
// whole deadline (chunkTimeout times retriesPerChunk+1: two hours by default) without a word.
func TestBatchCleanupStuckPodDoesNotHoldDeletion(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := runningBatch(t, ns, "stuck")
	deleteIngestion(t, obj)
	j := waitCleanupJob(t, obj, "")
	labels := map[string]string{"job-name": j.Name}
	for k, v := range j.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: j.Name + "-", Namespace: ns, Labels: labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: j.Name, UID: j.UID, Controller: ptr.To(true)}}},
		Spec: j.Spec.Template.Spec}
	if err := cluster.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(ctx, pod) })
	pod.Status = corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "embedder",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: `secret "openai" not found`}}}}}
	if err := cluster.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	waitGone(t, obj)
	wantEvents(t, obj, controllers.ReasonBatchCleanupFailed)
	if msg := eventMessage(t, obj, controllers.ReasonBatchCleanupFailed); !strings.Contains(msg, `secret "openai" not found`) {
		t.Errorf("BatchCleanupFailed event %q does not carry the kubelet's reason", msg)
	}
	deleteCleanupJob(t, j)
}

// eventMessage is the message of obj's newest event with reason.
func eventMessage(t *testing.T, obj *v1alpha1.CsvIngestion, reason string) string {
	t.Helper()
	var evs eventsv1.EventList
	if err := cluster.Client.List(context.Background(), &evs, client.InNamespace(obj.Namespace)); err != nil {
		t.Fatal(err)
	}
	msg := ""
	for _, e := range evs.Items {
		if e.Regarding.UID == obj.UID && e.Reason == reason {
			msg = e.Note
		}
	}
	return msg
}
