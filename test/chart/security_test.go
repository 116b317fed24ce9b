package chart

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// policyValues turn the admission policy on with one allowed value of each kind.
var policyValues = []string{
	"--set", "admissionPolicy.enabled=true",
	"--set-json", `admissionPolicy.worker.imagePrefixes=["registry.example.com/vectordb/"]`,
	"--set-json", `admissionPolicy.worker.serviceAccounts=["team-embedder"]`,
	"--set-json", `admissionPolicy.embedding.baseURLHosts=["llm.internal.example.com"]`,
	"--set-json", `admissionPolicy.tracking.endpoints=["http://dynamodb.local:8000"]`,
	"--set-json", `admissionPolicy.tracking.tables=["vectordb-tasks-prod"]`,
	"--set-json", `admissionPolicy.tracking.tablePrefixes=["team-a-"]`,
	"--set", "admissionPolicy.worker.restrictScheduling=true",
	"--set-json", `admissionPolicy.worker.nodeSelectorKeys=["node-pool"]`,
	"--set-json", `admissionPolicy.worker.tolerationKeys=["dedicated"]`,
}

// The chart's security objects on a real kube-apiserver: the admission policy refuses what it
// must with messages and admits the samples; /metrics refuses callers without an authorized token.
func TestSecurityAgainstAPIServer(t *testing.T) {
	cluster := harness.StartCluster(t, harness.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := cluster.Client
	for _, ns := range []string{namespace, "ingestion", "monitoring"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
	pre := createBeforePolicy(ctx, t, c)
	objs := mustRender(t, policyValues...)
	for _, kind := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole"} {
		for _, o := range ofKind(objs, kind) {
			if err := c.Create(ctx, o); err != nil {
				t.Fatalf("creating %s %s: %v", kind, o.GetName(), err)
			}
		}
	}

	t.Run("admission policy", func(t *testing.T) {
		policyName := release + "-csvingestions"
		// (The policy's type-check status is written by kube-controller-manager, which this cluster
		// does not run; the API server compiles and enforces the expressions itself, and an
		// expression that failed at run time would refuse the admitted objects below, since the
		// policy fails closed.)
		sample := func(mutate func(spec map[string]any)) *unstructured.Unstructured {
			o := readObjects(t, filepath.Join(root, "config", "samples", "ingestion_v1alpha1_csvingestion_legacy.yaml"))[0]
			o.SetNamespace("ingestion")
			if mutate != nil {
				mutate(o.Object["spec"].(map[string]any))
			}
			return o
		}
		worker := func(k, v string) func(map[string]any) {
			return func(spec map[string]any) {
				w, _ := spec["worker"].(map[string]any)
				if w == nil {
					w = map[string]any{}
					spec["worker"] = w
				}
				w[k] = v
			}
		}
		workerField := func(k string, v any) func(map[string]any) {
			return func(spec map[string]any) {
				w, _ := spec["worker"].(map[string]any)
				if w == nil {
					w = map[string]any{}
					spec["worker"] = w
				}
				w[k] = v
			}
		}
		set := func(path string, v string) func(map[string]any) {
			return func(spec map[string]any) {
				if err := unstructured.SetNestedField(spec, v, strings.Split(path, ".")...); err != nil {
					t.Fatal(err)
				}
			}
		}
		create := func(o *unstructured.Unstructured) error {
			return c.Create(ctx, o.DeepCopy(), client.DryRunAll)
		}
		// Bindings take effect asynchronously too: wait for the first refusal.
		eventually(ctx, t, "policy enforced", func() (bool, string) {
			err := create(sample(worker("image", "docker.io/evil/miner:1")))
			return err != nil, fmt.Sprint(err)
		})

		refused := []struct {
			name   string
			mutate func(map[string]any)
			want   string
		}{
			{"foreign image", worker("image", "docker.io/evil/miner:1"),
				"spec.worker.image docker.io/evil/miner:1 is not allowed: worker images must start with one of registry.example.com/vectordb/"},
			{"image that only contains the prefix", worker("image", "evil.io/registry.example.com/vectordb/x:1"), "spec.worker.image evil.io/"},
			{"another service account", worker("serviceAccountName", "default"),
				"spec.worker.serviceAccountName default is not allowed: worker pods may run as vectordb-embedder, team-embedder"},
			{"foreign baseURL", set("embedding.baseURL", "https://collector.attacker.example/v1"),
				"spec.embedding.baseURL https://collector.attacker.example/v1 is not allowed: the OpenAI key may be sent to OpenAI or to llm.internal.example.com"},
			{"allowed host as a subdomain", set("embedding.baseURL", "https://llm.internal.example.com.attacker.example/v1"), "spec.embedding.baseURL"},
			{"foreign DynamoDB endpoint", set("tracking.dynamoDB.endpoint", "http://169.254.169.254"),
				"spec.tracking.dynamoDB.endpoint http://169.254.169.254 is not allowed"},
			{"foreign table", set("tracking.dynamoDB.table", "payroll"),
				"spec.tracking.dynamoDB.table payroll is not allowed: task tables are vectordb-tasks-prod, team-a-"},
			{"a node selector key not allowed", workerField("nodeSelector", map[string]any{"kubernetes.io/hostname": "control-plane-1"}),
				"spec.worker.nodeSelector may only use the keys node-pool"},
			{"a toleration of every taint", workerField("tolerations", []any{map[string]any{"operator": "Exists"}}),
				"spec.worker.tolerations may only tolerate the taint keys dedicated"},
			{"a toleration of the control plane", workerField("tolerations", []any{map[string]any{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}}),
				"spec.worker.tolerations may only tolerate the taint keys dedicated"},
		}
		for _, r := range refused {
			err := create(sample(r.mutate))
			if err == nil {
				t.Errorf("%s: admitted", r.name)
				continue
			}
			if !strings.Contains(err.Error(), r.want) || !strings.Contains(err.Error(), "admission policy "+policyName) {
				t.Errorf("%s: message %q, want it to contain %q", r.name, err, r.want)
			}
		}

		admitted := map[string]*unstructured.Unstructured{
			"allowed image":         sample(worker("image", "registry.example.com/vectordb/embedder:v1")),
			"the default account":   sample(worker("serviceAccountName", "vectordb-embedder")),
			"an allowed account":    sample(worker("serviceAccountName", "team-embedder")),
			"allowed baseURL host":  sample(set("embedding.baseURL", "https://llm.internal.example.com:8443/v1")),
			"allowed endpoint":      sample(set("tracking.dynamoDB.endpoint", "http://dynamodb.local:8000")),
			"table with a prefix":   sample(set("tracking.dynamoDB.table", "team-a-tasks")),
			"allowed node selector": sample(workerField("nodeSelector", map[string]any{"node-pool": "embedders"})),
			"allowed toleration": sample(workerField("tolerations", []any{map[string]any{"key": "dedicated", "operator": "Equal",
				"value": "embedders", "effect": "NoSchedule"}})),
		}
		for _, p := range mustGlob(t, filepath.Join(root, "config", "samples", "*.yaml")) {
			if filepath.Base(p) == "kustomization.yaml" {
				continue
			}
			for _, o := range readObjects(t, p) {
				o.SetNamespace("ingestion")
				admitted["sample "+filepath.Base(p)] = o
			}
		}
		for name, o := range admitted {
			if err := create(o); err != nil {
				t.Errorf("%s: refused: %v", name, err)
			}
		}

		// Schedules, the operator's own creates and updates, and the REST API.
		testPolicyOnSchedulesAndOperator(ctx, t, cluster, pre)
	})

	t.Run("metrics need an authorized token", func(t *testing.T) {
		cs, err := kubernetes.NewForConfig(cluster.Config)
		if err != nil {
			t.Fatal(err)
		}
		token := func(name string) string {
			if _, err := cs.CoreV1().ServiceAccounts("monitoring").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			tr, err := cs.CoreV1().ServiceAccounts("monitoring").CreateToken(ctx, name,
				&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("token for %s: %v", name, err)
			}
			return tr.Status.Token
		}
		reader, stranger := token("prometheus"), token("stranger")
		binding := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
			"metadata": map[string]any{"name": "prometheus-metrics"},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": release + "-metrics-reader"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}},
		}}
		if find(objs, "ClusterRole", "", release+"-metrics-reader") == nil {
			t.Fatal("the chart renders no metrics-reader ClusterRole")
		}
		if err := c.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}

		opts := manager.DefaultOptions()
		if !opts.MetricsSecure {
			t.Fatal("metrics are not secure by default")
		}
		opts.RESTConfig = cluster.Config
		opts.MetricsAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		opts.ProbeAddr = "0"
		opts.Shim.Addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		opts.Shim.APIEnabled = false
		opts.DisableTracking = true
		opts.Controller.SkipNameValidation = true // another test of the package runs a manager too
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- manager.Run(runCtx, opts) }()
		defer func() {
			stop()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("manager: %v", err)
			}
		}()

		// The certificate is self-signed, as the ServiceMonitor's default tlsConfig expects.
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		get := func(token string) (int, string, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+opts.MetricsAddr+"/metrics", nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b), nil
		}
		eventually(ctx, t, "metrics served to the reader", func() (bool, string) {
			select {
			case err := <-done:
				done <- err // for the deferred stop
				t.Fatalf("manager exited: %v", err)
			default:
			}
			code, body, err := get(reader)
			return err == nil && code == http.StatusOK && strings.Contains(body, "controller_runtime_"), fmt.Sprintf("%d %v %.200s", code, err, body)
		})
		refusals := []struct {
			name, token string
			want        int
		}{
			{"no token", "", http.StatusUnauthorized},
			{"a token without the role", stranger, http.StatusForbidden},
			// The API server's TokenReview rejects it; controller-runtime's filter reports that as 500.
			{"a bad token", "not-a-token", http.StatusInternalServerError},
		}
		for _, r := range refusals {
			name := r.name
			code, body, err := get(r.token)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if code != r.want {
				t.Errorf("%s: %d, want %d", name, code, r.want)
			}
			if strings.Contains(body, "controller_runtime_") {
				t.Errorf("%s: metrics served", name)
			}
		}
		// Plain HTTP is not served on the port.
		if resp, err := http.Get("http://" + opts.MetricsAddr + "/metrics"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("plain HTTP served /metrics")
			}
		}
	})
}

