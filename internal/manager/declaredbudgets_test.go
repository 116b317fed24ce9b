package manager

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
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
	ing := sampleIngestion(ctx, t, cl, "team-a")

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

// TestDeclaredBudgetsWithoutTheCRDAskDiscoveryRarely: without the EmbeddingBudget CRD every
// renewal would miss the REST mapping, and the mapper asks the API server's discovery again on
// each miss (a GET /apis/ingestion.vectordb.io/v1alpha1 per renewal: at 100 pods renewing every
// 5 s, 20 requests a second). The resolver remembers the absence for a while instead, and
// notices the CRD once it is installed (clock injected).
func TestDeclaredBudgetsWithoutTheCRDAskDiscoveryRarely(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{NoCRDs: true})
	ctx := context.Background()
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{ErrorIfPathMissing: true,
		Paths: []string{filepath.Join(harness.RepoRoot(), "config", "crd", "bases", "ingestion.vectordb.io_csvingestions.yaml")}}); err != nil {
		t.Fatal(err)
	}
	var discovery atomic.Int64
	cfg := rest.CopyConfig(c.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/apis/ingestion.vectordb.io/v1alpha1" {
				discovery.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	cl, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}}); err != nil {
		t.Fatal(err)
	}
	ing := sampleIngestion(ctx, t, cl, "team-b")

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := declaredBudgets(cl, logr.Discard(), func() time.Time { return now })
	resolve := func() ratelease.Budget {
		t.Helper()
		got, err := r.Resolve(ctx, "team-b", ing.Name, ing.Spec.Embedding.Model)
		if err != nil {
			t.Fatalf("resolve: %v", err)
		}
		return got
	}
	start := discovery.Load()
	for i := 0; i < 20; i++ {
		if got, want := resolve().Key, ImplicitBudgetKey("team-b", ing.Spec.Embedding); got != want {
			t.Fatalf("budget %s, want the implicit %s", got, want)
		}
		now = now.Add(5 * time.Second / 20) // 20 renewals within one renewal period
	}
	if n := discovery.Load() - start; n > 1 {
		t.Errorf("20 renewals without the CRD asked discovery %d times, want at most once", n)
	}

	// The CRD installed, and a budget claiming the namespace: picked up once the absence is
	// no longer trusted.
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{ErrorIfPathMissing: true,
		Paths: []string{filepath.Join(harness.RepoRoot(), "config", "crd", "bases", "ingestion.vectordb.io_embeddingbudgets.yaml")}}); err != nil {
		t.Fatal(err)
	}
	eb := &v1alpha1.EmbeddingBudget{ObjectMeta: metav1.ObjectMeta{Name: "team-b-key"}, Spec: v1alpha1.EmbeddingBudgetSpec{
		Models:     []v1alpha1.BudgetModel{{Name: ing.Spec.Embedding.Model, RequestsPerMinute: 60, TokensPerMinute: 6000}},
		Namespaces: []v1alpha1.BudgetNamespace{{Name: "team-b", Weight: 1}}}}
	if err := cl.Create(ctx, eb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(context.Background(), eb) })
	now = now.Add(noCRDRecheck)
	want := "embeddingbudget:team-b-key/" + ing.Spec.Embedding.Model
	deadline := time.Now().Add(30 * time.Second)
	for got := resolve().Key; got != want; got = resolve().Key {
		if time.Now().After(deadline) {
			t.Fatalf("after the CRD was installed: budget %s, want %s", got, want)
		}
		time.Sleep(200 * time.Millisecond)
		now = now.Add(noCRDRecheck)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDeclaredBudgetsNotAllowedToList: a manager whose RBAC lacks the EmbeddingBudgets
// (rbac.create=false with rules written before them) would wait on every renewal for a cache
// that never syncs: renewals hang until the pods give up, and nothing says why. The resolver
// answers with an error naming the missing permission instead (the lease server logs it and
// sends it to the pod).
func TestDeclaredBudgetsNotAllowedToList(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{})
	ctx := context.Background()
	cl := c.Client
	const user = "manager-without-budgets"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: []rbacv1.PolicyRule{{
		APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"csvingestions"}, Verbs: []string{"get", "list", "watch"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: user},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-c"}}
	for _, o := range []client.Object{role, binding, ns} {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ing := sampleIngestion(ctx, t, cl, "team-c")

	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	cache, err := crcache.New(cfg, crcache.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = cache.Start(cctx) }()
	if !cache.WaitForCacheSync(cctx) {
		t.Fatal("cache did not start")
	}
	// The pod's renewal; the bound is only there so that the test ends if the resolver hangs.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = DeclaredBudgets(cache, logr.Discard()).Resolve(rctx, "team-c", ing.Name, "")
	if err == nil || !strings.Contains(err.Error(), "embeddingbudgets") || !strings.Contains(err.Error(), "allowed") {
		t.Fatalf("resolve without permission on embeddingbudgets: %v; want an error naming the missing permission", err)
	}
	if rctx.Err() != nil {
		t.Fatalf("the resolver waited until the renewal gave up (%v): %v", rctx.Err(), err)
	}
}

// sampleIngestion creates the minimal sample CsvIngestion in namespace ns and returns it as the
// API server stored it. Unstructured, so the API server fills the defaults the typed struct would
// send as zeros.
func sampleIngestion(ctx context.Context, t *testing.T, cl client.Client, ns string) v1alpha1.CsvIngestion {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "config", "samples", "ingestion_v1alpha1_csvingestion_minimal.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	if err := cl.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	var ing v1alpha1.CsvIngestion
	if err := cl.Get(ctx, client.ObjectKeyFromObject(u), &ing); err != nil {
		t.Fatal(err)
	}
	return ing
}
