package manager

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseResources(t *testing.T) {
	q := resource.MustParse
	cases := []struct {
		in      string
		want    corev1.ResourceRequirements
		wantErr string
	}{
		{"", corev1.ResourceRequirements{}, ""},
		{"{}", corev1.ResourceRequirements{}, ""},
		{`{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"256Mi"}}`, corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: q("256Mi")}}, ""},
		// Helm's toJson writes a YAML integer as a JSON number.
		{`{"limits":{"cpu":1}}`, corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: q("1")}}, ""},
		{`{"requests":{"ephemeral-storage":"1Gi"}}`, corev1.ResourceRequirements{Requests: corev1.ResourceList{"ephemeral-storage": q("1Gi")}}, ""},
		{`{"request":{"cpu":"1"}}`, corev1.ResourceRequirements{}, "unknown field"},
		{`{"requests":{"cpu":"lots"}}`, corev1.ResourceRequirements{}, "want JSON like"},
		{`cpu=100m`, corev1.ResourceRequirements{}, "want JSON like"},
		{`{"requests":{"memory":"1Gi"},"limits":{"memory":"512Mi"}}`, corev1.ResourceRequirements{}, "request memory=1Gi is above its limit 512Mi"},
		{`{"limits":{"memory":"-1"}}`, corev1.ResourceRequirements{}, "negative"},
	}
	for _, c := range cases {
		got, err := parseResources(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseResources(%s) = %v, %v; want an error containing %q", c.in, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || !equality.Semantic.DeepEqual(got, c.want) {
			t.Errorf("parseResources(%s) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

// The flag's default prints as JSON that parses back to the same value, and --worker-resources=""
// turns the default off.
func TestWorkerResourcesFlag(t *testing.T) {
	o := DefaultOptions()
	fs := FlagSet(&o)
	f := fs.Lookup("worker-resources")
	if f == nil {
		t.Fatal("no --worker-resources flag")
	}
	back, err := parseResources(f.DefValue)
	if err != nil || !equality.Semantic.DeepEqual(back, DefaultWorkerResources()) {
		t.Errorf("default %q parses to %v, %v", f.DefValue, back, err)
	}
	if err := fs.Parse([]string{"--worker-resources="}); err != nil {
		t.Fatal(err)
	}
	if r := o.Controller.DefaultWorkerResources; len(r.Requests) != 0 || len(r.Limits) != 0 {
		t.Errorf("--worker-resources= left %v", r)
	}
	if err := fs.Parse([]string{`--worker-resources={"limits":{"memory":"1"},"requests":{"memory":"2"}}`}); err == nil {
		t.Error("a request above its limit was accepted")
	}
}
