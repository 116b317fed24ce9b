package ingestfile

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"sigs.k8s.io/yaml"
)

// crdSchema loads the CsvIngestion CRD's structural schema, as the API server uses it.
func crdSchema(t *testing.T) *structuralschema.Structural {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", "ingestion.vectordb.io_csvingestions.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		t.Fatal(err)
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(crd.Spec.Versions[0].Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		t.Fatal(err)
	}
	s, err := structuralschema.NewStructural(&internal)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The table must default exactly as the API server does, for specs that leave out everything
// optional and for specs that have every defaulted object present but empty.
func TestDefaultsMatchTheCRD(t *testing.T) {
	s := crdSchema(t)
	specs := []string{
		`{"source":{"s3":{"bucket":"b","key":"k"}},"mapping":{"textColumn":"t"},"embedding":{"apiKeySecretRef":{"name":"o"}},"target":{"pinecone":{"index":"i","apiKeySecretRef":{"name":"p"}}}}`,
		`{"source":{"s3":{"bucket":"b","key":"k","credentialsSecretRef":{"name":"c"}},"csv":{}},"mapping":{"textColumn":"t","metadata":{}},
		  "embedding":{"model":"m","apiKeySecretRef":{"name":"o"}},"target":{"pinecone":{"index":"i","apiKeySecretRef":{"name":"p"}}},
		  "chunking":{},"tracking":{"dynamoDB":{"table":"x"}},"deadLetter":{"bucket":"d"}}`,
		`{"source":{"metabase":{"url":"u","questionID":1,"apiKeySecretRef":{"name":"m"},"stageTo":{"bucket":"b","credentialsSecretRef":{"name":"c"}}}},
		  "mapping":{"textTemplate":"{{.a}}"},"embedding":{"apiKeySecretRef":{"name":"o"}},"target":{"pinecone":{"index":"i","apiKeySecretRef":{"name":"p"}}},
		  "chunking":{"rowsPerChunk":5}}`,
	}
	for _, js := range specs {
		var ours, theirs map[string]any
		if err := json.Unmarshal([]byte(js), &ours); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal([]byte(js), &theirs)
		ApplyDefaults(ours)
		obj := map[string]any{"apiVersion": "ingestion.vectordb.io/v1alpha1", "kind": "CsvIngestion", "spec": theirs}
		defaulting.Default(obj, s)
		// Compare as JSON so number types (int64 here, float64 or int64 there) do not matter.
		a, _ := json.Marshal(ours)
		b, _ := json.Marshal(obj["spec"])
		var x, y any
		_ = json.Unmarshal(a, &x)
		_ = json.Unmarshal(b, &y)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("defaults differ from the CRD's\n ours %s\n CRD  %s", a, b)
		}
	}
}

func TestParse(t *testing.T) {
	ing, err := Parse([]byte(`
apiVersion: ingestion.vectordb.io/v1alpha1
kind: CsvIngestion
metadata: {name: sample}
spec:
  source: {s3: {bucket: b, key: k.csv}}
  mapping: {textColumn: body, idPrefix: "239."}
  embedding: {model: text-embedding-ada-002, apiKeySecretRef: {name: openai}}
  target: {pinecone: {index: i, apiKeySecretRef: {name: pinecone}}}
  chunking: {maxFailedRowsPercent: 0}
`))
	if err != nil {
		t.Fatal(err)
	}
	sp := ing.Spec
	if ing.TaskID != "sample" || ing.Namespace != "default" || sp.Mapping.IDColumn != "" || sp.Embedding.Model != "text-embedding-ada-002" || sp.Mapping.Metadata.Format != "standard" ||
		sp.Chunking.RowsPerChunk != 1000 || sp.Chunking.MaxFailedRowsPercent != 0 || sp.Source.S3.Region != "us-east-1" ||
		sp.Target.Pinecone.APIKeySecretRef.Key != "api-key" || sp.Chunking.ChunkTimeout.Duration.Minutes() != 30 {
		t.Fatalf("parsed %+v", ing)
	}

	for _, bad := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "kind"},
		{"apiVersion: ingestion.vectordb.io/v1alpha1\nkind: CsvIngestion\nmetadata: {name: x}\nspec: {sourc: {}}\n", "sourc"},
		{"apiVersion: ingestion.vectordb.io/v1alpha1\nkind: CsvIngestion\nmetadata: {}\nspec: {}\n", "name"},
		{"", "empty"},
		// No default model: one that differs from the index's writes another vector space.
		{"apiVersion: ingestion.vectordb.io/v1alpha1\nkind: CsvIngestion\nmetadata: {name: x}\nspec: {source: {s3: {bucket: b, key: k}}, mapping: {textColumn: t}, embedding: {apiKeySecretRef: {name: o}}, target: {pinecone: {index: i, apiKeySecretRef: {name: p}}}}\n", "spec.embedding.model is required"},
	} {
		if _, err := Parse([]byte(bad.doc)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("Parse(%q) = %v, want an error about %s", bad.doc, err, bad.want)
		}
	}
}
