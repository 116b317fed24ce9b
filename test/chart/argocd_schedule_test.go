package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func scheduleHealthScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(argoDir, "health-schedule.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func scheduleObject(t *testing.T, generation int, spec, status string) map[string]any {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: ingestion.vectordb.io/v1alpha1
kind: CsvIngestionSchedule
metadata: {name: q239-daily, namespace: ingestion, generation: %d}
spec: %s
%s`, generation, spec, status)
	objs, err := decodeObjects(doc)
	if err != nil || len(objs) != 1 {
		t.Fatalf("bad test object (%v):\n%s", err, doc)
	}
	return objs[0].Object
}

func TestArgoCDScheduleHealthCheck(t *testing.T) {
	script := scheduleHealthScript(t)
	for _, c := range []struct {
		name        string
		generation  int
		spec        string
		status      string
		wantStatus  string
		wantMessage string
	}{
		{"no status yet", 1, "{schedule: '0 1 * * *'}", "", "Progressing", "Waiting for the operator to observe generation 1"},
		{"stale status", 2, "{schedule: '0 1 * * *'}", "status: {observedGeneration: 1, activeCount: 1}", "Progressing", "Waiting for the operator to observe generation 2"},
		{"waiting for the first run", 1, "{schedule: '0 1 * * *'}", `status:
  observedGeneration: 1
  conditions: [{type: Ready, status: "True", reason: Valid}]`, "Healthy", "no run yet; 0 active"},
		{"running", 1, "{schedule: '0 1 * * *'}", `status:
  observedGeneration: 1
  activeCount: 1
  lastScheduleTime: "2025-01-11T01:00:00Z"
  conditions: [{type: Ready, status: "True", reason: Valid}, {type: RunSkipped, status: "False", reason: RunCreated}]`,
			"Healthy", "last run 2025-01-11T01:00:00Z; 1 active"},
		{"a run skipped under Forbid", 1, "{schedule: '0 1 * * *'}", `status:
  observedGeneration: 1
  activeCount: 1
  lastScheduleTime: "2025-01-11T01:00:00Z"
  conditions: [{type: Ready, status: "True", reason: Valid}, {type: RunSkipped, status: "True", reason: ConcurrencyForbid, message: "run for 2025-01-12T01:00:00Z skipped: q239-daily-29000000 still active (concurrencyPolicy Forbid)"}]`,
			"Healthy", "last run 2025-01-11T01:00:00Z; 1 active; run for 2025-01-12T01:00:00Z skipped: q239-daily-29000000 still active (concurrencyPolicy Forbid)"},
		{"invalid template", 3, "{schedule: '0 1 * * *'}", `status:
  observedGeneration: 3
  conditions: [{type: Ready, status: "False", reason: InvalidTemplate, message: "spec.template: spec.source.s3.key: can't evaluate field Begin"}]`,
			"Degraded", "spec.template: spec.source.s3.key: can't evaluate field Begin"},
		{"runs refused by the API server", 1, "{schedule: '0 1 * * *'}", `status:
  observedGeneration: 1
  skippedRuns: 2
  conditions: [{type: Ready, status: "False", reason: RunRejected, message: "run q239-daily-29000000 for 2025-01-12T01:00:00Z not created: exceeded quota"}, {type: RunSkipped, status: "True", reason: RunRejected, message: "run q239-daily-29000000 for 2025-01-12T01:00:00Z not created: exceeded quota"}]`,
			"Degraded", "run q239-daily-29000000 for 2025-01-12T01:00:00Z not created: exceeded quota"},
		{"a refused run while suspended stays Degraded", 2, "{schedule: '0 1 * * *', suspend: true}", `status:
  observedGeneration: 2
  conditions: [{type: Ready, status: "False", reason: RunRejected, message: "not created: admission policy"}]`,
			"Degraded", "not created: admission policy"},
		{"suspended", 2, "{schedule: '0 1 * * *', suspend: true}", `status:
  observedGeneration: 2
  conditions: [{type: Ready, status: "True", reason: Valid}]`, "Suspended", "Suspended: no new runs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, message, err := runHealthLua(script, scheduleObject(t, c.generation, c.spec, c.status))
			if err != nil {
				t.Fatal(err)
			}
			if status != c.wantStatus || message != c.wantMessage {
				t.Errorf("got %s %q, want %s %q", status, message, c.wantStatus, c.wantMessage)
			}
		})
	}
}

func TestArgoCDConfigMapEmbedsScheduleHealthLua(t *testing.T) {
	objs := readObjects(t, filepath.Join(argoDir, "argocd-cm.yaml"))
	data, _, _ := unstructured.NestedStringMap(objs[0].Object, "data")
	got, ok := data["resource.customizations.health.ingestion.vectordb.io_CsvIngestionSchedule"]
	if !ok {
		t.Fatalf("argocd-cm data keys %v lack the CsvIngestionSchedule health key", keys(data))
	}
	if got != scheduleHealthScript(t) {
		t.Error("the script in argocd-cm.yaml differs from health-schedule.lua")
	}
}
