package chart

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vectordb-io/vectordb-operator/internal/manager"
)

func TestHelmLint(t *testing.T) {
	for name, args := range map[string][]string{
		"defaults": nil,
		"all-on":   {"-f", allOnFile},
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := helm(t, append([]string{"lint", "--strict", chartDir}, args...)...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// parseManagerArgs parses rendered args with the manager's own flag set, so a flag the chart
// passes but the manager lacks (or a malformed value) fails here rather than in a crash loop.
func parseManagerArgs(t *testing.T, args []string) (manager.Options, *pflag.FlagSet) {
	t.Helper()
	opts := manager.DefaultOptions()
	fs := manager.FlagSet(&opts)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("the manager rejects the chart's args: %v\nargs: %q", err, args)
	}
	if fs.NArg() != 0 {
		t.Fatalf("positional args %q: the manager takes none", fs.Args())
	}
	return opts, fs
}

func deployment(t *testing.T, objs []*unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	dep := find(objs, "Deployment", namespace, release)
	if dep == nil {
		t.Fatal("no manager Deployment rendered")
	}
	return dep
}

// With only what the API needs set, the chart's values give the manager exactly the code's own
// defaults, apart from the settings the chart decides on purpose.
func TestChartDefaultsMatchManagerDefaults(t *testing.T) {
	objs := mustRender(t,
		"--set", "api.enabled=true",
		"--set", "api.apiKeys.existingSecret=keys",
		"--set", "api.defaults.bucket=csv-storage",
		"--set", "api.defaults.pinecone.index=clickbid-prod")
	got, _ := parseManagerArgs(t, managerArgs(t, deployment(t, objs)))

	want := manager.DefaultOptions()
	want.LeaderElect = true
	want.LeaderElectionNamespace = namespace
	want.Controller.EmbedderImage = "ghcr.io/vectordb-io/vectordb-embedder:" + chartAppVersion(t)
	want.Shim.APIKeysPath = "/etc/vectordb/api-keys"
	want.Shim.Defaults.Namespace = namespace
	want.Shim.Defaults.Bucket = "csv-storage"
	want.Shim.Defaults.Index = "clickbid-prod"
	// Defaults the shim fills in itself when a flag is empty; the chart spells them out.
	want.Shim.Defaults.S3Region = "us-east-1"
	want.Shim.Defaults.DynamoDB.Region = "us-east-1"
	want.Shim.Defaults.DeadLetter.KeyPrefix = "failed/"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chart defaults differ from the manager's:\n got %+v\nwant %+v", got, want)
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}

// Every manager flag can be set from values: the all-on rendering passes each one.
func TestAllOnSetsEveryManagerFlag(t *testing.T) {
	objs := mustRender(t, "-f", allOnFile)
	args := managerArgs(t, deployment(t, objs))
	opts, fs := parseManagerArgs(t, args)

	passed := map[string]bool{}
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		passed[name] = true
	}
	var missing []string
	fs.VisitAll(func(f *pflag.Flag) {
		if !passed[f.Name] {
			missing = append(missing, f.Name)
		}
	})
	if len(missing) > 0 {
		t.Errorf("manager flags no value sets: %v", missing)
	}

	// Values of several types arrive intact (large integers must not become 1e+06).
	d := opts.Shim.Defaults
	checks := []struct {
		name      string
		got, want any
	}{
		{"watch namespaces", opts.WatchNamespaces, []string{"ingestion", "team-b"}},
		{"requests per minute", d.RequestsPerMinute, int32(1000000)},
		{"max body bytes", opts.Shim.MaxBodyBytes, int64(2097152)},
		{"per-key rate", opts.Shim.PerKeyRate, 5.5},
		{"embedder image", opts.Controller.EmbedderImage, "ghcr.io/vectordb-io/vectordb-embedder@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		{"job ttl", opts.Controller.JobTTL.String(), "2h0m0s"},
		{"metabase url", d.MetabaseURL, "https://metabase.example.com"},
		{"dynamodb table", d.DynamoDB.Table, "vectordb-tasks-prod"},
		{"log level", opts.LogLevel, 1},
		{"tracking", opts.DisableTracking, false},
		{"worker memory limit", opts.Controller.DefaultWorkerResources.Limits.Memory().String(), "512Mi"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDefaultRenderObjects(t *testing.T) {
	objs := mustRender(t)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	sort.Strings(kinds)
	want := []string{
		"ClusterRole/" + release + "-csvingestion-editor",
		"ClusterRole/" + release + "-csvingestion-viewer",
		"ClusterRole/" + release + "-manager",
		"ClusterRole/" + release + "-metrics-auth",
		"ClusterRole/" + release + "-metrics-reader",
		"ClusterRoleBinding/" + release + "-manager",
		"ClusterRoleBinding/" + release + "-metrics-auth",
		"CustomResourceDefinition/csvingestions.ingestion.vectordb.io",
		"CustomResourceDefinition/csvingestionschedules.ingestion.vectordb.io",
		"CustomResourceDefinition/embeddingbudgets.ingestion.vectordb.io",
		"Deployment/" + release,
		"PodDisruptionBudget/" + release,
		"Role/" + release + "-leader-election",
		"Role/" + release + "-worker",
		"RoleBinding/" + release + "-leader-election",
		"RoleBinding/" + release + "-worker",
		"Service/" + release,
		"Service/" + release + "-metrics",
		"ServiceAccount/" + release,
		"ServiceAccount/vectordb-embedder",
	}
	sort.Strings(want)
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("default render:\n got %v\nwant %v", kinds, want)
	}

	dep := deployment(t, objs)
	opts, _ := parseManagerArgs(t, managerArgs(t, dep))
	if opts.Shim.APIEnabled {
		t.Error("the task API is on by default, but it needs a key Secret and a bucket")
	}
	spec := dep.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	if _, ok := spec["volumes"]; ok {
		t.Error("a volume is mounted although the API (and its key Secret) is off")
	}
	c := spec["containers"].([]any)[0].(map[string]any)
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		p, _, _ := unstructured.NestedString(c, probe, "httpGet", "path")
		port, _, _ := unstructured.NestedString(c, probe, "httpGet", "port")
		if p != path || port != "health" {
			t.Errorf("%s: %s on port %s, want %s on health", probe, p, port, path)
		}
	}
	ports := map[string]int64{}
	for _, p := range c["ports"].([]any) {
		pm := p.(map[string]any)
		ports[pm["name"].(string)] = pm["containerPort"].(int64)
	}
	if !reflect.DeepEqual(ports, map[string]int64{"http": 8000, "metrics": 8443, "health": 8081}) {
		t.Errorf("container ports %v", ports)
	}
	sc := c["securityContext"].(map[string]any)
	if sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true {
		t.Errorf("container security context is not restricted: %v", sc)
	}
	if pod := spec["securityContext"].(map[string]any); pod["runAsNonRoot"] != true {
		t.Errorf("pod security context lets root run: %v", pod)
	}
}

func TestAPIKeySecretIsMountedNotRead(t *testing.T) {
	objs := mustRender(t, "-f", allOnFile)
	dep := deployment(t, objs)
	opts, _ := parseManagerArgs(t, managerArgs(t, dep))
	vols, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
	// All-on also mounts the read-only keys (api.apiKeys.readOnlySecret), the metrics
	// certificate (metrics.certSecret) and the rate lease key; the read-write key volume is the
	// first.
	if len(vols) != 4 {
		t.Fatalf("volumes %v", vols)
	}
	for i, want := range []struct{ name, secret string }{{"api-keys", "vectordb-api-keys"}, {"api-read-keys", "vectordb-api-read-keys"}} {
		secret, _, _ := unstructured.NestedString(vols[i].(map[string]any), "secret", "secretName")
		if secret != want.secret || vols[i].(map[string]any)["name"] != want.name {
			t.Errorf("volume %d mounts Secret %q, want %s", i, secret, want.secret)
		}
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	mounts, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "volumeMounts")
	if len(mounts) != 4 || mounts[0].(map[string]any)["mountPath"] != opts.Shim.APIKeysPath ||
		mounts[1].(map[string]any)["mountPath"] != opts.Shim.ReadKeysPath {
		t.Errorf("volume mounts %v, --api-keys-path %q, --api-read-keys-path %q", mounts, opts.Shim.APIKeysPath, opts.Shim.ReadKeysPath)
	}
	if mounts[2].(map[string]any)["mountPath"] != opts.MetricsCertDir {
		t.Errorf("volume mounts %v, --metrics-cert-dir %q", mounts, opts.MetricsCertDir)
	}
	if p := mounts[3].(map[string]any)["mountPath"]; p == nil || !strings.HasPrefix(opts.RateLease.KeyFile, p.(string)+"/") {
		t.Errorf("volume mounts %v, --rate-lease-key-file %q", mounts, opts.RateLease.KeyFile)
	}
	// With the REST API off, the web UI's sign-in still needs the keys mounted.
	uiOnly := deployment(t, mustRender(t, "--set", "api.apiKeys.existingSecret=k"))
	uiOpts, _ := parseManagerArgs(t, managerArgs(t, uiOnly))
	if uiOpts.Shim.APIEnabled || !uiOpts.Shim.UIEnabled || uiOpts.Shim.APIKeysPath == "" {
		t.Errorf("UI only: api %v, ui %v, --api-keys-path %q", uiOpts.Shim.APIEnabled, uiOpts.Shim.UIEnabled, uiOpts.Shim.APIKeysPath)
	}
	// The UI alone still gets the proxy hops and rate limits (else behind an Ingress every user
	// shares the proxy's bucket) and the keys' default namespaces.
	uiProxied := deployment(t, mustRender(t, "--set", "api.apiKeys.existingSecret=k", "--set", "api.forwardedForHops=2",
		"--set", "api.rateLimit.perClient.rate=7", "--set", "api.rateLimit.perClient.burst=9"))
	pOpts, _ := parseManagerArgs(t, managerArgs(t, uiProxied))
	if pOpts.Shim.ForwardedForHops != 2 || pOpts.Shim.PerClientRate != 7 || pOpts.Shim.PerClientBurst != 9 ||
		len(pOpts.Shim.KeyDefaultNamespaces) != 1 || pOpts.Shim.KeyDefaultNamespaces[0] != namespace {
		t.Errorf("UI only: --api-forwarded-for-hops %d, per-client %g/%d, --api-key-default-namespaces %q",
			pOpts.Shim.ForwardedForHops, pOpts.Shim.PerClientRate, pOpts.Shim.PerClientBurst, pOpts.Shim.KeyDefaultNamespaces)
	}
	noUI := deployment(t, mustRender(t, "--set", "api.apiKeys.existingSecret=k", "--set", "ui.enabled=false"))
	if v, _, _ := unstructured.NestedSlice(noUI.Object, "spec", "template", "spec", "volumes"); len(v) != 0 {
		t.Errorf("with the API and the UI off, volumes %v", v)
	}
	for _, o := range append(ofKind(objs, "ClusterRole"), ofKind(objs, "Role")...) {
		rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
		for _, r := range rules {
			res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			verbs, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "verbs")
			for _, x := range res {
				// The only Secret rights: writing the rate lease Secrets, never reading any.
				if x == "*" || x == "secrets" && !slices.Equal(verbs, []string{"create", "patch"}) {
					t.Errorf("%s %s/%s grants %v on %q", o.GetKind(), o.GetNamespace(), o.GetName(), verbs, x)
				}
			}
		}
	}
}

func TestValuesSchemaRejectsBadValues(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string // part of helm's error
	}{
		{"unknown top-level key", []string{"--set", "replicas=3"}, "replicas"},
		{"unknown nested key", []string{"--set", "api.defaults.bukcet=x"}, "bukcet"},
		{"unknown key under a port", []string{"--set", "ports.grpc=9000"}, "grpc"},
		{"string for an integer", []string{"--set-string", "replicaCount=two"}, "replicaCount"},
		{"string for a boolean", []string{"--set-string", "crds.keep=yes"}, "keep"},
		{"string for a list", []string{"--set-string", "watchNamespaces=ingestion"}, "watchNamespaces"},
		{"invalid namespace", []string{"--set-json", `watchNamespaces=["Ingestion"]`}, "watchNamespaces"},
		{"pull policy not in enum", []string{"--set", "image.pullPolicy=Sometimes"}, "pullPolicy"},
		{"sanitize not in enum", []string{"--set", "api.defaults.sanitize=fancy"}, "sanitize"},
		{"duration without unit", []string{"--set", "manager.jobTTL=3600"}, "jobTTL"},
		{"port out of range", []string{"--set", "service.port=70000"}, "port"},
		{"rows per chunk below the API's range", []string{"--set", "api.defaults.rowsPerChunk=10"}, "rowsPerChunk"},
		{"endpoint without scheme", []string{"--set", "api.defaults.s3.endpoint=minio:9000"}, "endpoint"},
		{"digest that is not sha256", []string{"--set", "image.digest=latest"}, "digest"},
		{"API on without a key Secret", []string{"--set", "api.enabled=true", "--set", "api.defaults.bucket=csv", "--set", "api.defaults.pinecone.index=i"}, "existingSecret"},
		{"API on without a bucket", []string{"--set", "api.enabled=true", "--set", "api.apiKeys.existingSecret=k", "--set", "api.defaults.pinecone.index=i"}, "bucket"},
		{"API on without an index", []string{"--set", "api.enabled=true", "--set", "api.apiKeys.existingSecret=k", "--set", "api.defaults.bucket=csv"}, "index"},
		{"negative error rate", []string{"--set", "prometheusRule.thresholds.errorRatePercent=-1"}, "errorRatePercent"},
		{"extra arg that is not a flag", []string{"--set-json", `manager.extraArgs=["rm -rf"]`}, "extraArgs"},
		// A raw string prefix would admit 123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/miner.
		{"image prefix not ending in /", []string{"--set-json", `admissionPolicy.worker.imagePrefixes=["123456789012.dkr.ecr.us-east-1.amazonaws.com"]`}, "imagePrefixes"},
		{"image prefix that is only /", []string{"--set-json", `admissionPolicy.worker.imagePrefixes=["/"]`}, "imagePrefixes"},
		{"bad key default namespace", []string{"--set-json", `api.apiKeys.defaultNamespaces=["Team_A"]`}, "defaultNamespaces"},
		{"API latency threshold of 0", []string{"--set", "prometheusRule.thresholds.apiLatencyP95Seconds=0"}, "apiLatencyP95Seconds"},
		{"public origin with a path", []string{"--set", "ui.publicOrigin=https://x.example.com/ui"}, "publicOrigin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := render(t, c.args...)
			if err == nil {
				t.Fatalf("helm template accepted %v:\n%.500s", c.args, out)
			}
			msg := err.Error()
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("failed, but not on the schema: %v", err)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error does not name %q: %v", c.want, err)
			}
		})
	}
}

