// Command crdtemplate removes the transition rules (those reading oldSelf) from the
// CsvIngestionSpec embedded as spec.template in the CsvIngestionSchedule CRD. On a CsvIngestion
// they make source, mapping, target and the model immutable; on a schedule's template they would
// forbid editing the template, which only shapes future runs. controller-gen attaches rules to a
// type wherever it is used, so `make manifests` runs this after it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

func main() {
	file := flag.String("crd", "config/crd/bases/ingestion.vectordb.io_csvingestionschedules.yaml", "CRD file to rewrite in place")
	flag.Parse()
	if err := run(*file); err != nil {
		fmt.Fprintln(os.Stderr, "crdtemplate:", err)
		os.Exit(1)
	}
}

func run(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	out, n, err := strip(b)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "crdtemplate: removed %d transition rule(s) from spec.template in %s\n", n, file)
	return nil
}

// strip returns the CRD without oldSelf rules under spec.template, and how many it removed.
func strip(b []byte) ([]byte, int, error) {
	var crd map[string]any
	if err := yaml.Unmarshal(bytes.TrimPrefix(b, []byte("---\n")), &crd); err != nil {
		return nil, 0, err
	}
	spec, _ := crd["spec"].(map[string]any)
	versions, _ := spec["versions"].([]any)
	n := 0
	for _, v := range versions {
		tpl := dig(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", "template")
		if tpl == nil {
			return nil, 0, fmt.Errorf("no spec.template in the schema")
		}
		n += walk(tpl)
	}
	out, err := yaml.Marshal(crd)
	if err != nil {
		return nil, 0, err
	}
	return append([]byte("---\n"), out...), n, nil
}

func dig(v any, path ...string) map[string]any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	m, _ := v.(map[string]any)
	return m
}

func walk(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		if rules, ok := x["x-kubernetes-validations"].([]any); ok {
			kept := rules[:0]
			for _, r := range rules {
				if rm, ok := r.(map[string]any); ok && strings.Contains(fmt.Sprint(rm["rule"]), "oldSelf") {
					n++
					continue
				}
				kept = append(kept, r)
			}
			if len(kept) == 0 {
				delete(x, "x-kubernetes-validations")
			} else {
				x["x-kubernetes-validations"] = kept
			}
		}
		for _, c := range x {
			n += walk(c)
		}
	case []any:
		for _, c := range x {
			n += walk(c)
		}
	}
	return n
}
