package manager

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestTrimKeepsWhatTheReconcilerReads(t *testing.T) {
	meta := metav1.ObjectMeta{Name: "a-chunk-3", Namespace: "ns", Labels: map[string]string{"l": "v"},
		CreationTimestamp: metav1.Now(), OwnerReferences: []metav1.OwnerReference{{Name: "a", UID: "u"}},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kcm"}}}
	pod := &corev1.Pod{ObjectMeta: *meta.DeepCopy(),
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "embedder", Args: []string{"chunk", "--index=3"},
			Env: []corev1.EnvVar{{Name: "VECTORDB_INGESTION", Value: "{...}"}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodSucceeded, Conditions: []corev1.PodCondition{{Type: corev1.PodReady}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "embedder", State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: `{"role":"chunk"}`}}}}}}
	out, err := trimPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	p := out.(*corev1.Pod)
	if p.ManagedFields != nil || len(p.Spec.Containers) != 0 || p.Status.Conditions != nil {
		t.Errorf("pod not trimmed: managedFields %v, containers %d, conditions %v", p.ManagedFields, len(p.Spec.Containers), p.Status.Conditions)
	}
	if p.Name != "a-chunk-3" || p.Labels["l"] != "v" || p.CreationTimestamp.IsZero() || len(p.OwnerReferences) != 1 ||
		p.Status.Phase != corev1.PodSucceeded || p.Status.ContainerStatuses[0].State.Terminated.Message != `{"role":"chunk"}` {
		t.Errorf("pod lost what the reconciler reads: %+v", p)
	}

	job := &batchv1.Job{ObjectMeta: *meta.DeepCopy(), Spec: batchv1.JobSpec{Suspend: ptr.To(true),
		Template: corev1.PodTemplateSpec{Spec: pod.Spec}},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}
	out, err = trimJob(job)
	if err != nil {
		t.Fatal(err)
	}
	j := out.(*batchv1.Job)
	if j.ManagedFields != nil || len(j.Spec.Template.Spec.Containers) != 0 {
		t.Errorf("job not trimmed: %+v", j.Spec.Template)
	}
	if j.Spec.Suspend == nil || !*j.Spec.Suspend || len(j.Status.Conditions) != 1 || j.Labels["l"] != "v" {
		t.Errorf("job lost what the reconciler reads: %+v", j)
	}

	cm := &corev1.ConfigMap{ObjectMeta: *meta.DeepCopy(), Data: map[string]string{"plan": "x"}}
	out, _ = stripManagedFields(cm)
	if c := out.(*corev1.ConfigMap); c.ManagedFields != nil || c.Data["plan"] != "x" {
		t.Errorf("configmap: %+v", c)
	}
	// Objects of other types pass through the typed trims untouched.
	if out, _ := trimPod(cm); out != any(cm) {
		t.Error("trimPod changed a ConfigMap")
	}
}