// Combinations the schema cannot express fail in the templates with a message naming the values.
func TestTemplatesRejectInconsistentValues(t *testing.T) {
	api := []string{"--set", "api.enabled=true", "--set", "api.apiKeys.existingSecret=k", "--set", "api.defaults.bucket=csv", "--set", "api.defaults.pinecone.index=i"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"API namespace not watched", append([]string{"--set-json", `watchNamespaces=["a","b"]`, "--set", "api.namespace=c"}, api...), `api.namespace "c" must be one of watchNamespaces`},
		{"worker namespace not watched", []string{"--set-json", `watchNamespaces=["a"]`, "--set-json", `workers.namespaces=["b"]`}, `workers.namespaces entry "b" is not in watchNamespaces`},
		{"ServiceMonitor without its Service", []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"}, "metrics.serviceMonitor.enabled needs metrics.service.enabled"},
		{"Metabase without its Secret", append([]string{"--set", "api.defaults.metabase.url=https://mb.example.com", "--set", "api.defaults.metabase.secret.name="}, api...), "api.defaults.metabase.secret.name is required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := render(t, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
		})
	}
}

func TestWorkerServiceAccountInEveryIngestionNamespace(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"defaults: the release namespace", nil, []string{namespace}},
		{"watched namespaces", []string{"--set-json", `watchNamespaces=["a","b"]`}, []string{"a", "b"}},
		{"explicit list", []string{"--set-json", `workers.namespaces=["x"]`}, []string{"x"}},
		{"plus the API's namespace", []string{"--set", "api.enabled=true", "--set", "api.apiKeys.existingSecret=k", "--set", "api.defaults.bucket=csv",
			"--set", "api.defaults.pinecone.index=i", "--set", "api.namespace=api-tasks"}, []string{"api-tasks", namespace}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := mustRender(t, c.args...)
			for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding"} {
				var got []string
				for _, o := range ofKind(objs, kind) {
					if o.GetLabels()["app.kubernetes.io/component"] == "worker" {
						got = append(got, o.GetNamespace())
					}
				}
				sort.Strings(got)
				if !reflect.DeepEqual(got, c.want) {
					t.Errorf("worker %s in %v, want %v", kind, got, c.want)
				}
			}
		})
	}
}

