package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// TestJobNameTaken: a child's deterministic name held by a Job that is not the ingestion's (a
// leftover of a deleted ingestion of the same name the garbage collector has not removed yet)
// is not taken for the ingestion's own: the Blocked condition names it, and the child is
// created once it is gone. Before, the create's AlreadyExists counted as success, the pass
// waited for a Job its cache never lists, and nothing woke it after the leftover went.
func TestJobNameTaken(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	ctx := context.Background()
	leftover := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: worker.PlanJobName("taken"), Namespace: ns},
		Spec: batchv1.JobSpec{
			Suspend: ptr.To(true),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "embedder", Image: "vectordb-embedder:test"}}}},
		},
	}
	if err := cluster.Client.Create(ctx, leftover); err != nil {
		t.Fatal(err)
	}
	deleteLeftover := func() {
		_ = ignoreNotFound(cluster.Client.Delete(context.Background(), leftover, client.PropagationPolicy(metav1.DeletePropagationBackground)))
	}
	t.Cleanup(deleteLeftover)
	obj := create(t, newIngestion(ns, "taken", nil))
	eventually(t, "Blocked names the Job holding the planner's name", 15*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBlocked)
		return c != nil && c.Status == "True" && c.Reason == "JobNameTaken" &&
			strings.Contains(c.Message, leftover.Name+" already exists and is not this ingestion's (no owner)"), fmt.Sprintf("%+v", c)
	})
	deleteLeftover()
	eventually(t, "the planner Job created once the name is free", 40*time.Second, func() (bool, string) {
		j := &batchv1.Job{}
		err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(leftover), j)
		if err != nil {
			return false, err.Error()
		}
		ref := metav1.GetControllerOf(j)
		return ref != nil && ref.UID == obj.UID, fmt.Sprintf("owner %v", ref)
	})
	eventually(t, "no longer blocked", 15*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBlocked)
		return c != nil && c.Status == "False", fmt.Sprintf("%+v", c)
	})
}
