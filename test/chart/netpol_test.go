package chart

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// workerRoles are the values of every Role* constant of internal/worker, read from its source so a
// role added there is checked without anyone listing it here.
func workerRoles(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	roles := map[string]string{}
	for _, p := range mustGlob(t, filepath.Join(root, "internal", "worker", "*.go")) {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Role") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					roles[name.Name] = v
				}
			}
			return true
		})
	}
	if len(roles) < 4 {
		t.Fatalf("found only %v Role constants in internal/worker", roles)
	}
	return roles
}

// The workers' NetworkPolicy selects a pod of every role the embedder runs as (the sync pod holds
// the Pinecone key, the cleanup pod S3 access), and no pod without the role label.
func TestWorkerNetworkPolicyCoversEveryRole(t *testing.T) {
	objs := mustRender(t, "--set", "networkPolicy.workers.enabled=true")
	var nps []*unstructured.Unstructured
	for _, o := range ofKind(objs, "NetworkPolicy") {
		if strings.HasSuffix(o.GetName(), "-workers") {
			nps = append(nps, o)
		}
	}
	if len(nps) == 0 {
		t.Fatal("no workers NetworkPolicy rendered")
	}
	for _, np := range nps {
		raw, _, _ := unstructured.NestedMap(np.Object, "spec", "podSelector")
		var ls metav1.LabelSelector
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
			t.Fatal(err)
		}
		sel, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			t.Fatal(err)
		}
		for name, role := range workerRoles(t) {
			if !sel.Matches(labels.Set{worker.LabelRole: role}) {
				t.Errorf("%s/%s does not select pods of worker.%s (%q): they would be unfenced", np.GetNamespace(), np.GetName(), name, role)
			}
		}
		if sel.Matches(labels.Set{"app": "something-else"}) {
			t.Errorf("%s/%s selects pods that are not the operator's workers", np.GetNamespace(), np.GetName())
		}
	}
}
