package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

var cluster *harness.Cluster

func TestMain(m *testing.M) {
	c, err := harness.NewCluster(harness.ClusterOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start cluster:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop cluster:", err)
	}
	os.Exit(code)
}

func loadSample(t *testing.T, file string) *unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "config/samples", file))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatalf("parse %s: %v", file, err)
	}
	u.SetNamespace("default")
	return u
}

const minimal = "ingestion_v1alpha1_csvingestion_minimal.yaml"
const legacy = "ingestion_v1alpha1_csvingestion_legacy.yaml"

func TestSamplesAcceptedWithDefaults(t *testing.T) {
	ctx := context.Background()
	for _, file := range []string{minimal, legacy} {
		u := loadSample(t, file)
		u.SetName("sample-" + strings.TrimSuffix(strings.TrimPrefix(file, "ingestion_v1alpha1_csvingestion_"), ".yaml"))
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatalf("%s rejected: %v", file, err)
		}
		var got v1alpha1.CsvIngestion
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), &got); err != nil {
			t.Fatal(err)
		}
		s := got.Spec
		checks := map[string][2]any{
			"chunking.rowsPerChunk":         {s.Chunking.RowsPerChunk, int32(1000)},
			"chunking.parallelism":          {s.Chunking.Parallelism, int32(4)},
			"chunking.chunkTimeout":         {s.Chunking.ChunkTimeout.Duration.String(), "30m0s"},
			"chunking.retriesPerChunk":      {s.Chunking.RetriesPerChunk, int32(3)},
			"chunking.maxFailedRowsPercent": {s.Chunking.MaxFailedRowsPercent, int32(1)},
			"embedding.requestsPerMinute":   {s.Embedding.RequestsPerMinute, int32(300)},
			"embedding.tokensPerMinute":     {s.Embedding.TokensPerMinute, int64(1000000)},
			"embedding.maxInputsPerRequest": {s.Embedding.MaxInputsPerRequest, int32(2048)},
			"embedding.mode":                {s.Embedding.Mode, "online"},
			"embedding.apiKeySecretRef.key": {s.Embedding.APIKeySecretRef.Key, "api-key"},
			"target.pinecone.batchSize":     {s.Target.Pinecone.BatchSize, int32(100)},
			"source.csv.delimiter":          {s.Source.CSV.Delimiter, ","},
			"source.csv.compression":        {s.Source.CSV.Compression, "auto"},
			"source.s3.region":              {s.Source.S3.Region, "us-east-1"},
			"source.csv.encoding":           {s.Source.CSV.Encoding, "utf-8"},
			"source.s3.stageKeyPrefix":      {s.Source.S3.StageKeyPrefix, "vectordb-staging/"},
			"mapping.metadata.include":      {s.Mapping.Metadata.Include, "all"},
			"mapping.metadata.textField":    {s.Mapping.Metadata.TextField, "text"},
			"mapping.metadata.textMaxChars": {s.Mapping.Metadata.TextMaxChars, int32(1000)},
		}
		if file == minimal {
			checks["mapping.sanitize"] = [2]any{s.Mapping.Sanitize, "basic"}
			checks["mapping.metadata.format"] = [2]any{s.Mapping.Metadata.Format, "standard"}
			// Not defaulted: empty means the id column when there is one, else ids derived from rows.
			checks["mapping.idColumn"] = [2]any{s.Mapping.IDColumn, ""}
		} else {
			// The old service's vector space and metadata (docs/migration.md).
			checks["embedding.model"] = [2]any{s.Embedding.Model, "text-embedding-ada-002"}
			checks["mapping.metadata.format"] = [2]any{s.Mapping.Metadata.Format, "legacy"}
			checks["mapping.sanitize"] = [2]any{s.Mapping.Sanitize, "legacy"}
			checks["mapping.idPrefix"] = [2]any{s.Mapping.IDPrefix, "239."}
			checks["target.pinecone.namespace"] = [2]any{s.Target.Pinecone.Namespace, "v2"}
			checks["tracking.dynamoDB.table"] = [2]any{s.Tracking.DynamoDB.Table, "vectordb-tasks-prod"}
			checks["deadLetter.keyPrefix"] = [2]any{s.DeadLetter.KeyPrefix, "failed/"}
		}
		for field, c := range checks {
			if c[0] != c[1] {
				t.Errorf("%s: spec.%s = %v, want %v", file, field, c[0], c[1])
			}
		}
	}
}

