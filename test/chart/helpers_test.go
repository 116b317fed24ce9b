// Package chart tests what ships beside the code: the Dockerfile, the Helm chart, the non-Helm
// manifests under config/ and the Argo CD health check. Rendering uses the real helm binary
// (bin/helm, from hack/tools.sh) and the API checks use a real kube-apiserver (envtest).
package chart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	release   = "vectordb-operator"
	namespace = "vectordb-system"
)

var (
	root      = harness.RepoRoot()
	chartDir  = filepath.Join(root, "charts", "vectordb-operator")
	allOnFile = filepath.Join(chartDir, "ci", "all-on-values.yaml")
)

func helmBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(harness.BinDir(), "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm is not in %s (%v): run `make tools` or `bash hack/tools.sh helm`", harness.BinDir(), err)
	}
	return bin
}

// helm runs the helm binary and returns stdout, or an error carrying stderr.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// A private home so no user repositories or plugins change the outcome.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// render runs helm template with the release name and namespace the tests use.
func render(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
}

func mustRender(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeObjects(out)
	if err != nil {
		t.Fatalf("decoding helm template output: %v\n%s", err, out)
	}
	return objs
}

// decodeObjects splits a multi-document YAML stream into objects, skipping empty documents.
func decodeObjects(s string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var out []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if s := strings.TrimSpace(string(raw)); s == "" || s == "null" || s == "{}" {
			continue
		}
		// Unstructured's own decoder keeps integers as int64, as the API machinery does.
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
}

func readObjects(t *testing.T, paths ...string) []*unstructured.Unstructured {
	t.Helper()
	var all []*unstructured.Unstructured
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeObjects(string(b))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		all = append(all, objs...)
	}
	return all
}

func find(objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	return nil
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// managerArgs returns the manager container's args of a rendered Deployment.
func managerArgs(t *testing.T, dep *unstructured.Unstructured) []string {
	t.Helper()
	containers, _, err := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) == 0 {
		t.Fatalf("deployment %s has no containers (%v)", dep.GetName(), err)
	}
	for _, c := range containers {
		cm := c.(map[string]any)
		if cm["name"] != "manager" {
			continue
		}
		args, _, err := unstructured.NestedStringSlice(cm, "args")
		if err != nil {
			t.Fatal(err)
		}
		return args
	}
	t.Fatalf("deployment %s has no manager container", dep.GetName())
	return nil
}
