package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The committed docs/reference.md must be what the generator makes of the committed CRD.
func TestReferenceIsUpToDate(t *testing.T) {
	root := filepath.Join("..", "..")
	want, err := RenderDir(filepath.Join(root, "config", "crd", "bases"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "docs", "reference.md"))
	if err != nil {
		t.Fatalf("%v (generate it with `make reference`)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/reference.md is stale: run `make reference` (or go run ./hack/crdref) and commit the result")
	}
}

// The reference carries what a user needs from the schema: defaults, ranges, enums, required
// fields and the CEL rules' messages.
func TestReferenceShowsSchemaFacts(t *testing.T) {
	doc, err := RenderDir(filepath.Join("..", "..", "config", "crd", "bases"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	for _, want := range []string{
		"| apiVersion | `ingestion.vectordb.io/v1alpha1` |",
		"| short names | `csvi` |",
		"### `spec.chunking`",
		"| `rowsPerChunk` | int32 |  | `1000` | ≥ 1; ≤ 1e+06; CEL: see Validation rules |",
		"| `sanitize` | string |  | `\"basic\"` | one of \"none\", \"basic\", \"legacy\" |",
		"| `bucket` | string | yes |",
		"set exactly one of spec.source.s3 or spec.source.metabase",
		"| Progress | string | `.status.progress` |",
		"### `status.failedChunks[]`",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

func TestRenderDirRejectsWhatIsNotACRD(t *testing.T) {
	dir := t.TempDir()
	if _, err := RenderDir(dir); err == nil || !strings.Contains(err.Error(), "no CRD files") {
		t.Fatalf("empty folder: got %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderDir(dir); err == nil {
		t.Fatal("a ConfigMap was rendered as a CRD")
	}
}