// set walks path (dot separated) in obj and sets it, creating maps on the way; nil deletes.
func set(obj map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	m := obj
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	if v == nil {
		delete(m, parts[len(parts)-1])
		return
	}
	m[parts[len(parts)-1]] = v
}

func TestInvalidSpecsRejected(t *testing.T) {
	ctx := context.Background()
	metabase := map[string]any{
		"url": "https://metabase.example.com", "questionID": int64(239),
		"apiKeySecretRef": map[string]any{"name": "metabase"},
		"stageTo":         map[string]any{"bucket": "csv-storage"},
	}
	cases := []struct {
		name   string
		mutate func(spec map[string]any)
		want   string
	}{
		{"both sources", func(s map[string]any) { set(s, "source.metabase", metabase) }, "set exactly one of spec.source.s3 or spec.source.metabase"},
		{"no model", func(s map[string]any) { set(s, "embedding.model", nil) }, "spec.embedding.model is required: name the model the index's vectors were made with"},
		{"legacy metadata with inferTypes", func(s map[string]any) {
			set(s, "mapping.metadata.format", "legacy")
			set(s, "mapping.metadata.inferTypes", true)
		}, "spec.mapping.metadata.inferTypes cannot be used with format legacy"},
		{"unknown metadata format", func(s map[string]any) { set(s, "mapping.metadata.format", "fancy") }, "Unsupported value: \"fancy\""},
		{"no source", func(s map[string]any) { set(s, "source.s3", nil) }, "set exactly one of spec.source.s3 or spec.source.metabase"},
		{"queue name not a label value", func(s map[string]any) { set(s, "worker.queueName", "Team A") }, "spec.worker.queueName in body should match"},
		{"queue name too long", func(s map[string]any) { set(s, "worker.queueName", strings.Repeat("q", 64)) }, "spec.worker.queueName: Too long"},
		{"both text fields", func(s map[string]any) { set(s, "mapping.textTemplate", "{{.title}}") }, "set exactly one of spec.mapping.textColumn or spec.mapping.textTemplate"},
		{"no text field", func(s map[string]any) { set(s, "mapping.textColumn", nil) }, "set exactly one of spec.mapping.textColumn or spec.mapping.textTemplate"},
		{"rowsPerChunk 0", func(s map[string]any) { set(s, "chunking.rowsPerChunk", int64(0)) }, "spec.chunking.rowsPerChunk: Invalid value: 0: spec.chunking.rowsPerChunk in body should be greater than or equal to 1"},
		{"rowsPerChunk too big", func(s map[string]any) { set(s, "chunking.rowsPerChunk", int64(1000001)) }, "should be less than or equal to 1000000"},
		{"parallelism 0", func(s map[string]any) { set(s, "chunking.parallelism", int64(0)) }, "spec.chunking.parallelism in body should be greater than or equal to 1"},
		{"parallelism too big", func(s map[string]any) { set(s, "chunking.parallelism", int64(1001)) }, "spec.chunking.parallelism in body should be less than or equal to 1000"},
		{"batchSize 0", func(s map[string]any) { set(s, "target.pinecone.batchSize", int64(0)) }, "spec.target.pinecone.batchSize in body should be greater than or equal to 1"},
		{"batchSize too big", func(s map[string]any) { set(s, "target.pinecone.batchSize", int64(1001)) }, "spec.target.pinecone.batchSize in body should be less than or equal to 1000"},
		{"maxInputsPerRequest too big", func(s map[string]any) { set(s, "embedding.maxInputsPerRequest", int64(2049)) }, "spec.embedding.maxInputsPerRequest in body should be less than or equal to 2048"},
		{"maxFailedRowsPercent too big", func(s map[string]any) { set(s, "chunking.maxFailedRowsPercent", int64(101)) }, "spec.chunking.maxFailedRowsPercent in body should be less than or equal to 100"},
		{"maxFailedRowsPercent negative", func(s map[string]any) { set(s, "chunking.maxFailedRowsPercent", int64(-1)) }, "spec.chunking.maxFailedRowsPercent in body should be greater than or equal to 0"},
		{"requestsPerMinute 0", func(s map[string]any) { set(s, "embedding.requestsPerMinute", int64(0)) }, "spec.embedding.requestsPerMinute in body should be greater than or equal to 1"},
		{"tokensPerMinute 0", func(s map[string]any) { set(s, "embedding.tokensPerMinute", int64(0)) }, "spec.embedding.tokensPerMinute in body should be greater than or equal to 1"},
		{"chunkTimeout zero", func(s map[string]any) { set(s, "chunking.chunkTimeout", "0s") }, "spec.chunking.chunkTimeout must be a positive duration of at least 1s"},
		{"chunkTimeout garbage", func(s map[string]any) { set(s, "chunking.chunkTimeout", "soon") }, "spec.chunking.chunkTimeout in body should match"},
		{"missing OpenAI secret ref", func(s map[string]any) { set(s, "embedding.apiKeySecretRef", nil) }, "spec.embedding.apiKeySecretRef: Required value"},
		{"empty Pinecone secret name", func(s map[string]any) { set(s, "target.pinecone.apiKeySecretRef.name", "") }, "spec.target.pinecone.apiKeySecretRef.name in body should be at least 1 chars long"},
		{"missing index", func(s map[string]any) { set(s, "target.pinecone.index", nil) }, "spec.target.pinecone.index: Required value"},
		{"missing bucket", func(s map[string]any) { set(s, "source.s3.bucket", nil) }, "spec.source.s3.bucket: Required value"},
		{"bad sanitize", func(s map[string]any) { set(s, "mapping.sanitize", "aggressive") }, `spec.mapping.sanitize: Unsupported value: "aggressive"`},
		{"metadata columns without list", func(s map[string]any) { set(s, "mapping.metadata.include", "columns") }, "spec.mapping.metadata.columns must list at least one column when include is columns"},
		{"two-character delimiter", func(s map[string]any) { set(s, "source.csv.delimiter", ";;") }, "spec.source.csv.delimiter: Too long"},
		{"endpoint without scheme", func(s map[string]any) { set(s, "source.s3.endpoint", "minio:9000") }, "spec.source.s3.endpoint in body should match '^https?://'"},
		{"deleteMissing without idPrefix", func(s map[string]any) { set(s, "sync.deleteMissing", true) }, "spec.sync.deleteMissing needs spec.mapping.idPrefix"},
		{"deleteMissing with empty idPrefix", func(s map[string]any) {
			set(s, "sync.deleteMissing", true)
			set(s, "mapping.idPrefix", "")
		}, "spec.sync.deleteMissing needs spec.mapping.idPrefix"},
		{"deleteMissing with a prefix without separator", func(s map[string]any) {
			set(s, "sync.deleteMissing", true)
			set(s, "mapping.idPrefix", "q1")
		}, `needs a prefix-free spec.mapping.idPrefix: it must end with one of . : / - _ # | and that character must not occur earlier in it`},
		{"deleteMissing with the separator earlier in the prefix", func(s map[string]any) {
			set(s, "sync.deleteMissing", true)
			set(s, "mapping.idPrefix", "orders-eu-")
		}, `("q1" would also list "q10…")`},
		{"deleteMissing with a nested dotted prefix", func(s map[string]any) {
			set(s, "sync.deleteMissing", true)
			set(s, "mapping.idPrefix", "q1.a.")
		}, "prefix-free spec.mapping.idPrefix"},
		{"adoptUnmarked without deleteMissing", func(s map[string]any) { set(s, "sync.adoptUnmarked", true) }, "spec.sync.adoptUnmarked only applies with spec.sync.deleteMissing"},
		{"sync timeout too short", func(s map[string]any) { set(s, "sync.timeout", "30s") }, "spec.sync.timeout must be a duration of at least 1m"},
		{"maxDeletePercent too big", func(s map[string]any) { set(s, "sync.maxDeletePercent", int64(101)) }, "spec.sync.maxDeletePercent in body should be less than or equal to 100"},
		{"maxDeletePercent negative", func(s map[string]any) { set(s, "sync.maxDeletePercent", int64(-1)) }, "spec.sync.maxDeletePercent in body should be greater than or equal to 0"},
		{"unknown embedding mode", func(s map[string]any) { set(s, "embedding.mode", "async") }, `spec.embedding.mode: Unsupported value: "async"`},
		{"batch mode without deadLetter", func(s map[string]any) {
			set(s, "embedding.mode", "batch")
			set(s, "deadLetter", nil)
		}, "spec.embedding.mode batch needs spec.deadLetter"},
		{"batch block in online mode", func(s map[string]any) { set(s, "embedding.batch.maxResubmits", int64(1)) }, "spec.embedding.batch only applies with spec.embedding.mode: batch"},
		{"batch pollInterval too short", func(s map[string]any) {
			set(s, "embedding.mode", "batch")
			set(s, "deadLetter.bucket", "failed-rows")
			set(s, "embedding.batch.pollInterval", "100ms")
		}, "spec.embedding.batch.pollInterval must be between 1s and 1h"},
		{"batch maxResubmits too big", func(s map[string]any) {
			set(s, "embedding.mode", "batch")
			set(s, "deadLetter.bucket", "failed-rows")
			set(s, "embedding.batch.maxResubmits", int64(11))
		}, "spec.embedding.batch.maxResubmits in body should be less than or equal to 10"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, minimal)
			u.SetName(fmt.Sprintf("invalid-%d", i))
			spec := u.Object["spec"].(map[string]any)
			tc.mutate(spec)
			err := cluster.Client.Create(ctx, u)
			if err == nil {
				t.Fatalf("accepted; want rejection containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err.Error(), tc.want)
			}
		})
	}
}

