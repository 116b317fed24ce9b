package controllers

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func TestJobChangePredicate(t *testing.T) {
	t0 := metav1.Unix(1_700_000_000, 0)
	base := func() *batchv1.Job {
		return &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "q239-chunk-7", Namespace: "ingestion", ResourceVersion: "10",
				Annotations: map[string]string{"a": "b"}},
			Spec: batchv1.JobSpec{Suspend: ptr.To(false)},
			Status: batchv1.JobStatus{Active: 1, Ready: ptr.To[int32](0), StartTime: &t0,
				Conditions: []batchv1.JobCondition{{Type: batchv1.JobSuspended, Status: corev1.ConditionFalse, Reason: "JobResumed", LastProbeTime: t0, LastTransitionTime: t0}}},
		}
	}
	cases := []struct {
		name   string
		change func(j *batchv1.Job)
		want   bool
	}{
		{"nothing but the resource version", func(j *batchv1.Job) { j.ResourceVersion = "11" }, false},
		{"ready count", func(j *batchv1.Job) { j.Status.Ready = ptr.To[int32](1) }, false},
		{"terminating count", func(j *batchv1.Job) { j.Status.Terminating = ptr.To[int32](1) }, false},
		{"uncounted terminated pods", func(j *batchv1.Job) {
			j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{Succeeded: []types.UID{"p1"}}
		}, false},
		{"condition probe and transition times", func(j *batchv1.Job) {
			later := metav1.Unix(1_700_000_100, 0)
			j.Status.Conditions[0].LastProbeTime, j.Status.Conditions[0].LastTransitionTime = later, later
		}, false},
		{"annotations, labels and finalizers", func(j *batchv1.Job) {
			j.Annotations["x"] = "y"
			j.Labels = map[string]string{"l": "v"}
			j.Finalizers = []string{"example.com/f"}
		}, false},
		{"active count", func(j *batchv1.Job) { j.Status.Active = 0 }, true},
		{"succeeded count", func(j *batchv1.Job) { j.Status.Succeeded = 1 }, true},
		{"failed count (a retry)", func(j *batchv1.Job) { j.Status.Failed = 1 }, true},
		{"a new condition", func(j *batchv1.Job) {
			j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue})
		}, true},
		{"a condition's status", func(j *batchv1.Job) { j.Status.Conditions[0].Status = corev1.ConditionTrue }, true},
		{"a condition's reason", func(j *batchv1.Job) { j.Status.Conditions[0].Reason = "Other" }, true},
		{"a condition's message", func(j *batchv1.Job) { j.Status.Conditions[0].Message = "now explained" }, true},
		{"suspended", func(j *batchv1.Job) { j.Spec.Suspend = ptr.To(true) }, true},
		{"TTL set after recording", func(j *batchv1.Job) { j.Spec.TTLSecondsAfterFinished = ptr.To[int32](3600) }, true},
		{"deletion", func(j *batchv1.Job) { now := metav1.Now(); j.DeletionTimestamp = &now }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := base(), base()
			tc.change(cur)
			if got := jobChangePredicate.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: cur}); got != tc.want {
				t.Errorf("update passes = %v, want %v", got, tc.want)
			}
		})
	}
	j := base()
	if !jobChangePredicate.Create(event.CreateEvent{Object: j}) || !jobChangePredicate.Delete(event.DeleteEvent{Object: j}) ||
		!jobChangePredicate.Generic(event.GenericEvent{Object: j}) {
		t.Error("create, delete and generic events of a Job must always pass")
	}
	// Anything that is not a Job (never expected) is let through rather than lost.
	if !jobChangePredicate.Update(event.UpdateEvent{ObjectOld: &corev1.Pod{}, ObjectNew: &corev1.Pod{}}) {
		t.Error("an update of another kind must pass")
	}
}
