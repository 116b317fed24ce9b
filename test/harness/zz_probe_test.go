package harness_test

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

func TestZZProbe(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{NoCRDs: true})
	t.Log(c.Kubeconfig)
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
}