// leaseGrants let the controller write each ingestion's rate lease Secret; it never reads one.
var leaseGrants = grantSet{{"", "secrets", "create"}, {"", "secrets", "patch"},
	// The lease service reads the EmbeddingBudgets; the leader writes their status.
	{"ingestion.vectordb.io", "embeddingbudgets", "get"}, {"ingestion.vectordb.io", "embeddingbudgets", "list"},
	{"ingestion.vectordb.io", "embeddingbudgets", "watch"}, {"ingestion.vectordb.io", "embeddingbudgets/status", "update"}}

// budgetGrants are the EmbeddingBudget grants among leaseGrants: cluster-wide in every mode (the
// resource is cluster-scoped).
var budgetGrants = leaseGrants[2:]

// leaderPodGrant: the rate lease leader labels its own pod (in the release's namespace).
var leaderPodGrant = grant{"", "pods", "patch"}

// apiGrants are what the REST API adds to the controller's rights, in its namespace only:
// internal/shim/process.go creates CsvIngestions, internal/shim/tasks.go patches spec.cancel.
var apiGrants = grantSet{{"ingestion.vectordb.io", "csvingestions", "create"}, {"ingestion.vectordb.io", "csvingestions", "patch"}}

// The manager holds exactly what its code uses, in config/rbac and in the chart: the
// +kubebuilder:rbac markers (cluster-wide ones in a ClusterRole, or a Role per watched namespace;
// namespaced ones, the leader-election Lease, in the operator's namespace), plus the API's rights
// only when the API is on. The worker Role is config/rbac/worker_role.yaml's.
func TestRBACMatchesCode(t *testing.T) {
	cluster, namespaced := markerGrants(t)
	if len(cluster) == 0 || len(namespaced) != 1 {
		t.Fatalf("markers: %d cluster grants, namespaced in %v", len(cluster), namespaced)
	}
	leader := namespaced["vectordb-system"]
	if !leader.has(grant{"coordination.k8s.io", "leases", "get"}) || leader.has(grant{"coordination.k8s.io", "leases", "delete"}) {
		t.Errorf("lease markers: %v", leader)
	}
	for _, g := range cluster {
		if g.resource == "leases" {
			t.Errorf("a cluster-wide grant on leases: %s", g)
		}
		// csvingestions create/patch/delete are the schedule controller's (runs created, cancelled,
		// pruned); the REST API's Role adds create/patch in its namespace for the same verbs.
		if g.resource == "jobs" && g.verb == "update" {
			t.Errorf("a grant the controller does not use: %s", g)
		}
	}

	generated := readObjects(t, filepath.Join(root, "config", "rbac", "role.yaml"))
	if cr := find(generated, "ClusterRole", "", "vectordb-operator-manager"); cr == nil || !equalGrants(grants(t, cr), cluster) {
		t.Errorf("config/rbac/role.yaml's ClusterRole differs from the markers (run make manifests):\n got %v\nwant %v", grantsOf(t, cr), cluster)
	}
	if r := find(generated, "Role", "vectordb-system", "vectordb-operator-manager"); r == nil || !equalGrants(grants(t, r), leader) {
		t.Errorf("config/rbac/role.yaml's Role differs from the markers:\n got %v\nwant %v", grantsOf(t, r), leader)
	}
	cfg := readObjects(t, filepath.Join(root, "config", "rbac", "role.yaml"), filepath.Join(root, "config", "manager", "rbac.yaml"))
	if got, want := boundGrants(t, cfg, "vectordb-system", "vectordb-operator"), union(cluster, leader); !equalGrants(got, want) {
		t.Errorf("config/: the manager's service account holds\n%v\nwant\n%v", got, want)
	}

	// The rate lease Secrets (controllers/ratelease.go) are written only with rateLeases on, and
	// the leader labels its own pod (internal/manager/ratelease.go) only then: the Role for that
	// (its namespace's pods may be no watched namespace's) is rendered only with rateLeases on.
	noLeases := func(s grantSet) grantSet { return without(s, leaseGrants...) }
	if !cluster.has(leaseGrants[0]) || !cluster.has(leaseGrants[1]) || !cluster.has(budgetGrants[0]) || !cluster.has(budgetGrants[3]) {
		t.Errorf("markers lack the rate lease Secret grants %v", leaseGrants)
	}
	apiOn := []string{"--set", "api.enabled=true", "--set", "api.apiKeys.existingSecret=k", "--set", "api.defaults.bucket=csv",
		"--set", "api.defaults.pinecone.index=i", "--set", "api.namespace=api-tasks"}
	cases := []struct {
		name string
		args []string
		want grantSet
	}{
		{"defaults", nil, noLeases(union(cluster, leader))},
		{"rate leases", []string{"--set", "rateLeases.enabled=true"}, union(cluster, leader)},
		// The manager's own pod is in the release's namespace, wherever its leader election is.
		{"rate leases, leader election elsewhere", []string{"--set", "rateLeases.enabled=true", "--set", "leaderElection.namespace=elsewhere"},
			union(cluster, leader)},
		{"API on", apiOn, noLeases(union(cluster, leader, apiGrants))},
		{"watched namespaces", []string{"--set-json", `watchNamespaces=["ingestion"]`}, noLeases(union(cluster, leader))},
		{"rate leases, watched namespaces", []string{"--set", "rateLeases.enabled=true", "--set-json", `watchNamespaces=["ingestion"]`}, union(cluster, leader)},
		{"plain metrics", []string{"--set", "metrics.secure=false"}, noLeases(minus(union(cluster, leader), "tokenreviews", "subjectaccessreviews"))},
		// The web UI's events informer (internal/webui) is the only reader of events.
		{"UI off", []string{"--set", "ui.enabled=false"}, noLeases(without(union(cluster, leader), grant{"", "events", "list"}, grant{"", "events", "watch"}))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := mustRender(t, c.args...)
			if got := boundGrants(t, objs, namespace, release); !equalGrants(got, c.want) {
				t.Errorf("the manager's service account holds\n%v\nwant\n%v", got, c.want)
			}
			leNS := namespace
			if strings.Contains(c.name, "elsewhere") {
				leNS = "elsewhere"
			}
			leaderRole := find(objs, "Role", leNS, release+"-leader-election")
			if leaderRole == nil || !equalGrants(grants(t, leaderRole), without(leader, leaderPodGrant)) {
				t.Errorf("leader-election Role %v, markers %v without %v", grantsOf(t, leaderRole), leader, leaderPodGrant)
			}
			podRole := find(objs, "Role", namespace, release+"-rate-lease-leader")
			if on := strings.HasPrefix(c.name, "rate leases"); on != (podRole != nil) || on && !equalGrants(grants(t, podRole), grantSet{leaderPodGrant}) {
				t.Errorf("rate lease leader Role in %s: %v (rate leases on: %v), want only %v", namespace, grantsOf(t, podRole), on, leaderPodGrant)
			}
			api := find(objs, "Role", "api-tasks", release+"-api")
			if (api != nil) != (c.name == "API on") {
				t.Errorf("API Role rendered: %v", api != nil)
			}
			// The EmbeddingBudgets (cluster-scoped) need a ClusterRole, in every mode, with nothing
			// else in it; their events go to default, which watchNamespaces may leave out.
			budgets := find(objs, "ClusterRole", "", release+"-embedding-budgets")
			if on := strings.HasPrefix(c.name, "rate leases"); on != (budgets != nil) || on && !equalGrants(grants(t, budgets), budgetGrants) {
				t.Errorf("EmbeddingBudget ClusterRole %v (rate leases on: %v), want only %v", grantsOf(t, budgets), on, budgetGrants)
			}
			events := find(objs, "Role", "default", release+"-embedding-budget-events")
			if want := c.name == "rate leases, watched namespaces"; want != (events != nil) ||
				want && !equalGrants(grants(t, events), grantSet{{"", "events", "create"}, {"", "events", "patch"}, {"events.k8s.io", "events", "create"}, {"events.k8s.io", "events", "patch"}}) {
				t.Errorf("events Role in default: %v, want one only with rate leases and watchNamespaces", grantsOf(t, events))
			}
			if strings.HasSuffix(c.name, "watched namespaces") {
				if r := find(objs, "Role", "ingestion", release+"-manager"); r == nil || grants(t, r).has(budgetGrants[0]) {
					t.Errorf("the Role in ingestion %v must exist and grant nothing on the cluster-scoped EmbeddingBudgets", grantsOf(t, r))
				}
			}
			if c.name == "watched namespaces" {
				r := find(objs, "Role", "ingestion", release+"-manager")
				if r == nil || find(objs, "ClusterRole", "", release+"-manager") != nil {
					t.Fatal("watchNamespaces must give a Role per namespace and no controller ClusterRole")
				}
				if want := noLeases(minus(cluster, "tokenreviews", "subjectaccessreviews")); !equalGrants(grants(t, r), want) {
					t.Errorf("Role in ingestion %v, want %v", grants(t, r), want)
				}
			}
		})
	}

	worker := readObjects(t, filepath.Join(root, "config", "rbac", "worker_role.yaml"))[0]
	chartWorker := find(mustRender(t), "Role", namespace, release+"-worker")
	if chartWorker == nil {
		t.Fatal("no worker Role rendered")
	}
	if !reflect.DeepEqual(grants(t, chartWorker), grants(t, worker)) {
		t.Errorf("chart worker Role %v, config/rbac/worker_role.yaml %v", grants(t, chartWorker), grants(t, worker))
	}
}

