package vectorspace_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// The old service's index and namespace (docs/legacy-service.md), filled with
// text-embedding-ada-002 vectors.
const (
	legacyIndex     = "clickbid-prod"
	legacyNamespace = "v2"
)

// TestSamplesPassTheGuard runs every sample under config/samples (a CsvIngestion, or the
// CsvIngestion a CsvIngestionSchedule creates) that targets the legacy index through the guard,
// against an index filled as the old service left it, with a file of new ids (a daily delta): each
// must be Matched. A sample naming another model there (as the daily schedule once did with
// text-embedding-3-small) would write a foreign vector space every day.
func TestSamplesPassTheGuard(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(harness.RepoRoot(), "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	e := newEnv(t)
	old := map[string]string{}
	for i := range 5 {
		old["239."+strconv.Itoa(200+i)] = "Lot " + strconv.Itoa(i) + ": vintage oak table, pickup on January 10th, 2025 12:00:00 AM"
	}
	e.seed(t, "text-embedding-ada-002", old)

	checked := 0
	for _, file := range files {
		spec, kind, ok := sampleSpec(t, file)
		if !ok {
			continue // kustomization.yaml and the like
		}
		p := spec.Target.Pinecone
		if p.Index != legacyIndex || p.Namespace != legacyNamespace && p.Namespace != "" {
			t.Logf("%s (%s): targets %s/%s, not the legacy index", filepath.Base(file), kind, p.Index, p.Namespace)
			continue
		}
		checked++
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg := vectorspace.ConfigFor(spec)
			emb, err := embedding.New(embedding.Config{APIKey: "k", BaseURL: e.openai.URL(), Model: cfg.Model,
				Dimensions: cfg.Dimensions, ExpectedDimension: dims})
			if err != nil {
				t.Fatalf("model %q: %v", cfg.Model, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			newRows := []vectorspace.Candidate{{ID: spec.Mapping.IDPrefix + "90001", Namespace: legacyNamespace, Text: "a new row"}}
			st, err := vectorspace.Check(ctx, cfg, emb, e.up, newRows)
			if err != nil {
				t.Fatal(err)
			}
			if st.Result != v1alpha1.VectorSpaceMatched {
				t.Errorf("%s writes model %s into the legacy index %s/%s: guard %s: %s", kind, cfg.Model, legacyIndex, legacyNamespace, st.Result, st.Message)
			}
			if spec.Mapping.Sanitize != mapping.SanitizeLegacy || spec.Mapping.Metadata.Format != mapping.FormatLegacy {
				t.Errorf("%s writes into the legacy index with sanitize %q and metadata.format %q: the old service's vectors would change text and metadata",
					kind, spec.Mapping.Sanitize, spec.Mapping.Metadata.Format)
			}
		})
	}
	if checked < 3 {
		t.Errorf("%d samples target the legacy index, want the legacy ingestion and both schedules", checked)
	}
}

// sampleSpec reads the CsvIngestion spec a sample file stands for.
func sampleSpec(t *testing.T, file string) (v1alpha1.CsvIngestionSpec, string, bool) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &head); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	switch head.Kind {
	case "CsvIngestion":
		var o v1alpha1.CsvIngestion
		if err := yaml.UnmarshalStrict(b, &o); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return o.Spec, head.Kind, true
	case "CsvIngestionSchedule":
		var o v1alpha1.CsvIngestionSchedule
		if err := yaml.UnmarshalStrict(b, &o); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return o.Spec.Template.Spec, head.Kind, true
	}
	return v1alpha1.CsvIngestionSpec{}, "", false
}
