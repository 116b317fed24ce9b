package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/internal/manager"
)

// flagRow is a row of docs/operations.md's flag table: | `--name` | `default` | `helm.value` ... |
var flagRow = regexp.MustCompile("^\\| `--([a-z0-9-]+)` \\| (`[^`]*`|—) \\| `([A-Za-z0-9.]+)`")

// docs/operations.md lists every manager flag once, with the manager's default and a Helm value
// that exists.
func TestOperationsDocListsEveryFlag(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	valuesRaw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(valuesRaw, &values); err != nil {
		t.Fatal(err)
	}

	documented := map[string]bool{}
	opts := manager.DefaultOptions()
	fs := manager.FlagSet(&opts)
	for _, line := range strings.Split(string(b), "\n") {
		m := flagRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, def, value := m[1], strings.Trim(m[2], "`"), m[3]
		if documented[name] {
			t.Errorf("--%s is listed twice", name)
		}
		documented[name] = true
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("--%s is documented but the manager has no such flag", name)
			continue
		}
		if def == "—" {
			def = ""
		}
		if name == "embedder-image" {
			def = strings.Replace(def, "<version>", "dev", 1)
		}
		if def != f.DefValue {
			t.Errorf("--%s: documented default %q, the manager's is %q", name, def, f.DefValue)
		}
		if !hasPath(values, value) {
			t.Errorf("--%s: Helm value %s is not in values.yaml", name, value)
		}
	}
	var missing []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !documented[f.Name] {
			missing = append(missing, f.Name)
		}
	})
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("flags missing from docs/operations.md: %v", missing)
	}
}

func hasPath(m map[string]any, path string) bool {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = mm[p]; !ok {
			return false
		}
	}
	return true
}

// Every alert the chart defines has a runbook section in docs/operations.md, where its
// runbook_url points.
func TestEveryAlertHasARunbook(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	rule := find(mustRender(t, "--set", "prometheusRule.enabled=true"), "PrometheusRule", namespace, release)
	if rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	groups := rule.Object["spec"].(map[string]any)["groups"].([]any)
	n := 0
	for _, g := range groups {
		for _, r := range g.(map[string]any)["rules"].([]any) {
			rm := r.(map[string]any)
			alert, _ := rm["alert"].(string)
			ann, _ := rm["annotations"].(map[string]any)
			n++
			if !strings.Contains(doc, "\n### "+alert+"\n") {
				t.Errorf("alert %s has no runbook section in docs/operations.md", alert)
			}
			want := "https://github.com/vectordb-io/vectordb-operator/blob/main/docs/operations.md#" + strings.ToLower(alert)
			if ann["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %v, want %s", alert, ann["runbook_url"], want)
			}
		}
	}
	if n == 0 {
		t.Fatal("the PrometheusRule has no rules")
	}
}
