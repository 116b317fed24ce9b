package chunkrun_test

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// TestLeaseFromEnv: a lease URL with its credential makes a lease client; without the
// credential (the optional lease Secret was deleted) the pod runs without a lease and logs why;
// without a URL (leases off) it runs without one and logs nothing.
func TestLeaseFromEnv(t *testing.T) {
	ing := worker.Ingestion{}
	ing.Namespace, ing.Name = "ns", "a"
	cases := []struct {
		name, url, cred string
		lease           bool
		log             string
	}{
		{"leased", "http://leases/v1/rate-leases", "c", true, ""},
		{"secret deleted", "http://leases/v1/rate-leases", "", false, "a-rate-lease"},
		{"leases off", "", "", false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(ratelease.EnvURL, c.url)
			t.Setenv(ratelease.EnvCredential, c.cred)
			var logs strings.Builder
			opts := chunkrun.LeaseFromEnv(ing, funcr.New(func(p, a string) { logs.WriteString(a + "\n") }, funcr.Options{}))
			if (opts != nil) != c.lease {
				t.Fatalf("lease options %+v, want a lease: %v", opts, c.lease)
			}
			if c.log == "" && logs.Len() > 0 || c.log != "" && !strings.Contains(logs.String(), c.log) {
				t.Fatalf("logs %q, want %q", logs.String(), c.log)
			}
		})
	}
}