func TestUpdates(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		mutate func(spec map[string]any)
		want   string // empty: accepted
	}{
		{"change source", func(s map[string]any) { set(s, "source.s3.key", "exports/other.csv") }, "spec.source is immutable"},
		{"change mapping", func(s map[string]any) { set(s, "mapping.textColumn", "body") }, "spec.mapping is immutable"},
		{"change target", func(s map[string]any) { set(s, "target.pinecone.index", "other") }, "spec.target is immutable"},
		{"change taskID", func(s map[string]any) { set(s, "taskID", "task-2") }, "spec.taskID is immutable"},
		{"drop taskID", func(s map[string]any) { set(s, "taskID", nil) }, "spec.taskID is immutable"},
		{"change model", func(s map[string]any) { set(s, "embedding.model", "text-embedding-3-large") }, "spec.embedding.model is immutable"},
		{"change dimensions", func(s map[string]any) { set(s, "embedding.dimensions", int64(256)) }, "spec.embedding.dimensions is immutable"},
		{"switch to batch mode", func(s map[string]any) { set(s, "embedding.mode", "batch") }, "spec.embedding.mode is immutable"},
		{"change rowsPerChunk", func(s map[string]any) { set(s, "chunking.rowsPerChunk", int64(500)) }, "spec.chunking.rowsPerChunk is immutable"},
		{"change tracking", func(s map[string]any) { set(s, "tracking.dynamoDB.table", "other-table") }, "spec.tracking is immutable"},
		{"change parallelism", func(s map[string]any) { set(s, "chunking.parallelism", int64(16)) }, ""},
		{"suspend", func(s map[string]any) { set(s, "suspend", true) }, ""},
		{"change rate budgets", func(s map[string]any) {
			set(s, "embedding.requestsPerMinute", int64(600))
			set(s, "embedding.tokensPerMinute", int64(5000000))
		}, ""},
		{"change worker resources", func(s map[string]any) {
			set(s, "worker.resources", map[string]any{"limits": map[string]any{"memory": "256Mi"}})
		}, ""},
		{"cancel", func(s map[string]any) { set(s, "cancel", true) }, ""},
		{"raise maxDeletePercent", func(s map[string]any) { set(s, "sync.maxDeletePercent", int64(50)) }, "spec.sync is immutable"},
		{"turn off deleteMissing", func(s map[string]any) { set(s, "sync.deleteMissing", false) }, "spec.sync is immutable"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, legacy)
			u.SetName(fmt.Sprintf("update-%d", i))
			set(u.Object, "spec.taskID", fmt.Sprintf("task-%d", i))
			set(u.Object, "spec.sync", map[string]any{"mode": "incremental", "deleteMissing": true})
			if err := cluster.Client.Create(ctx, u); err != nil {
				t.Fatalf("create: %v", err)
			}
			tc.mutate(u.Object["spec"].(map[string]any))
			err := cluster.Client.Update(ctx, u)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("update rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("update accepted; want rejection containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err.Error(), tc.want)
			}
		})
	}
}

