package chart

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var argoDir = filepath.Join(root, "deploy", "argocd")

// runHealthLua runs a health script the way Argo CD runs a custom check from argocd-cm
// (util/lua): gopher-lua with only the package, base and table libraries, a one-second deadline,
// the object as the global obj (numbers as Lua numbers), and a returned table read as
// {status, message}.
func runHealthLua(script string, obj map[string]any) (status, message string, err error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", fmt.Errorf("open %s: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("script returned %s, not a table", l.Get(-1).Type())
	}
	var bad []string
	ret.ForEach(func(k, v lua.LValue) {
		switch k.String() {
		case "status":
			status = v.String()
		case "message":
			message = v.String()
		default:
			bad = append(bad, k.String())
		}
		if v.Type() != lua.LTString {
			bad = append(bad, k.String()+" is a "+v.Type().String())
		}
	})
	if len(bad) > 0 {
		return "", "", fmt.Errorf("unexpected fields in the returned table: %v", bad)
	}
	switch status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "", "", fmt.Errorf("status %q is not an Argo CD health status", status)
	}
	return status, message, nil
}

// toLua converts an unstructured object as Argo CD's decodeValue does.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []any:
		t := l.CreateTable(len(x), 0)
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(x))
		for k, item := range x {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

func healthScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(argoDir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ingestion(t *testing.T, generation int, status string) map[string]any {
	t.Helper()
	doc := fmt.Sprintf(`apiVersion: ingestion.vectordb.io/v1alpha1
kind: CsvIngestion
metadata: {name: q239, namespace: ingestion, generation: %d}
spec: {suspend: false}
%s`, generation, status)
	objs, err := decodeObjects(doc)
	if err != nil || len(objs) != 1 {
		t.Fatalf("bad test object (%v):\n%s", err, doc)
	}
	return objs[0].Object
}

func TestArgoCDHealthCheck(t *testing.T) {
	script := healthScript(t)
	cases := []struct {
		name        string
		generation  int
		status      string // YAML of .status, or "" for none
		wantStatus  string
		wantMessage string
	}{
		{"no status yet", 1, "", "Progressing", "Waiting for the operator to reconcile"},
		{"empty status", 1, "status: {}", "Progressing", "Waiting for the operator to reconcile"},
		{"Pending", 1, "status: {phase: Pending, observedGeneration: 1}", "Progressing", "Pending"},
		{"Planning", 1, "status: {phase: Planning, observedGeneration: 1, message: planning exports/239.csv}",
			"Progressing", "Planning: planning exports/239.csv"},
		{"ProcessingChunks", 2, "status: {phase: ProcessingChunks, observedGeneration: 2, progress: 55/100, message: 4 chunks running}",
			"Progressing", "ProcessingChunks 55/100 chunks: 4 chunks running"},
		{"ProcessingChunks, Suspended condition false", 2, `status:
  phase: ProcessingChunks
  observedGeneration: 2
  progress: 10/100
  conditions: [{type: Planned, status: "True"}, {type: Suspended, status: "False", reason: Running}]`,
			"Progressing", "ProcessingChunks 10/100 chunks"},
		{"suspended", 3, `status:
  phase: ProcessingChunks
  observedGeneration: 3
  progress: 10/100
  conditions: [{type: Planned, status: "True"}, {type: Suspended, status: "True", reason: Suspended, message: "spec.suspend is set: no chunk runs"}]`,
			"Suspended", "spec.suspend is set: no chunk runs"},
		{"Completed", 1, "status: {phase: Completed, observedGeneration: 1, message: 100000 rows in 100 chunks}",
			"Healthy", "100000 rows in 100 chunks"},
		{"Completed without message", 1, "status: {phase: Completed, observedGeneration: 1}", "Healthy", "Completed"},
		{"PartiallyCompleted", 1, "status: {phase: PartiallyCompleted, observedGeneration: 1, message: 3 of 100000 rows failed}",
			"Degraded", "PartiallyCompleted: 3 of 100000 rows failed"},
		{"Failed", 1, "status: {phase: Failed, observedGeneration: 1, message: the header lacks column formatted_text}",
			"Degraded", "Failed: the header lacks column formatted_text"},
		{"Failed without message", 1, "status: {phase: Failed, observedGeneration: 1}", "Degraded", "Failed"},
		{"Cancelled", 2, "status: {phase: Cancelled, observedGeneration: 2, message: spec.cancel is set}",
			"Suspended", "Cancelled: spec.cancel is set"},
		{"stale observedGeneration on a finished ingestion", 3, "status: {phase: Completed, observedGeneration: 2}",
			"Progressing", "Waiting for the operator to observe generation 3"},
		{"stale observedGeneration on a failed ingestion", 2, "status: {phase: Failed, observedGeneration: 1, message: x}",
			"Progressing", "Waiting for the operator to observe generation 2"},
		{"no observedGeneration", 1, "status: {phase: Completed}", "Progressing", "Waiting for the operator to observe generation 1"},
		{"a phase from a newer operator", 1, "status: {phase: Verifying, observedGeneration: 1}", "Progressing", "Verifying"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, message, err := runHealthLua(script, ingestion(t, c.generation, c.status))
			if err != nil {
				t.Fatal(err)
			}
			if status != c.wantStatus || message != c.wantMessage {
				t.Errorf("got %s %q, want %s %q", status, message, c.wantStatus, c.wantMessage)
			}
		})
	}

	// Every phase of the API is covered above.
	for _, phase := range []string{"Pending", "Planning", "ProcessingChunks", "Completed", "PartiallyCompleted", "Failed", "Cancelled"} {
		covered := false
		for _, c := range cases {
			covered = covered || strings.Contains(c.status, "phase: "+phase+",") || strings.Contains(c.status, "phase: "+phase+"\n")
		}
		if !covered {
			t.Errorf("phase %s has no case", phase)
		}
	}
}

// The harness above must be strict enough to catch what Argo CD would reject.
func TestArgoCDHealthHarnessRejectsWhatArgoCDWould(t *testing.T) {
	obj := ingestion(t, 1, "status: {phase: Completed, observedGeneration: 1}")
	for name, script := range map[string]string{
		"string library":   `local hs = {}; hs.status = string.upper("healthy"); return hs`,
		"os library":       `local hs = {}; hs.status = "Healthy"; hs.message = os.getenv("HOME"); return hs`,
		"invalid status":   `return {status = "Fine"}`,
		"not a table":      `return "Healthy"`,
		"endless loop":     `while true do end`,
		"number as status": `return {status = 1}`,
	} {
		t.Run(name, func(t *testing.T) {
			if status, msg, err := runHealthLua(script, obj); err == nil {
				t.Fatalf("accepted: %s %q", status, msg)
			}
		})
	}
}

// argocd-cm.yaml carries health.lua verbatim under the key Argo CD looks up for the kind.
func TestArgoCDConfigMapEmbedsHealthLua(t *testing.T) {
	objs := readObjects(t, filepath.Join(argoDir, "argocd-cm.yaml"))
	if len(objs) != 1 || objs[0].GetKind() != "ConfigMap" || objs[0].GetName() != "argocd-cm" {
		t.Fatalf("argocd-cm.yaml holds %d objects, want the argocd-cm ConfigMap", len(objs))
	}
	data, _, _ := unstructured.NestedStringMap(objs[0].Object, "data")
	got, ok := data["resource.customizations.health.ingestion.vectordb.io_CsvIngestion"]
	if !ok {
		t.Fatalf("argocd-cm data keys %v lack the CsvIngestion health key", keys(data))
	}
	if got != healthScript(t) {
		t.Error("the script in argocd-cm.yaml differs from health.lua")
	}
}

// The example Applications point at paths that exist and use the options docs/gitops-argocd.md
// explains.
func TestArgoCDApplications(t *testing.T) {
	apps := readObjects(t, filepath.Join(argoDir, "application-operator.yaml"), filepath.Join(argoDir, "application-ingestions.yaml"))
	byName := map[string]*unstructured.Unstructured{}
	for _, a := range apps {
		if a.GetKind() != "Application" || a.GetAPIVersion() != "argoproj.io/v1alpha1" {
			t.Fatalf("%s/%s is not an Argo CD Application", a.GetAPIVersion(), a.GetKind())
		}
		byName[a.GetName()] = a
		path, _, _ := unstructured.NestedString(a.Object, "spec", "source", "path")
		if _, err := os.Stat(filepath.Join(root, path)); err != nil {
			t.Errorf("Application %s: source path %q: %v", a.GetName(), path, err)
		}
	}
	ing := byName["vectordb-ingestions"]
	if ing == nil {
		t.Fatal("no vectordb-ingestions Application")
	}
	opts, _, _ := unstructured.NestedStringSlice(ing.Object, "spec", "syncPolicy", "syncOptions")
	if !contains(opts, "SkipDryRunOnMissingResource=true") {
		t.Errorf("ingestions Application sync options %v lack SkipDryRunOnMissingResource=true", opts)
	}
	if prune, _, _ := unstructured.NestedBool(ing.Object, "spec", "syncPolicy", "automated", "prune"); prune {
		t.Error("ingestions Application prunes: a manifest removed from Git would delete (and cancel) its ingestion")
	}

	op := byName["vectordb-operator"]
	if op == nil {
		t.Fatal("no vectordb-operator Application")
	}
	// Its values must pass the chart's schema and templates.
	values, _, _ := unstructured.NestedMap(op.Object, "spec", "source", "helm", "valuesObject")
	f := filepath.Join(t.TempDir(), "values.json")
	b, err := json.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := render(t, "-f", f); err != nil {
		t.Errorf("the operator Application's values do not render: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
