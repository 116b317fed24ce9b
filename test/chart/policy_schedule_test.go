package chart

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/shim"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const evilImage = "docker.io/evil/miner:1"

// operatorClient acts as the operator's service account, as the chart's policy sees it.
func operatorClient(t *testing.T, cluster *harness.Cluster) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + release, Groups: []string{"system:masters"},
	}
	c, err := client.New(cfg, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func scheduleSample(t *testing.T, name string, mutate func(spec map[string]any)) *unstructured.Unstructured {
	t.Helper()
	o := readObjects(t, filepath.Join(root, "config", "samples", "ingestion_v1alpha1_csvingestionschedule_s3daily.yaml"))[0]
	o.SetNamespace("ingestion")
	o.SetName(name)
	if mutate != nil {
		mutate(o.Object["spec"].(map[string]any))
	}
	return o
}

func setTemplate(t *testing.T, path string, v any) func(map[string]any) {
	return func(spec map[string]any) {
		if err := unstructured.SetNestedField(spec, v, append([]string{"template", "spec"}, strings.Split(path, ".")...)...); err != nil {
			t.Fatal(err)
		}
	}
}

// beforePolicy are objects made before the policy existed, with what it forbids.
type beforePolicy struct {
	ingestion, schedule *unstructured.Unstructured
}

func createBeforePolicy(ctx context.Context, t *testing.T, c client.Client) beforePolicy {
	t.Helper()
	ing := readObjects(t, filepath.Join(root, "config", "samples", "ingestion_v1alpha1_csvingestion_legacy.yaml"))[0]
	ing.SetNamespace("ingestion")
	ing.SetName("before-policy")
	if err := unstructured.SetNestedField(ing.Object, evilImage, "spec", "worker", "image"); err != nil {
		t.Fatal(err)
	}
	sch := scheduleSample(t, "before-policy", setTemplate(t, "worker.image", evilImage))
	if err := unstructured.SetNestedField(sch.Object, "* * * * *", "spec", "schedule"); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*unstructured.Unstructured{ing, sch} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %s before the policy: %v", o.GetKind(), err)
		}
	}
	t.Cleanup(func() {
		// Schedules first.
		_ = c.Delete(context.Background(), sch)
		_ = c.DeleteAllOf(context.Background(), &v1alpha1.CsvIngestion{}, client.InNamespace("ingestion"))
	})
	return beforePolicy{ingestion: ing, schedule: sch}
}