func TestCancelCannotBeUndone(t *testing.T) {
	ctx := context.Background()
	u := loadSample(t, minimal)
	u.SetName("cancel-undo")
	set(u.Object, "spec.cancel", true)
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	set(u.Object, "spec.cancel", false)
	err := cluster.Client.Update(ctx, u)
	if err == nil || !strings.Contains(err.Error(), "spec.cancel cannot be unset") {
		t.Fatalf("want rejection of un-cancel, got %v", err)
	}
}

// TestDeleteMissingDefaults: the legacy sample has an id prefix, so deleteMissing is accepted, and
// the guard defaults to 10 %; 0 (nothing may be deleted) and 100 (no guard) are kept as given.
func TestDeleteMissingDefaults(t *testing.T) {
	ctx := context.Background()
	for i, tc := range []struct {
		set  any
		want int32
	}{{nil, 10}, {int64(0), 0}, {int64(100), 100}} {
		u := loadSample(t, legacy)
		u.SetName(fmt.Sprintf("delete-missing-%d", i))
		set(u.Object, "spec.sync", map[string]any{"deleteMissing": true})
		if tc.set != nil {
			set(u.Object, "spec.sync.maxDeletePercent", tc.set)
		}
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatalf("rejected: %v", err)
		}
		var got v1alpha1.CsvIngestion
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), &got); err != nil {
			t.Fatal(err)
		}
		if s := got.Spec.Sync; s == nil || s.Mode != v1alpha1.SyncFull || !s.DeleteMissing || s.MaxDeletePercent == nil || *s.MaxDeletePercent != tc.want {
			t.Fatalf("spec.sync = %+v, want mode full, deleteMissing, maxDeletePercent %d", s, tc.want)
		}
	}
}

