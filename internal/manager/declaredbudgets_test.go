package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// TestDeclaredBudgetsWithoutTheCRD: on a cluster where only the CsvIngestion CRD is installed
// (crds.enabled=false with an older CRD set), the lease service keeps working on implicit
// budgets instead of refusing every renewal, the status writer has nothing to do, and a missing
// ingestion is still ErrNotFound.
func TestDeclaredBudgetsWithoutTheCRD(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{NoCRDs: true})
	ctx := context.Background()
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{ErrorIfPathMissing: true,
		Paths: []string{filepath.Join(harness.RepoRoot(), "config", "crd", "bases", "ingestion.vectordb.io_csvingestions.yaml")}}); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(c.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "config", "samples", "ingestion_v1alpha1_csvingestion_minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Unstructured, so the API server fills the defaults the typed struct would send as zeros.
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace("team-a")
	if err := cl.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	var ing v1alpha1.CsvIngestion
	if err := cl.Get(ctx, client.ObjectKeyFromObject(u), &ing); err != nil {
		t.Fatal(err)
	}

	r := DeclaredBudgets(cl, logr.Discard())
	got, err := r.Resolve(ctx, "team-a", ing.Name, ing.Spec.Embedding.Model)
	if err != nil {
		t.Fatalf("without the EmbeddingBudget CRD: %v, want the implicit budget", err)
	}
	if want := ImplicitBudgetKey("team-a", ing.Spec.Embedding); got.Key != want || got.Declared.TPM != float64(ing.Spec.Embedding.TokensPerMinute) {
		t.Fatalf("budget %+v, want the implicit %s", got, want)
	}
	if _, err := r.Resolve(ctx, "team-a", "gone", ""); !errors.Is(err, ratelease.ErrNotFound) {
		t.Fatalf("missing ingestion: %v, want ErrNotFound", err)
	}
	w := &controllers.BudgetStatusWriter{Client: cl, Recorder: events.NewFakeRecorder(1),
		Snapshot: func() []ratelease.Snapshot { return nil }}
	if err := w.Pass(ctx); err != nil {
		t.Fatalf("status pass without the CRD: %v", err)
	}
}