// eventually polls cond every 200ms until it holds, failing the test when ctx ends first.
func eventually(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %s", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestChartSecurityRendering(t *testing.T) {
	withMonitor := []string{"--set", "metrics.serviceMonitor.enabled=true"}
	t.Run("secure metrics by default", func(t *testing.T) {
		objs := mustRender(t, withMonitor...)
		if !slices.Contains(managerArgs(t, deployment(t, objs)), "--metrics-secure=true") {
			t.Error("the manager is not told to serve metrics securely")
		}
		sm := find(objs, "ServiceMonitor", namespace, release)
		if sm == nil {
			t.Fatal("no ServiceMonitor")
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		ep := eps[0].(map[string]any)
		skip, _, _ := unstructured.NestedBool(ep, "tlsConfig", "insecureSkipVerify")
		if ep["scheme"] != "https" || ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" || !skip {
			t.Errorf("ServiceMonitor endpoint %v", ep)
		}
		reader := find(objs, "ClusterRole", "", release+"-metrics-reader")
		if reader == nil {
			t.Fatal("no metrics-reader ClusterRole")
		}
		rules, _, _ := unstructured.NestedSlice(reader.Object, "rules")
		if len(rules) != 1 || fmt.Sprint(rules[0]) != "map[nonResourceURLs:[/metrics] verbs:[get]]" {
			t.Errorf("metrics-reader rules %v", rules)
		}
		if len(ofKind(objs, "NetworkPolicy")) != 0 || len(ofKind(objs, "ValidatingAdmissionPolicy")) != 0 {
			t.Error("NetworkPolicies and the admission policy are opt-in")
		}
	})
	t.Run("plain metrics when asked", func(t *testing.T) {
		objs := mustRender(t, append(withMonitor, "--set", "metrics.secure=false")...)
		eps, _, _ := unstructured.NestedSlice(find(objs, "ServiceMonitor", namespace, release).Object, "spec", "endpoints")
		if ep := eps[0].(map[string]any); ep["scheme"] != "http" || ep["bearerTokenFile"] != nil {
			t.Errorf("ServiceMonitor endpoint %v", ep)
		}
		if find(objs, "ClusterRole", "", release+"-metrics-auth") != nil {
			t.Error("token review rights without secure metrics")
		}
	})
	t.Run("network policies", func(t *testing.T) {
		objs := mustRender(t, "-f", allOnFile)
		nps := ofKind(objs, "NetworkPolicy")
		var where []string
		for _, np := range nps {
			where = append(where, np.GetNamespace()+"/"+np.GetName())
			egress, _, _ := unstructured.NestedSlice(np.Object, "spec", "egress")
			want := 2
			if strings.HasSuffix(np.GetName(), "-workers") {
				// all-on turns rate leases on: workers also reach the manager's lease port.
				want = 3
				if len(egress) == 3 && (!strings.Contains(fmt.Sprint(egress[1]), "port:8083") ||
					!strings.Contains(fmt.Sprint(egress[1]), "app.kubernetes.io/component:manager")) {
					t.Errorf("%s: egress %v, want the manager's rate lease port second", np.GetName(), egress)
				}
			}
			if len(egress) != want || !strings.Contains(fmt.Sprint(egress[0]), "port:53") {
				t.Errorf("%s: egress %v, want DNS and the configured rule", np.GetName(), egress)
			}
			types, _, _ := unstructured.NestedStringSlice(np.Object, "spec", "policyTypes")
			if !slices.Equal(types, []string{"Ingress", "Egress"}) {
				t.Errorf("%s: policyTypes %v", np.GetName(), types)
			}
		}
		slices.Sort(where)
		want := []string{"ingestion/" + release + "-workers", "team-b/" + release + "-workers", namespace + "/" + release + "-manager"}
		slices.Sort(want)
		if !slices.Equal(where, want) {
			t.Errorf("NetworkPolicies %v, want %v", where, want)
		}
		mgr := find(objs, "NetworkPolicy", namespace, release+"-manager")
		ingress, _, _ := unstructured.NestedSlice(mgr.Object, "spec", "ingress")
		if !strings.Contains(fmt.Sprint(ingress), "monitoring") || !strings.Contains(fmt.Sprint(ingress), "port:metrics") ||
			!strings.Contains(fmt.Sprint(ingress), "port:rate-leases") {
			t.Errorf("manager ingress %v", ingress)
		}
		// Both pod kinds that lease (chunk pods, the planner's vector-space guard) may renew.
		if !strings.Contains(fmt.Sprint(ingress), "values:[plan chunk]") {
			t.Errorf("manager ingress %v: the rate lease port must admit plan and chunk pods", ingress)
		}
	})
}