var rbacMarker = regexp.MustCompile(`^\s*//\s*\+kubebuilder:rbac:(.+)$`)

// markerGrants reads the +kubebuilder:rbac markers of the module's Go files (what controller-gen
// reads): cluster-wide grants, and namespaced ones by namespace.
func markerGrants(t *testing.T) (grantSet, map[string]grantSet) {
	t.Helper()
	var cluster grantSet
	namespaced := map[string]grantSet{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "bin", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			m := rbacMarker.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			kv := map[string][]string{}
			for _, part := range strings.Split(m[1], ",") {
				k, v, _ := strings.Cut(part, "=")
				kv[k] = strings.Split(strings.Trim(v, `"`), ";")
			}
			var gs grantSet
			for _, g := range kv["groups"] {
				for _, r := range kv["resources"] {
					for _, v := range kv["verbs"] {
						gs = append(gs, grant{strings.Trim(g, `"`), r, v})
					}
				}
			}
			if ns := kv["namespace"]; len(ns) > 0 {
				namespaced[ns[0]] = union(namespaced[ns[0]], gs)
			} else {
				cluster = union(cluster, gs)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cluster, namespaced
}

// boundGrants is everything the service account ns/name holds through the Roles and ClusterRoles
// bound to it in objs.
func boundGrants(t *testing.T, objs []*unstructured.Unstructured, ns, name string) grantSet {
	t.Helper()
	var out grantSet
	for _, b := range append(ofKind(objs, "RoleBinding"), ofKind(objs, "ClusterRoleBinding")...) {
		subjects, _, _ := unstructured.NestedSlice(b.Object, "subjects")
		bound := false
		for _, s := range subjects {
			sm := s.(map[string]any)
			if sm["kind"] == "ServiceAccount" && sm["name"] == name && sm["namespace"] == ns {
				bound = true
			}
		}
		if !bound {
			continue
		}
		kind, _, _ := unstructured.NestedString(b.Object, "roleRef", "kind")
		ref, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
		roleNS := b.GetNamespace()
		if kind == "ClusterRole" {
			roleNS = ""
		}
		role := find(objs, kind, roleNS, ref)
		if role == nil {
			t.Errorf("%s %s binds %s %s, which is not there", b.GetKind(), b.GetName(), kind, ref)
			continue
		}
		out = union(out, grants(t, role))
	}
	return out
}

func grantsOf(t *testing.T, o *unstructured.Unstructured) grantSet {
	if o == nil {
		return nil
	}
	return grants(t, o)
}

// union is the sorted set of the grants of all sets.
func union(sets ...grantSet) grantSet {
	seen := map[grant]bool{}
	var out grantSet
	for _, s := range sets {
		for _, g := range s {
			if !seen[g] {
				seen[g] = true
				out = append(out, g)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// minus is s without the grants on the given resources.
func minus(s grantSet, resources ...string) grantSet {
	var out grantSet
	for _, g := range s {
		if !slices.Contains(resources, g.resource) {
			out = append(out, g)
		}
	}
	return out
}

// without drops the exact grants gs from s.
func without(s grantSet, gs ...grant) grantSet {
	var out grantSet
	for _, g := range s {
		if !slices.Contains(gs, g) {
			out = append(out, g)
		}
	}
	return out
}

func equalGrants(a, b grantSet) bool { return reflect.DeepEqual(union(a), union(b)) }

type grant struct{ group, resource, verb string }

func (g grant) String() string { return g.verb + " " + g.resource + "." + g.group }

type grantSet []grant

func (s grantSet) has(g grant) bool {
	for _, x := range s {
		if x == g {
			return true
		}
	}
	return false
}

// grants expands a role's rules into sorted (group, resource, verb) triples.
func grants(t *testing.T, role *unstructured.Unstructured) grantSet {
	t.Helper()
	rules, _, err := unstructured.NestedSlice(role.Object, "rules")
	if err != nil {
		t.Fatal(err)
	}
	var out grantSet
	for _, r := range rules {
		rm := r.(map[string]any)
		groups, _, _ := unstructured.NestedStringSlice(rm, "apiGroups")
		res, _, _ := unstructured.NestedStringSlice(rm, "resources")
		verbs, _, _ := unstructured.NestedStringSlice(rm, "verbs")
		for _, g := range groups {
			for _, x := range res {
				for _, v := range verbs {
					out = append(out, grant{g, x, v})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// The chart's CRD is config/crd/bases' (plus the chart's labels and the keep policy), and the
// committed template is what hack/sync-chart-crds.sh makes of config/crd/bases now.
func TestChartCRDMatchesConfig(t *testing.T) {
	want := readObjects(t, mustGlob(t, filepath.Join(root, "config", "crd", "bases", "*.yaml"))...)

	rendered := ofKind(mustRender(t, "--show-only", "templates/crds.yaml"), "CustomResourceDefinition")
	if len(rendered) != len(want) {
		t.Fatalf("chart has %d CRDs, config/crd/bases %d", len(rendered), len(want))
	}
	for _, w := range want {
		var got *unstructured.Unstructured
		for _, r := range rendered {
			if r.GetName() == w.GetName() {
				got = r
			}
		}
		if got == nil {
			t.Fatalf("chart lacks CRD %s", w.GetName())
		}
		if !reflect.DeepEqual(got.Object["spec"], w.Object["spec"]) {
			t.Errorf("CRD %s: the chart's spec differs from config/crd/bases: run make manifests", w.GetName())
		}
		for k, v := range w.GetAnnotations() {
			if got.GetAnnotations()[k] != v {
				t.Errorf("CRD %s: annotation %s=%q, want %q", w.GetName(), k, got.GetAnnotations()[k], v)
			}
		}
		if got.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s is not kept on uninstall by default", w.GetName())
		}
		if got.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("CRD %s lacks the chart's labels: %v", w.GetName(), got.GetLabels())
		}
	}

	for _, r := range ofKind(mustRender(t, "--show-only", "templates/crds.yaml", "--set", "crds.keep=false"), "CustomResourceDefinition") {
		if _, ok := r.GetAnnotations()["helm.sh/resource-policy"]; ok {
			t.Errorf("crds.keep=false still keeps %s", r.GetName())
		}
	}
	if objs := mustRender(t, "--set", "crds.enabled=false"); len(ofKind(objs, "CustomResourceDefinition")) != 0 {
		t.Error("crds.enabled=false still renders the CRD")
	}

	out := filepath.Join(t.TempDir(), "crds.yaml")
	cmd := exec.Command("bash", filepath.Join(root, "hack", "sync-chart-crds.sh"))
	cmd.Env = append(os.Environ(), "CHART_CRDS_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sync-chart-crds.sh: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(chartDir, "templates", "crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, committed) {
		t.Error("charts/vectordb-operator/templates/crds.yaml is stale: run make manifests")
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("glob %s: %v (%d matches)", pattern, err, len(m))
	}
	return m
}

func TestIngressRoutesToTheShim(t *testing.T) {
	objs := mustRender(t, "-f", allOnFile)
	ing := find(objs, "Ingress", namespace, release)
	if ing == nil {
		t.Fatal("no Ingress with ingress.enabled")
	}
	if ing.GetAnnotations()["alb.ingress.kubernetes.io/healthcheck-path"] != "/api/v1/health" {
		t.Errorf("ALB health check path %q", ing.GetAnnotations()["alb.ingress.kubernetes.io/healthcheck-path"])
	}
	rules, _, _ := unstructured.NestedSlice(ing.Object, "spec", "rules")
	paths, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "http", "paths")
	svc, _, _ := unstructured.NestedString(paths[0].(map[string]any), "backend", "service", "name")
	port, _, _ := unstructured.NestedString(paths[0].(map[string]any), "backend", "service", "port", "name")
	shim := find(objs, "Service", namespace, svc)
	if shim == nil || port != "http" {
		t.Fatalf("Ingress routes to Service %q port %q", svc, port)
	}
	sp, _, _ := unstructured.NestedSlice(shim.Object, "spec", "ports")
	if sp[0].(map[string]any)["port"] != int64(8000) || sp[0].(map[string]any)["targetPort"] != "http" {
		t.Errorf("shim Service ports %v", sp)
	}
}

// Turning options off removes what they add and leaves a manager that starts.
func TestOptionsOff(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"rbac.create=false", []string{"--set", "rbac.create=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
				if n := len(ofKind(objs, kind)); n != 0 {
					t.Errorf("%d %s", n, kind)
				}
			}
			if find(objs, "Role", namespace, release+"-leader-election") != nil {
				t.Error("leader-election Role rendered")
			}
			if find(objs, "Role", namespace, release+"-worker") == nil {
				t.Error("the worker Role follows workers.rbac.create, not rbac.create")
			}
		}},
		{"existing manager service account", []string{"--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops-sa"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "ServiceAccount", namespace, "ops-sa") != nil || find(objs, "ServiceAccount", namespace, release) != nil {
				t.Error("a manager ServiceAccount rendered")
			}
			sa, _, _ := unstructured.NestedString(deployment(t, objs).Object, "spec", "template", "spec", "serviceAccountName")
			binding := find(objs, "ClusterRoleBinding", "", release+"-manager")
			subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
			if sa != "ops-sa" || subjects[0].(map[string]any)["name"] != "ops-sa" {
				t.Errorf("pod runs as %q, binding names %v", sa, subjects)
			}
		}},
		{"no worker objects", []string{"--set", "workers.serviceAccount.create=false", "--set", "workers.rbac.create=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			for _, o := range objs {
				if o.GetLabels()["app.kubernetes.io/component"] == "worker" {
					t.Errorf("%s %s rendered", o.GetKind(), o.GetName())
				}
			}
		}},
		{"one replica", []string{"--set", "replicaCount=1", "--set", "leaderElection.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if len(ofKind(objs, "PodDisruptionBudget")) != 0 {
				t.Error("a PodDisruptionBudget for one replica would block every drain")
			}
			opts, _ := parseManagerArgs(t, managerArgs(t, deployment(t, objs)))
			if opts.LeaderElect {
				t.Error("--leader-elect is on")
			}
		}},
		{"no metrics Service", []string{"--set", "metrics.service.enabled=false"}, func(t *testing.T, objs []*unstructured.Unstructured) {
			if find(objs, "Service", namespace, release+"-metrics") != nil {
				t.Error("metrics Service rendered")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := mustRender(t, c.args...)
			parseManagerArgs(t, managerArgs(t, deployment(t, objs)))
			c.check(t, objs)
		})
	}
	if _, err := render(t, "--set", "serviceAccount.create=false"); err == nil || !strings.Contains(err.Error(), "serviceAccount.name is required") {
		t.Errorf("serviceAccount.create=false without a name: %v", err)
	}
}
