package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// TestModelRulesAndOverlongText: `dimensions` only with a model that takes it, and
// mapping.overlongText one of fail | truncate, defaulting to fail.
func TestModelRulesAndOverlongText(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(map[string]any)
		want   string // "" accepted
	}{
		{"ada with dimensions", func(s map[string]any) {
			set(s, "embedding.model", "text-embedding-ada-002")
			set(s, "embedding.dimensions", int64(1536))
		}, "spec.embedding.dimensions is only accepted by models that can shorten their vectors"},
		{"ada without dimensions", func(s map[string]any) { set(s, "embedding.model", "text-embedding-ada-002") }, ""},
		{"3-large with dimensions", func(s map[string]any) {
			set(s, "embedding.model", "text-embedding-3-large")
			set(s, "embedding.dimensions", int64(1024))
		}, ""},
		{"overlong truncate", func(s map[string]any) { set(s, "mapping.overlongText", "truncate") }, ""},
		{"overlong unknown", func(s map[string]any) { set(s, "mapping.overlongText", "split") }, `spec.mapping.overlongText: Unsupported value: "split"`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, minimal)
			u.SetName(fmt.Sprintf("model-rules-%d", i))
			tc.mutate(u.Object["spec"].(map[string]any))
			err := cluster.Client.Create(ctx, u)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want Invalid containing %q", err, tc.want)
			}
		})
	}
	// The default is fail.
	u := loadSample(t, minimal)
	u.SetName("model-rules-default")
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructuredString(u.Object, "spec", "mapping", "overlongText"); got != "fail" {
		t.Fatalf("overlongText defaulted to %q, want fail", got)
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