// docs/install-eks.md grants the manager's IAM role exactly the DynamoDB actions internal/tasktable
// calls (CreateTable only in EnsureTable, for tests and the demo).
func TestIAMGrantsWhatTaskTableCalls(t *testing.T) {
	called := map[string]bool{}
	call := regexp.MustCompile(`\.api\.([A-Z][A-Za-z]+)\(|dynamodb\.New([A-Z][A-Za-z]+)Paginator\(`)
	for _, p := range mustGlob(t, filepath.Join(root, "internal", "tasktable", "*.go")) {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(b), -1) {
			called["dynamodb:"+m[1]+m[2]] = true
		}
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "install-eks.md"))
	if err != nil {
		t.Fatal(err)
	}
	policy := regexp.MustCompile(`"Action": \[([^\]]*"dynamodb:[^\]]*)\]`).FindSubmatch(doc)
	if policy == nil {
		t.Fatal("no DynamoDB policy in docs/install-eks.md")
	}
	granted := map[string]bool{}
	for _, a := range regexp.MustCompile(`"(dynamodb:[A-Za-z]+)"`).FindAllSubmatch(policy[1], -1) {
		granted[string(a[1])] = true
	}
	if len(called) < 3 || !maps.Equal(called, granted) {
		t.Errorf("install-eks.md grants %v; internal/tasktable calls %v", slices.Sorted(maps.Keys(granted)), slices.Sorted(maps.Keys(called)))
	}
}
