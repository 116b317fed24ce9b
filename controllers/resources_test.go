package controllers_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Worker pods get the operator's default resources (--worker-resources) unless the ingestion sets
// its own, so an ingestion that says nothing (every one the REST API creates) is not BestEffort.
func TestWorkerResourcesDefault(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	own := corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
	cases := []struct {
		name string
		spec corev1.ResourceRequirements
		want corev1.ResourceRequirements
	}{
		{"none set: the operator's default", corev1.ResourceRequirements{}, manager.DefaultWorkerResources()},
		{"set: the spec's, not merged with the default", own, own},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			obj := create(t, newIngestion(ns, "res-"+map[bool]string{true: "own", false: "default"}[len(c.spec.Limits) > 0],
				func(o *v1alpha1.CsvIngestion) { o.Spec.Worker.Resources = c.spec }))
			planner := waitJob(t, ns, worker.PlanJobName(obj.Name))
			got := planner.Spec.Template.Spec.Containers[0].Resources
			if !equality.Semantic.DeepEqual(got, c.want) {
				t.Errorf("planner resources %v, want %v", got, c.want)
			}
		})
	}
}
