package planner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

func TestWritePlanConfigMap(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{})
	ctx := context.Background()
	obj := &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{Name: "q239", Namespace: "default"},
		Spec: v1alpha1.CsvIngestionSpec{
			Source:    v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: "csv", Key: "a.csv"}},
			Mapping:   v1alpha1.MappingSpec{TextColumn: "formatted_text"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai"}},
			Target:    v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "idx", APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "pinecone"}}},
			// A typed client sends the zero duration, which the CRD rejects.
			Chunking: v1alpha1.ChunkingSpec{ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute}},
		},
	}
	if err := c.Client.Create(ctx, obj); err != nil {
		t.Fatalf("create CsvIngestion: %v", err)
	}
	ing := worker.FromObject(obj)
	cms, err := planner.NewConfigMapClient(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	plan := &worker.Plan{Bucket: "csv", Key: "a.csv", ETag: `"abc"`, Compression: "none", Header: []string{"id", "formatted_text"},
		TotalRows: 3, RowsPerChunk: 2, Offsets: []int64{20, 40, 50}, EstimatedTokens: 9, EstimatedCostUSD: "0.00"}

	if err := planner.WritePlanConfigMap(ctx, cms, ing, plan); err != nil {
		t.Fatalf("create: %v", err)
	}
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: "default", Name: worker.PlanConfigMapName("q239")}
	if err := c.Client.Get(ctx, key, &cm); err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{worker.LabelName: "q239", worker.LabelUID: string(obj.UID), worker.LabelTaskID: string(obj.UID), worker.LabelRole: worker.RolePlan}
	for k, v := range wantLabels {
		if cm.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cm.Labels[k], v)
		}
	}
	owner := metav1.GetControllerOf(&cm)
	if owner == nil || owner.UID != obj.UID || owner.Kind != "CsvIngestion" || owner.APIVersion != "ingestion.vectordb.io/v1alpha1" ||
		owner.Name != "q239" || owner.BlockOwnerDeletion == nil || !*owner.BlockOwnerDeletion {
		t.Fatalf("owner %+v", owner)
	}
	got, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil || got.ETag != plan.ETag || got.TotalRows != 3 {
		t.Fatalf("stored plan %+v, %v", got, err)
	}

	if cm.Immutable == nil || !*cm.Immutable {
		t.Errorf("the plan ConfigMap must be immutable")
	}

	// A retried planner that finds the same plan is done; one that finds another plan (the
	// object changed between attempts) must not rewrite it.
	if err := planner.WritePlanConfigMap(ctx, cms, ing, plan); err != nil {
		t.Fatalf("same plan again: %v", err)
	}
	changed := *plan
	changed.ETag = `"def"`
	err = planner.WritePlanConfigMap(ctx, cms, ing, &changed)
	if p, ok := worker.AsPermanent(err); !ok || p.Reason != planner.ReasonPlanChanged {
		t.Fatalf("different plan: %v, want a permanent %s error", err, planner.ReasonPlanChanged)
	}
	if err := c.Client.Get(ctx, key, &cm); err != nil {
		t.Fatal(err)
	}
	if got, _ := worker.DecodePlan(cm.Data[worker.PlanDataKey]); got == nil || got.ETag != `"abc"` {
		t.Fatalf("the first plan was rewritten: %s", cm.Data[worker.PlanDataKey])
	}
	// The API server itself refuses an edit.
	cm.Data[worker.PlanDataKey] = "{}"
	if err := c.Client.Update(ctx, &cm); err == nil {
		t.Fatalf("an immutable ConfigMap accepted an edit")
	}

	// Another ingestion of the same name (new UID) must not take over the old one's plan.
	other := ing
	other.UID = "00000000-0000-0000-0000-000000000001"
	err = planner.WritePlanConfigMap(ctx, cms, other, plan)
	if p, ok := worker.AsPermanent(err); !ok || !strings.Contains(p.Error(), "not owned") {
		t.Fatalf("foreign owner: %v", err)
	}
}
