package manager

import (
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// TestImplicitBudgetKeyHidesURLCredentials: the budget key is a metric label and goes to pods; a
// base URL's user info or query (a proxy's key) must not appear in it, while different
// endpoints keep different budgets.
func TestImplicitBudgetKeyHidesURLCredentials(t *testing.T) {
	spec := func(base string) v1alpha1.EmbeddingSpec {
		return v1alpha1.EmbeddingSpec{BaseURL: base, Model: "text-embedding-3-small",
			APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai", Key: "api-key"}}
	}
	for _, c := range []struct{ base, want string }{
		{"", "ns/openai:api-key//text-embedding-3-small"},
		{"https://proxy.example.com/v1", "ns/openai:api-key/https://proxy.example.com/v1/text-embedding-3-small"},
		{"https://user:s3cret@proxy.example.com/v1?api-key=s3cret#s3cret", "ns/openai:api-key/https://proxy.example.com/v1/text-embedding-3-small"},
		{"https://proxy.example.com:%zz/v1?api-key=s3cret", "ns/openai:api-key/https://?/text-embedding-3-small"},
	} {
		got := ImplicitBudgetKey("ns", spec(c.base))
		if got != c.want || strings.Contains(got, "s3cret") {
			t.Errorf("base %q: key %q, want %q", c.base, got, c.want)
		}
	}
	if ImplicitBudgetKey("ns", spec("https://a.example.com/v1")) == ImplicitBudgetKey("ns", spec("https://b.example.com/v1")) {
		t.Error("two endpoints share a budget")
	}
}
