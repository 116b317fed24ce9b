package manager

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The cache keeps every Job and Pod of every running ingestion, thousands for a large file, so
// it keeps only what the reconciler reads. managedFields, the pod template of a Job and the spec
// of a Pod (the chunk's arguments and environment) are most of each object and never read; the
// controller writes Jobs only through merge patches of spec.suspend, which a trimmed template
// does not change, and never writes Pods.

// trimJob drops a cached Job's managedFields and pod template.
func trimJob(obj any) (any, error) {
	j, ok := obj.(*batchv1.Job)
	if !ok {
		return obj, nil
	}
	j.ManagedFields = nil
	j.Spec.Template = corev1.PodTemplateSpec{}
	return j, nil
}

// trimPod keeps a cached Pod's metadata (without managedFields), phase and container statuses:
// the reconciler reads the chunk's result from the terminated container's message.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	p.ManagedFields = nil
	p.Spec = corev1.PodSpec{}
	p.Status = corev1.PodStatus{Phase: p.Status.Phase, ContainerStatuses: p.Status.ContainerStatuses}
	return p, nil
}

// stripManagedFields drops managedFields from any other cached object.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