// testPolicyOnSchedulesAndOperator runs with the chart's policy (policyValues) enforced.
func testPolicyOnSchedulesAndOperator(ctx context.Context, t *testing.T, cluster *harness.Cluster, pre beforePolicy) {
	c := cluster.Client
	policyName := release + "-csvingestionschedules"

	t.Run("schedule templates are checked", func(t *testing.T) {
		// Each binding takes effect asynchronously: wait for this one's first refusal.
		eventually(ctx, t, "schedule policy enforced", func() (bool, string) {
			err := c.Create(ctx, scheduleSample(t, "probe", setTemplate(t, "worker.image", evilImage)), client.DryRunAll)
			return err != nil && strings.Contains(err.Error(), policyName), fmt.Sprint(err)
		})
		refused := []struct {
			name   string
			mutate func(map[string]any)
			want   string
		}{
			{"foreign image", setTemplate(t, "worker.image", evilImage),
				"spec.template.spec.worker.image docker.io/evil/miner:1 is not allowed: worker images must start with one of registry.example.com/vectordb/"},
			{"another service account", setTemplate(t, "worker.serviceAccountName", "default"),
				"spec.template.spec.worker.serviceAccountName default is not allowed: worker pods may run as vectordb-embedder, team-embedder"},
			{"foreign baseURL", setTemplate(t, "embedding.baseURL", "https://collector.attacker.example/v1"),
				"spec.template.spec.embedding.baseURL https://collector.attacker.example/v1 is not allowed: the OpenAI key may be sent to OpenAI or to llm.internal.example.com"},
			{"foreign DynamoDB endpoint", setTemplate(t, "tracking.dynamoDB", map[string]any{"table": "vectordb-tasks-prod", "endpoint": "http://169.254.169.254"}),
				"spec.template.spec.tracking.dynamoDB.endpoint http://169.254.169.254 is not allowed"},
			{"foreign table", setTemplate(t, "tracking.dynamoDB", map[string]any{"table": "payroll"}),
				"spec.template.spec.tracking.dynamoDB.table payroll is not allowed: task tables are vectordb-tasks-prod, team-a-"},
		}
		for _, r := range refused {
			err := c.Create(ctx, scheduleSample(t, "refused", r.mutate), client.DryRunAll)
			if err == nil {
				t.Errorf("%s: admitted", r.name)
				continue
			}
			if !strings.Contains(err.Error(), r.want) || !strings.Contains(err.Error(), "admission policy "+policyName) {
				t.Errorf("%s: message %q, want it to contain %q", r.name, err, r.want)
			}
		}
		for name, m := range map[string]func(map[string]any){
			"allowed image":        setTemplate(t, "worker.image", "registry.example.com/vectordb/embedder:v1"),
			"allowed baseURL host": setTemplate(t, "embedding.baseURL", "https://llm.internal.example.com:8443/v1"),
		} {
			if err := c.Create(ctx, scheduleSample(t, "admitted", m), client.DryRunAll); err != nil {
				t.Errorf("%s: refused: %v", name, err)
			}
		}
		// Editing a schedule into a forbidden template is refused too.
		ok := scheduleSample(t, "edited", nil)
		if err := c.Create(ctx, ok); err != nil {
			t.Fatal(err)
		}
		defer c.Delete(ctx, ok)
		setTemplate(t, "worker.image", evilImage)(ok.Object["spec"].(map[string]any))
		if err := c.Update(ctx, ok); err == nil || !strings.Contains(err.Error(), "admission policy "+policyName) {
			t.Errorf("update to a forbidden image: %v", err)
		}
	})

	asOperator := operatorClient(t, cluster)
	t.Run("the operator's creates are checked, its updates are not", func(t *testing.T) {
		ing := readObjects(t, filepath.Join(root, "config", "samples", "ingestion_v1alpha1_csvingestion_legacy.yaml"))[0]
		ing.SetNamespace("ingestion")
		if err := unstructured.SetNestedField(ing.Object, evilImage, "spec", "worker", "image"); err != nil {
			t.Fatal(err)
		}
		err := asOperator.Create(ctx, ing, client.DryRunAll)
		if err == nil || !strings.Contains(err.Error(), "admission policy "+release+"-csvingestions") {
			t.Errorf("the operator created a forbidden ingestion: %v", err)
		}
		// An ingestion made before the policy still gets its finalizer added and removed.
		cur := &v1alpha1.CsvIngestion{}
		if err := asOperator.Get(ctx, client.ObjectKeyFromObject(pre.ingestion), cur); err != nil {
			t.Fatal(err)
		}
		cur.Finalizers = append(cur.Finalizers, "ingestion.vectordb.io/test")
		if err := asOperator.Update(ctx, cur); err != nil {
			t.Errorf("the operator's update of an ingestion made before the policy: %v", err)
		}
		cur.Finalizers = nil
		if err := asOperator.Update(ctx, cur); err != nil {
			t.Errorf("the operator's update of an ingestion made before the policy: %v", err)
		}
	})

	t.Run("a schedule made before the policy reports its refused runs", func(t *testing.T) {
		sch := &v1alpha1.CsvIngestionSchedule{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pre.schedule), sch); err != nil {
			t.Fatal(err)
		}
		now := sch.CreationTimestamp.Add(90 * time.Second)
		r := &controllers.ScheduleReconciler{Client: asOperator, Now: func() time.Time { return now }}
		if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(sch)}); err != nil {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(sch), sch); err != nil {
			t.Fatal(err)
		}
		ready := meta.FindStatusCondition(sch.Status.Conditions, v1alpha1.ConditionScheduleReady)
		skipped := meta.FindStatusCondition(sch.Status.Conditions, v1alpha1.ConditionRunSkipped)
		if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha1.ReasonRunRejected ||
			!strings.Contains(ready.Message, "spec.worker.image "+evilImage+" is not allowed") ||
			!strings.Contains(ready.Message, "admission policy "+release+"-csvingestions") {
			t.Fatalf("Ready %+v", ready)
		}
		if skipped == nil || skipped.Status != metav1.ConditionTrue || sch.Status.SkippedRuns != 1 {
			t.Fatalf("RunSkipped %+v, skippedRuns %d", skipped, sch.Status.SkippedRuns)
		}
		var runs v1alpha1.CsvIngestionList
		if err := c.List(ctx, &runs, client.InNamespace("ingestion"), client.MatchingLabels{controllers.LabelSchedule: sch.Name}); err != nil {
			t.Fatal(err)
		}
		if len(runs.Items) != 0 {
			t.Fatalf("%d runs created despite the policy", len(runs.Items))
		}
	})

	t.Run("the REST API's creates are checked", func(t *testing.T) {
		post := func(d shim.Defaults) (int, string) {
			s, err := shim.New(shim.Config{APIEnabled: true, APIKeys: shim.StaticKeys("k"), Defaults: d}, shim.Deps{
				Client: asOperator, APIReader: asOperator, Log: logr.Discard(),
				CacheSynced: func(context.Context) bool { return true }, APIServerCheck: func(context.Context) error { return nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodPost, "/api/v1/process", strings.NewReader(`{"s3_key":"exports/a.csv","question_id":239}`))
			req.Header.Set("X-API-Key", "k")
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, req)
			b, _ := io.ReadAll(w.Result().Body)
			return w.Code, string(b)
		}
		d := shim.Defaults{Namespace: "ingestion", Bucket: "csv-storage", Index: "clickbid-prod",
			OpenAISecret: v1alpha1.SecretKeyRef{Name: "openai"}, PineconeSecret: v1alpha1.SecretKeyRef{Name: "pinecone"},
			DynamoDB: v1alpha1.DynamoDBTracking{Table: "payroll", Region: "us-east-1"}}
		code, body := post(d)
		if code != http.StatusForbidden || !strings.Contains(body, "spec.tracking.dynamoDB.table payroll is not allowed") {
			t.Errorf("REST create with a forbidden table: %d %s", code, body)
		}
		d.DynamoDB.Table = "vectordb-tasks-prod"
		code, body = post(d)
		if code != http.StatusAccepted {
			t.Errorf("REST create with an allowed table: %d %s", code, body)
		}
	})
}

// With the REST API on, its own task table and endpoint are allowed by the policy (its creates
// are checked like anyone's, and they come from the operator's settings).
func TestPolicyAllowsTheRESTAPIsOwnTable(t *testing.T) {
	// all-on: the API is on, and its endpoint is not among admissionPolicy.tracking.endpoints.
	objs := mustRender(t, "-f", allOnFile,
		"--set", "api.defaults.dynamoDB.table=legacy-tasks", "--set", "api.defaults.dynamoDB.endpoint=http://dynamodb.internal:8000")
	for _, name := range []string{release + "-csvingestions", release + "-csvingestionschedules"} {
		p := find(objs, "ValidatingAdmissionPolicy", "", name)
		if p == nil {
			t.Fatalf("no policy %s", name)
		}
		s := fmt.Sprint(p.Object["spec"])
		for _, want := range []string{`"legacy-tasks"`, `"http://dynamodb.internal:8000"`, `"vectordb-tasks-prod"`, `"http://dynamodb.local:8000"`} {
			if !strings.Contains(s, want) {
				t.Errorf("%s does not allow %s", name, want)
			}
		}
	}
}
