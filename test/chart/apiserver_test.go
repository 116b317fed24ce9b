package chart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/panics"
)

// One API server for the tests that need one: the rendered chart, the non-Helm manifests and the
// example ingestions must all be accepted by it, and the alerts must name metrics that a manager
// running against it exports.
func TestAgainstAPIServer(t *testing.T) {
	cluster := harness.StartCluster(t, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// ServiceMonitor and PrometheusRule are not built in: install stand-ins of their CRDs.
	if _, err := envtest.InstallCRDs(cluster.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join("testdata", "crds")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatalf("installing monitoring CRDs: %v", err)
	}
	// A new client, so its REST mapper sees the CRDs installed just now.
	c, err := client.New(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	// A dry run cannot create the namespaces the other objects go into.
	for _, ns := range []string{namespace, "ingestion", "team-b", "monitoring"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}

	t.Run("dry-run apply", func(t *testing.T) {
		sets := map[string][]*unstructured.Unstructured{
			"chart defaults": mustRender(t),
			"chart all-on":   mustRender(t, "-f", allOnFile),
			"config/manager and config/rbac": readObjects(t,
				filepath.Join(root, "config", "manager", "namespace.yaml"),
				filepath.Join(root, "config", "manager", "manager.yaml"),
				filepath.Join(root, "config", "manager", "rbac.yaml"),
				filepath.Join(root, "config", "rbac", "role.yaml"),
				filepath.Join(root, "config", "rbac", "worker_role.yaml"),
				filepath.Join(root, "config", "rbac", "metrics_reader_role.yaml")),
			"argocd namespace and ingestions": readObjects(t, append([]string{filepath.Join(root, "deploy", "argocd", "namespace-ingestion.yaml")},
				mustGlob(t, filepath.Join(root, "deploy", "argocd", "ingestions", "*.yaml"))...)...),
		}
		for name, objs := range sets {
			t.Run(name, func(t *testing.T) {
				if len(objs) == 0 {
					t.Fatal("nothing to apply")
				}
				for _, o := range objs {
					namespaced, err := c.IsObjectNamespaced(o)
					if err != nil {
						t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
						continue
					}
					if namespaced && o.GetNamespace() == "" {
						o.SetNamespace(namespace) // what config/manager's kustomization does
					}
					err = c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o),
						client.DryRunAll, client.FieldOwner("chart-test"), client.ForceOwnership)
					if err != nil {
						t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
					}
				}
			})
		}
	})

	// helm install --dry-run renders NOTES.txt, which helm template leaves out. Helm refuses to
	// install over a CRD it does not own (envtest installed it from config/crd): adopt it first,
	// as docs/install-eks.md says to.
	t.Run("install notes", func(t *testing.T) {
		adopt := fmt.Sprintf(`{"metadata":{"labels":{"app.kubernetes.io/managed-by":"Helm"},"annotations":{"meta.helm.sh/release-name":%q,"meta.helm.sh/release-namespace":%q}}}`, release, namespace)
		for _, name := range []string{"csvingestions.ingestion.vectordb.io", "csvingestionschedules.ingestion.vectordb.io", "embeddingbudgets.ingestion.vectordb.io"} {
			crd := &unstructured.Unstructured{}
			crd.SetAPIVersion("apiextensions.k8s.io/v1")
			crd.SetKind("CustomResourceDefinition")
			crd.SetName(name)
			if err := c.Patch(ctx, crd, client.RawPatch("application/merge-patch+json", []byte(adopt))); err != nil {
				t.Fatalf("adopting the CRD %s: %v", name, err)
			}
		}
		for name, args := range map[string][]string{"defaults": nil, "all-on": {"-f", allOnFile}} {
			out, err := helm(t, append([]string{"install", release, chartDir, "--namespace", namespace,
				"--dry-run=client", "--kubeconfig", cluster.Kubeconfig}, args...)...)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_, notes, ok := strings.Cut(out, "\nNOTES:\n")
			if !ok {
				t.Fatalf("%s: no NOTES in:\n%.2000s", name, out)
			}
			want := []string{"rollout status deployment/" + release, "/api/v1/health"}
			if name == "all-on" {
				want = append(want, "It watches CsvIngestions in: ingestion, team-b.", "vectordb-api-keys", "vectordb-api.example.com")
			} else {
				want = append(want, "It watches CsvIngestions in every namespace.", "are in: "+namespace+".")
			}
			for _, w := range want {
				if !strings.Contains(notes, w) {
					t.Errorf("%s: NOTES lack %q:\n%s", name, w, notes)
				}
			}
		}
	})

	t.Run("config/manager runs the manager with its own flags", func(t *testing.T) {
		for _, o := range readObjects(t, filepath.Join(root, "config", "manager", "manager.yaml")) {
			if o.GetKind() == "Deployment" {
				parseManagerArgs(t, managerArgs(t, o))
				return
			}
		}
		t.Fatal("config/manager/manager.yaml has no Deployment")
	})

	t.Run("alerts and dashboard use exported metrics", func(t *testing.T) {
		// An ingestion to reconcile, so the reconcile histograms have samples and are exported.
		for _, o := range readObjects(t, mustGlob(t, filepath.Join(root, "deploy", "argocd", "ingestions", "*.yaml"))...) {
			if err := c.Create(ctx, o); err != nil {
				t.Fatalf("creating %s: %v", o.GetName(), err)
			}
		}
		exported := scrapeManager(ctx, t, cluster)
		for _, n := range controllers.MetricNames() {
			exported[n] = true
		}
		// The rate lease series appear with the first lease (the manager here runs without).
		for _, n := range ratelease.MetricNames() {
			exported[n] = true
		}
		exported["up"] = true // Prometheus's own per-target metric

		objs := mustRender(t, "-f", allOnFile)
		var exprs []string
		rule := find(objs, "PrometheusRule", namespace, release)
		if rule == nil {
			t.Fatal("no PrometheusRule rendered")
		}
		groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
		alerts := 0
		for _, g := range groups {
			rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
			for _, r := range rules {
				e, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
				exprs = append(exprs, e)
				alerts++
			}
		}
		// The old plan's alarms: error rate, a stalled ingestion, chunk failures, operator down,
		// queued chunks.
		if alerts < 5 {
			t.Errorf("%d alerts", alerts)
		}
		exprs = append(exprs, dashboardExprs(t, objs)...)

		for _, e := range exprs {
			names, err := metricNames(e)
			if err != nil {
				t.Errorf("expression does not parse: %v\n%s", err, e)
				continue
			}
			if len(names) == 0 {
				t.Errorf("expression names no metric: %s", e)
			}
			for _, n := range names {
				if !exported[n] && !exported[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] {
					t.Errorf("metric %s is not exported by the manager (expression %q)", n, e)
				}
			}
		}
	})
}

