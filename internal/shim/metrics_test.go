package shim

import (
	"net/http"
	"testing"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// requestCount reads vectordb_http_requests_total{route, code} from the manager's registry.
func requestCount(t *testing.T, route, code string) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vectordb_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Every answer is counted by the route pattern that matched (never the raw path, whose values
// clients choose) and its status code, refusals included.
func TestHTTPMetricsByRoute(t *testing.T) {
	e := startShim(t, testCluster(t))
	type key struct{ route, code string }
	watch := []key{{"GET /api/v1/tasks", "200"}, {"GET /api/v1/tasks", "401"}, {"GET /api/v1/status/{task_id}", "404"}, {"unmatched", "404"}}
	before := map[key]float64{}
	for _, k := range watch {
		before[k] = requestCount(t, k.route, k.code)
	}
	do(t, http.MethodGet, e.URL+"/api/v1/tasks", testKey, nil)
	do(t, http.MethodGet, e.URL+"/api/v1/tasks", "", nil)
	do(t, http.MethodGet, e.URL+"/api/v1/status/some-unknown-task-id", testKey, nil)
	do(t, http.MethodGet, e.URL+"/no/such/path/12345", "", nil)
	for _, k := range watch {
		if got := requestCount(t, k.route, k.code) - before[k]; got != 1 {
			t.Errorf("vectordb_http_requests_total{route=%q,code=%q} rose by %v, want 1", k.route, k.code, got)
		}
	}
}
