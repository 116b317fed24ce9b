// Package ingestfile reads a CsvIngestion manifest for `embedder run`, which works without a
// cluster: it applies the defaults the API server would (the CRD's, which a test keeps in step
// with this package's table), rejects unknown fields, and returns the worker's view of it.
package ingestfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// defaults are the CRD's `default:` values by path under spec, in order: an object the CRD
// defaults to {} has its own entry before the fields inside it. A "?" marks an object without a
// default (only defaulted inside when present; it documents the schema). Leaves are set only where
// absent, as the API server's structural defaulting does.
var defaults = []struct {
	path  string
	value any
}{
	{"source.csv", map[string]any{}},
	{"source.csv.delimiter", ","},
	{"source.csv.compression", "auto"},
	{"source.csv.encoding", "utf-8"},
	{"source.s3?.region", "us-east-1"},
	{"source.s3?.stageKeyPrefix", "vectordb-staging/"},
	{"source.s3?.credentialsSecretRef?.accessKeyIDKey", "AWS_ACCESS_KEY_ID"},
	{"source.s3?.credentialsSecretRef?.secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY"},
	{"source.metabase?.apiKeySecretRef?.key", "api-key"},
	{"source.metabase?.exportRowLimit", int64(1048575)},
	{"source.metabase?.stageTo?.keyPrefix", "staged/"},
	{"source.metabase?.stageTo?.region", "us-east-1"},
	{"source.metabase?.stageTo?.credentialsSecretRef?.accessKeyIDKey", "AWS_ACCESS_KEY_ID"},
	{"source.metabase?.stageTo?.credentialsSecretRef?.secretAccessKeyKey", "AWS_SECRET_ACCESS_KEY"},
	{"mapping?.sanitize", "basic"},
	{"mapping?.overlongText", "fail"},
	{"mapping?.metadata", map[string]any{}},
	{"mapping?.metadata.include", "all"},
	{"mapping?.metadata.textField", "text"},
	{"mapping?.metadata.textMaxChars", int64(1000)},
	{"mapping?.metadata.format", "standard"},
	{"embedding?.apiKeySecretRef?.key", "api-key"},
	{"embedding?.requestsPerMinute", int64(300)},
	{"embedding?.tokensPerMinute", int64(1000000)},
	{"embedding?.maxInputsPerRequest", int64(2048)},
	{"embedding?.mode", "online"},
	{"embedding?.batch?.maxEnqueuedTokens", int64(3000000)},
	{"embedding?.batch?.pollInterval", "1m"},
	{"embedding?.batch?.maxResubmits", int64(3)},
	{"target?.pinecone?.apiKeySecretRef?.key", "api-key"},
	{"target?.pinecone?.batchSize", int64(100)},
	{"chunking", map[string]any{}},
	{"chunking.rowsPerChunk", int64(1000)},
	{"chunking.parallelism", int64(4)},
	{"chunking.chunkTimeout", "30m"},
	{"chunking.retriesPerChunk", int64(3)},
	{"chunking.maxFailedRowsPercent", int64(1)},
	{"tracking?.dynamoDB?.region", "us-east-1"},
	{"deadLetter?.keyPrefix", "failed/"},
}

// ApplyDefaults sets the CRD defaults in spec (the object under .spec) where fields are absent.
func ApplyDefaults(spec map[string]any) {
	for _, d := range defaults {
		setDefault(spec, strings.Split(d.path, "."), d.value)
	}
}

func setDefault(obj map[string]any, path []string, value any) {
	name := strings.TrimSuffix(path[0], "?")
	if len(path) == 1 {
		if _, ok := obj[name]; !ok {
			obj[name] = copyValue(value)
		}
		return
	}
	if child, ok := obj[name].(map[string]any); ok {
		setDefault(child, path[1:], value)
	}
}

func copyValue(v any) any {
	if m, ok := v.(map[string]any); ok {
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = copyValue(x)
		}
		return out
	}
	return v
}

// Read loads a CsvIngestion manifest from path.
func Read(path string) (worker.Ingestion, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return worker.Ingestion{}, fmt.Errorf("read %s: %w", path, err)
	}
	ing, err := Parse(data)
	if err != nil {
		return worker.Ingestion{}, fmt.Errorf("%s: %w", path, err)
	}
	return ing, nil
}

// Parse decodes one CsvIngestion from YAML or JSON, applies the CRD defaults and rejects unknown
// fields. The task id is spec.taskID, else metadata.uid, else metadata.name (a file has no uid).
func Parse(data []byte) (worker.Ingestion, error) {
	jsonData, err := yaml.YAMLToJSON(data)
	if err != nil {
		return worker.Ingestion{}, fmt.Errorf("parse manifest: %w", err)
	}
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(jsonData))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return worker.Ingestion{}, fmt.Errorf("parse manifest: %w", err)
	}
	if raw == nil {
		return worker.Ingestion{}, errors.New("manifest is empty")
	}
	if kind, _ := raw["kind"].(string); kind != "CsvIngestion" {
		return worker.Ingestion{}, fmt.Errorf("manifest kind is %q, want CsvIngestion", kind)
	}
	if av, _ := raw["apiVersion"].(string); av != v1alpha1.GroupVersion.String() {
		return worker.Ingestion{}, fmt.Errorf("manifest apiVersion is %q, want %s", av, v1alpha1.GroupVersion.String())
	}
	spec, ok := raw["spec"].(map[string]any)
	if !ok {
		return worker.Ingestion{}, errors.New("manifest has no spec")
	}
	ApplyDefaults(spec)
	defaulted, err := json.Marshal(raw)
	if err != nil {
		return worker.Ingestion{}, fmt.Errorf("encode manifest: %w", err)
	}
	var obj v1alpha1.CsvIngestion
	strict := json.NewDecoder(bytes.NewReader(defaulted))
	strict.DisallowUnknownFields()
	if err := strict.Decode(&obj); err != nil {
		return worker.Ingestion{}, fmt.Errorf("decode CsvIngestion: %w", err)
	}
	if obj.Name == "" {
		return worker.Ingestion{}, errors.New("metadata.name is required")
	}
	if obj.Spec.Embedding.Model == "" {
		// As the API server's rule: no default model, which could differ from the index's.
		return worker.Ingestion{}, errors.New("spec.embedding.model is required: name the model the index's vectors were made with (the old service used text-embedding-ada-002)")
	}
	ing := worker.FromObject(&obj)
	if ing.TaskID == "" {
		ing.TaskID = obj.Name
	}
	if ing.Namespace == "" {
		ing.Namespace = "default"
	}
	return ing, nil
}