// TestPrefixFreeIDPrefixAccepted: prefixes that end with a separator used nowhere before it pass
// the rule deleteMissing has on them.
func TestPrefixFreeIDPrefixAccepted(t *testing.T) {
	ctx := context.Background()
	for i, prefix := range []string{"q1.", "q10.", "orders-", "a:b/", "x#", "tenant|", "239_", "q1.b-"} {
		u := loadSample(t, minimal)
		u.SetName(fmt.Sprintf("prefix-free-%d", i))
		spec := u.Object["spec"].(map[string]any)
		set(spec, "sync.deleteMissing", true)
		set(spec, "sync.adoptUnmarked", true)
		set(spec, "sync.timeout", "2h")
		set(spec, "mapping.idPrefix", prefix)
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatalf("idPrefix %q rejected: %v", prefix, err)
		}
		_ = cluster.Client.Delete(ctx, u)
	}
}

func TestBatchModeAcceptedWithDefaults(t *testing.T) {
	ctx := context.Background()
	u := loadSample(t, minimal)
	u.SetName("batch-mode")
	set(u.Object, "spec.embedding.mode", "batch")
	set(u.Object, "spec.embedding.batch", map[string]any{})
	set(u.Object, "spec.deadLetter.bucket", "failed-rows")
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatalf("batch mode with a dead-letter location rejected: %v", err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(ctx, u) })
	var got v1alpha1.CsvIngestion
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), &got); err != nil {
		t.Fatal(err)
	}
	b := got.Spec.Embedding.Batch
	if got.Spec.Embedding.Mode != v1alpha1.EmbeddingBatch || b == nil || b.MaxEnqueuedTokens != 3_000_000 ||
		b.PollInterval.Duration != time.Minute || b.MaxResubmits == nil || *b.MaxResubmits != 3 {
		t.Fatalf("batch defaults: mode %q, %+v", got.Spec.Embedding.Mode, b)
	}
}
