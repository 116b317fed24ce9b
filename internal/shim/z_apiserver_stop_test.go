package shim

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// Last, on a cluster of its own: health turns 503 when the API server goes away, and the old
// health script alarms.
func TestHealthTurns503WhenTheAPIServerStops(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{})
	e := startShim(t, c)
	if code, h := getHealth(t, e.URL); code != http.StatusOK || h.Status != Healthy {
		t.Fatalf("before: %d %+v, want 200 healthy", code, h)
	}
	if code := runHealthScript(t, e.URL+"/api/v1/health"); code != 0 {
		t.Fatalf("health_check.sh before: exit %d", code)
	}
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "503 after the API server stopped", func() error {
		code, h := getHealth(t, e.URL)
		if code != http.StatusServiceUnavailable || h.Status != Unhealthy || h.Checks["kubernetes"] != Unhealthy {
			return fmt.Errorf("%d %+v", code, h)
		}
		return nil
	})
	if err := legacyHealthCheck(e.URL + "/api/v1/health"); err == nil {
		t.Errorf("the old health_check.sh logic passes with the API server down")
	}
	if code := runHealthScript(t, e.URL+"/api/v1/health"); code != 1 {
		t.Errorf("health_check.sh with the API server down: exit %d, want 1", code)
	}
}