// dashboardExprs returns the PromQL of every panel of the rendered Grafana dashboard.
func dashboardExprs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	cm := find(objs, "ConfigMap", "monitoring", release+"-dashboard")
	if cm == nil {
		t.Fatal("no dashboard ConfigMap rendered")
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data["vectordb-operator.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var out []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			// Grafana substitutes $job before the query reaches Prometheus.
			out = append(out, strings.ReplaceAll(tg.Expr, "$job", ".*"))
		}
	}
	if len(out) == 0 {
		t.Fatal("dashboard has no queries")
	}
	return out
}

// metricNames lists the metric names a PromQL expression selects.
func metricNames(expr string) ([]string, error) {
	e, err := metricsql.Parse(expr)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			for _, lf := range lfs {
				if lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative {
					seen[lf.Value] = true
				}
			}
		}
	})
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// scrapeManager runs the manager against the cluster and returns the metric names on its
// /metrics once its controller has reconciled.
func scrapeManager(ctx context.Context, t *testing.T, cluster *harness.Cluster) map[string]bool {
	t.Helper()
	opts := manager.DefaultOptions()
	opts.RESTConfig = cluster.Config
	opts.MetricsAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	// Plain HTTP: this reads metric names; security_test.go checks the secure default.
	opts.MetricsSecure = false
	opts.ProbeAddr = "0"
	opts.Shim.Addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	opts.Shim.APIEnabled = false
	opts.DisableTracking = true

	base, err := panics.FromGatherer(ctrlmetrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- manager.Run(runCtx, opts) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("manager: %v", err)
		}
		// A recovered reconcile panic fails the test (test/panics).
		if now, err := panics.FromGatherer(ctrlmetrics.Registry); err != nil {
			t.Error(err)
		} else if err := now.Since(base).Err(); err != nil {
			t.Error(err)
		}
	})

	url := "http://" + opts.MetricsAddr + "/metrics"
	var last error
	for {
		select {
		case err := <-done:
			t.Fatalf("manager exited: %v", err)
		case <-ctx.Done():
			t.Fatalf("no controller metrics at %s: %v", url, last)
		case <-time.After(200 * time.Millisecond):
		}
		names, err := scrape(ctx, url)
		if err != nil {
			last = err
			continue
		}
		// Reconcile times appear once the controller has reconciled an ingestion, the ingestion
		// gauges once it has written a status.
		if names["controller_runtime_reconcile_time_seconds"] && names["vectordb_ingestions"] {
			return names
		}
		last = fmt.Errorf("no reconcile yet (%d metrics)", len(names))
	}
}

func scrape(ctx context.Context, url string) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", url, err)
	}
	names := map[string]bool{}
	for n := range families {
		names[n] = true
	}
	return names, nil
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
