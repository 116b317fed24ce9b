package v1alpha1_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestPrefixRuleSparesRunsFromBeforeIt: deleteMissing existed before the prefix-free idPrefix
// rule, so an upgraded cluster holds ingestions with deleteMissing and an idPrefix such as "q1".
// Their spec.sync and spec.mapping are immutable, so nothing can make them comply; the rule must
// still let their owner cancel or suspend them, while a new one with that prefix is rejected.
// The CRD is served without the rule while the old ingestion is created, then restored.
func TestPrefixRuleSparesRunsFromBeforeIt(t *testing.T) {
	ctx := context.Background()
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	if err := cluster.Client.Get(ctx, client.ObjectKey{Name: "csvingestions.ingestion.vectordb.io"}, crd); err != nil {
		t.Fatal(err)
	}
	// The rule may sit on the object or on spec: take it out of both.
	paths := [][]string{
		{"schema", "openAPIV3Schema", "x-kubernetes-validations"},
		{"schema", "openAPIV3Schema", "properties", "spec", "x-kubernetes-validations"},
	}
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	v0 := versions[0].(map[string]any)
	rules, kept := make([][]any, len(paths)), make([][]any, len(paths))
	removed := 0
	for i, path := range paths {
		rules[i], _, _ = unstructured.NestedSlice(v0, path...)
		for _, r := range rules[i] {
			if strings.Contains(r.(map[string]any)["message"].(string), "prefix-free") {
				removed++
			} else {
				kept[i] = append(kept[i], r)
			}
		}
	}
	if removed != 1 {
		t.Fatalf("%d prefix-free rules on the CsvIngestion CRD, want 1", removed)
	}
	setRules := func(rs [][]any) {
		t.Helper()
		if err := cluster.Client.Get(ctx, client.ObjectKey{Name: crd.GetName()}, crd); err != nil {
			t.Fatal(err)
		}
		vs, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for i, path := range paths {
			if rs[i] == nil {
				unstructured.RemoveNestedField(vs[0].(map[string]any), path...)
				continue
			}
			if err := unstructured.SetNestedSlice(vs[0].(map[string]any), rs[i], path...); err != nil {
				t.Fatal(err)
			}
		}
		if err := unstructured.SetNestedSlice(crd.Object, vs, "spec", "versions"); err != nil {
			t.Fatal(err)
		}
		if err := cluster.Client.Update(ctx, crd); err != nil {
			t.Fatal(err)
		}
	}
	old := func(name string) *unstructured.Unstructured {
		u := loadSample(t, minimal)
		u.SetName(name)
		set(u.Object, "spec.sync.deleteMissing", true)
		set(u.Object, "spec.mapping.idPrefix", "q1")
		return u
	}
	// until polls create of a fresh "q1" ingestion until rejected says want (the CRD's new schema
	// reaches the handler asynchronously).
	until := func(rejected bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			probe := old("upgrade-probe")
			err := cluster.Client.Create(ctx, probe)
			if err == nil {
				_ = cluster.Client.Delete(ctx, probe)
			}
			if (err != nil && strings.Contains(err.Error(), "prefix-free")) == rejected {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the CRD's rules did not settle (want rejected %v): %v", rejected, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	setRules(kept)
	restored := false
	defer func() {
		if !restored {
			setRules(rules)
		}
	}()
	until(false)
	u := old("upgrade-old-run")
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cluster.Client.Delete(ctx, u) }()
	setRules(rules)
	restored = true
	until(true)

	for _, field := range []string{"spec.suspend", "spec.cancel"} {
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), u); err != nil {
			t.Fatal(err)
		}
		set(u.Object, field, true)
		if err := cluster.Client.Update(ctx, u); err != nil {
			t.Errorf("setting %s on an ingestion from before the rule: %v", field, err)
		}
	}
}
