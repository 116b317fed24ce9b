// Package generated checks that the committed CRD, RBAC and deepcopy code match the Go types and
// markers: a stale file would ship an API server schema that disagrees with the controller.
package generated

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

func TestGeneratedFilesAreFresh(t *testing.T) {
	root := harness.RepoRoot()
	gen := filepath.Join(harness.BinDir(), "controller-gen")
	if _, err := os.Stat(gen); err != nil {
		t.Fatalf("controller-gen not built (run make tools): %v", err)
	}
	tmp := t.TempDir()
	crdDir, rbacDir, objDir := filepath.Join(tmp, "crd"), filepath.Join(tmp, "rbac"), filepath.Join(tmp, "obj")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(gen, args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %v: %v\n%s", args, err, out)
		}
	}
	// Same generators and options as `make manifests generate`.
	run("rbac:roleName=vectordb-operator-manager", "crd", "paths=./...",
		"output:crd:artifacts:config="+crdDir, "output:rbac:artifacts:config="+rbacDir)
	run("object", "paths=./api/...", "output:object:dir="+objDir)
	// `make manifests` then drops the transition rules from the schedule's template.
	strip := exec.Command("go", "run", "./hack/crdtemplate", "-crd", filepath.Join(crdDir, "ingestion.vectordb.io_csvingestionschedules.yaml"))
	strip.Dir = root
	if out, err := strip.CombinedOutput(); err != nil {
		t.Fatalf("hack/crdtemplate: %v\n%s", err, out)
	}

	compareDir(t, crdDir, filepath.Join(root, "config/crd/bases"))
	compareFile(t, filepath.Join(rbacDir, "role.yaml"), filepath.Join(root, "config/rbac/role.yaml"))
	compareFile(t, filepath.Join(objDir, "zz_generated.deepcopy.go"), filepath.Join(root, "api/v1alpha1/zz_generated.deepcopy.go"))
}

func compareDir(t *testing.T, fresh, committed string) {
	t.Helper()
	entries, err := os.ReadDir(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatalf("controller-gen wrote nothing to %s", fresh)
	}
	for _, e := range entries {
		compareFile(t, filepath.Join(fresh, e.Name()), filepath.Join(committed, e.Name()))
	}
}

func compareFile(t *testing.T, fresh, committed string) {
	t.Helper()
	want, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatalf("read generated %s: %v", fresh, err)
	}
	got, err := os.ReadFile(committed)
	if err != nil {
		t.Fatalf("%s is missing: run make manifests generate and commit it (%v)", committed, err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s is stale: run `make manifests generate` and commit the result", committed)
	}
}
