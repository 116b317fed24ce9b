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
	return readScript(t, "health.lua")
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
		// Finished within its failure budget: what was asked for, with the failed rows in the message.
		{"PartiallyCompleted", 1, "status: {phase: PartiallyCompleted, observedGeneration: 1, message: 3 of 100000 rows failed}",
			"Healthy", "PartiallyCompleted: 3 of 100000 rows failed"},
		{"PartiallyCompleted without message", 1, "status: {phase: PartiallyCompleted, observedGeneration: 1}", "Healthy", "PartiallyCompleted"},
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

// argocd-cm.yaml carries each script verbatim under the key Argo CD looks up for its kind.
func TestArgoCDConfigMapEmbedsHealthLua(t *testing.T) {
	objs := readObjects(t, filepath.Join(argoDir, "argocd-cm.yaml"))
	if len(objs) != 1 || objs[0].GetKind() != "ConfigMap" || objs[0].GetName() != "argocd-cm" {
		t.Fatalf("argocd-cm.yaml holds %d objects, want the argocd-cm ConfigMap", len(objs))
	}
	data, _, _ := unstructured.NestedStringMap(objs[0].Object, "data")
	for key, file := range map[string]string{
		"resource.customizations.health.ingestion.vectordb.io_CsvIngestion": "health.lua",
		"resource.customizations.health.argoproj.io_Application":            "application-health.lua",
	} {
		got, ok := data[key]
		if !ok {
			t.Errorf("argocd-cm data keys %v lack %s", keys(data), key)
			continue
		}
		if got != readScript(t, file) {
			t.Errorf("the script under %s in argocd-cm.yaml differs from %s", key, file)
		}
	}
}

func readScript(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(argoDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The Application health check makes a parent app-of-apps wait for a child to be Healthy before
// its next sync wave: the child's own health is its health as a resource.
func TestArgoCDApplicationHealthCheck(t *testing.T) {
	script := readScript(t, "application-health.lua")
	cases := []struct {
		name, status        string // YAML of .status, or "" for none
		wantStatus, wantMsg string
	}{
		{"never synced", "", "Progressing", ""},
		{"no health yet", "status: {sync: {status: OutOfSync}}", "Progressing", ""},
		{"empty health", "status: {health: {}}", "Progressing", ""},
		{"healthy", "status: {health: {status: Healthy}}", "Healthy", ""},
		{"progressing with message", "status: {health: {status: Progressing, message: waiting for rollout}}", "Progressing", "waiting for rollout"},
		{"degraded", "status: {health: {status: Degraded, message: Deployment has 0 available replicas}}", "Degraded", "Deployment has 0 available replicas"},
		{"missing", "status: {health: {status: Missing}}", "Missing", ""},
		{"suspended", "status: {health: {status: Suspended}}", "Suspended", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs, err := decodeObjects("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: child, namespace: argocd}\n" + c.status)
			if err != nil {
				t.Fatal(err)
			}
			status, msg, err := runHealthLua(script, objs[0].Object)
			if err != nil {
				t.Fatal(err)
			}
			if status != c.wantStatus || msg != c.wantMsg {
				t.Errorf("got %s %q, want %s %q", status, msg, c.wantStatus, c.wantMsg)
			}
		})
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

	// Both retry: automated sync does not try a failed revision again by itself, and a first sync
	// on a fresh cluster can fail (no CRD yet, a namespace not there yet).
	for _, a := range []*unstructured.Unstructured{op, ing} {
		limit, found, _ := unstructured.NestedInt64(a.Object, "spec", "syncPolicy", "retry", "limit")
		backoff, _, _ := unstructured.NestedString(a.Object, "spec", "syncPolicy", "retry", "backoff", "maxDuration")
		if !found || limit == 0 || backoff == "" {
			t.Errorf("Application %s: syncPolicy.retry limit %d (found %v), backoff.maxDuration %q", a.GetName(), limit, found, backoff)
		}
		opts, _, _ := unstructured.NestedStringSlice(a.Object, "spec", "syncPolicy", "syncOptions")
		if !contains(opts, "CreateNamespace=true") {
			t.Errorf("Application %s does not create its destination namespace: %v", a.GetName(), opts)
		}
	}

	// The app-of-apps syncs the ingestion namespace, then the operator, then the ingestions.
	nsObjs := readObjects(t, filepath.Join(argoDir, "namespace-ingestion.yaml"))
	if len(nsObjs) != 1 || nsObjs[0].GetKind() != "Namespace" {
		t.Fatalf("namespace-ingestion.yaml: %d objects", len(nsObjs))
	}
	ingNS, _, _ := unstructured.NestedString(ing.Object, "spec", "destination", "namespace")
	if nsObjs[0].GetName() != ingNS {
		t.Errorf("namespace-ingestion.yaml creates %q, the ingestions go to %q", nsObjs[0].GetName(), ingNS)
	}
	watched, _, _ := unstructured.NestedStringSlice(op.Object, "spec", "source", "helm", "valuesObject", "watchNamespaces")
	if !contains(watched, ingNS) {
		t.Errorf("the operator watches %v, not the ingestions' namespace %s", watched, ingNS)
	}
	wave := func(o *unstructured.Unstructured) int {
		var w int
		if _, err := fmt.Sscan(o.GetAnnotations()["argocd.argoproj.io/sync-wave"], &w); err != nil {
			t.Errorf("%s %s has no sync wave", o.GetKind(), o.GetName())
		}
		return w
	}
	if !(wave(nsObjs[0]) < wave(op) && wave(op) < wave(ing)) {
		t.Errorf("sync waves: namespace %d, operator %d, ingestions %d; want increasing", wave(nsObjs[0]), wave(op), wave(ing))
	}
	root := readObjects(t, filepath.Join(argoDir, "root-application.yaml"))
	if len(root) != 1 || root[0].GetKind() != "Application" {
		t.Fatal("root-application.yaml holds no Application")
	}
	rootPath, _, _ := unstructured.NestedString(root[0].Object, "spec", "source", "path")
	include, _, _ := unstructured.NestedString(root[0].Object, "spec", "source", "directory", "include")
	if rootPath != "deploy/argocd" {
		t.Errorf("root Application path %q", rootPath)
	}
	for _, f := range []string{"namespace-ingestion.yaml", "application-operator.yaml", "application-ingestions.yaml"} {
		if !strings.Contains(include, f) {
			t.Errorf("root Application include %q lacks %s", include, f)
		}
	}
	if strings.Contains(include, "argocd-cm") || strings.Contains(include, "*") {
		t.Errorf("root Application include %q would sync Argo CD's own configuration", include)
	}
	if _, found, _ := unstructured.NestedInt64(root[0].Object, "spec", "syncPolicy", "retry", "limit"); !found {
		t.Error("root Application has no retry")
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
