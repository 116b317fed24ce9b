package manager

import (
	"bytes"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// DefaultWorkerResources are the planner's and chunk pods' resources when an ingestion sets none:
// requests so a ResourceQuota that demands them admits the pods and the scheduler places them, a
// memory limit the embedder's GOMEMLIMIT follows (its peak RSS is about 60 MiB at 1,536
// dimensions, docs/benchmarks.md), and a CPU limit for quotas that require one (the embedder
// mostly waits on the network).
func DefaultWorkerResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("1"),
			corev1.ResourceMemory: resource.MustParse("256Mi"),
		},
	}
}

// resourcesFlag is a corev1.ResourceRequirements given as JSON
// ({"requests":{"cpu":"100m"},"limits":{"memory":"256Mi"}}); "" or {} means none.
type resourcesFlag struct{ r *corev1.ResourceRequirements }

func (f resourcesFlag) Type() string { return "json" }

func (f resourcesFlag) String() string {
	if f.r == nil || (len(f.r.Requests) == 0 && len(f.r.Limits) == 0) {
		return ""
	}
	b, err := json.Marshal(struct {
		Requests corev1.ResourceList `json:"requests,omitempty"`
		Limits   corev1.ResourceList `json:"limits,omitempty"`
	}{f.r.Requests, f.r.Limits})
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

func (f resourcesFlag) Set(s string) error {
	r, err := parseResources(s)
	if err != nil {
		return err
	}
	*f.r = r
	return nil
}

// parseResources reads requests and limits from JSON, refusing unknown keys, malformed
// quantities and a request above its limit (which the API server would refuse on every pod).
func parseResources(s string) (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	if s == "" {
		return out, nil
	}
	var in struct {
		Requests corev1.ResourceList `json:"requests"`
		Limits   corev1.ResourceList `json:"limits"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return out, fmt.Errorf(`want JSON like {"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"256Mi"}}: %w`, err)
	}
	for name, req := range in.Requests {
		if lim, ok := in.Limits[name]; ok && req.Cmp(lim) > 0 {
			return out, fmt.Errorf("request %s=%s is above its limit %s", name, req.String(), lim.String())
		}
	}
	for name, q := range in.Requests {
		if q.Sign() < 0 {
			return out, fmt.Errorf("request %s=%s is negative", name, q.String())
		}
	}
	for name, q := range in.Limits {
		if q.Sign() < 0 {
			return out, fmt.Errorf("limit %s=%s is negative", name, q.String())
		}
	}
	if len(in.Requests) > 0 {
		out.Requests = in.Requests
	}
	if len(in.Limits) > 0 {
		out.Limits = in.Limits
	}
	return out, nil
}
