package chart

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// imagePullSecrets reach the manager's pod and the worker service account in every worker
// namespace, so planner and chunk pods pull the embedder from a private registry too.
func TestImagePullSecretsReachWorkers(t *testing.T) {
	want := []any{map[string]any{"name": "regcred"}}
	objs := mustRender(t, "--set-json", `imagePullSecrets=[{"name":"regcred"}]`, "--set-json", `watchNamespaces=["a","b"]`)
	got, _, _ := unstructured.NestedSlice(deployment(t, objs).Object, "spec", "template", "spec", "imagePullSecrets")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("manager pod imagePullSecrets %v", got)
	}
	seen := 0
	for _, sa := range ofKind(objs, "ServiceAccount") {
		if sa.GetLabels()["app.kubernetes.io/component"] != "worker" {
			continue
		}
		seen++
		got, _, _ := unstructured.NestedSlice(sa.Object, "imagePullSecrets")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("worker ServiceAccount %s/%s imagePullSecrets %v, want %v", sa.GetNamespace(), sa.GetName(), got, want)
		}
	}
	if seen != 2 {
		t.Errorf("%d worker ServiceAccounts, want one in a and one in b", seen)
	}
	for _, sa := range ofKind(mustRender(t), "ServiceAccount") {
		if _, ok := sa.Object["imagePullSecrets"]; ok {
			t.Errorf("ServiceAccount %s has imagePullSecrets although none are set", sa.GetName())
		}
	}
}

// workers.resources become --worker-resources, the default of ingestions that set none.
func TestWorkerResourcesValues(t *testing.T) {
	q := resource.MustParse
	cases := []struct {
		name string
		args []string
		want corev1.ResourceRequirements
	}{
		{"defaults", nil, corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: q("1"), corev1.ResourceMemory: q("256Mi")}}},
		// Helm merges maps: null removes the default.
		{"none", []string{"--set-json", "workers.resources=null"}, corev1.ResourceRequirements{}},
		{"merged with the defaults: an integer and ephemeral storage", []string{"--set-json", `workers.resources={"requests":{"cpu":2,"ephemeral-storage":"1Gi"},"limits":{"cpu":4}}`},
			corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: q("2"), corev1.ResourceMemory: q("128Mi"), corev1.ResourceEphemeralStorage: q("1Gi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: q("4"), corev1.ResourceMemory: q("256Mi")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts, _ := parseManagerArgs(t, managerArgs(t, deployment(t, mustRender(t, c.args...))))
			if got := opts.Controller.DefaultWorkerResources; !equality.Semantic.DeepEqual(got, c.want) {
				t.Errorf("--worker-resources gives %v, want %v", got, c.want)
			}
		})
	}
	for name, args := range map[string][]string{
		"a quantity that is not one": {"--set", "workers.resources.limits.memory=lots"},
		"a negative number":          {"--set-json", `workers.resources={"limits":{"cpu":-1}}`},
		"claims (not a default)":     {"--set-json", `workers.resources={"claims":[{"name":"gpu"}]}`},
	} {
		if _, err := render(t, args...); err == nil || !strings.Contains(err.Error(), "resources") {
			t.Errorf("%s: %v, want the schema to refuse workers.resources", name, err)
		}
	}
}

// Several replicas without leader election would each reconcile and create every Job again.
func TestReplicasNeedLeaderElection(t *testing.T) {
	_, err := render(t, "--set", "replicaCount=3", "--set", "leaderElection.enabled=false")
	if err == nil || !strings.Contains(err.Error(), "replicaCount 3 needs leaderElection.enabled") {
		t.Errorf("3 replicas without leader election: %v", err)
	}
	for _, args := range [][]string{
		{"--set", "replicaCount=1", "--set", "leaderElection.enabled=false"},
		{"--set", "replicaCount=3", "--set", "leaderElection.enabled=true"},
	} {
		if _, err := render(t, args...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}
