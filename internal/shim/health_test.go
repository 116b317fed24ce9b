package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// legacyHealthCheck is the old plan's health_check.sh in Go: response=$(curl -s $API_URL);
// status=$(echo $response | jq -r '.status'); [ "$status" = "healthy" ].
func legacyHealthCheck(url string) error {
	resp, err := http.Get(url) //nolint:noctx // as curl -s does
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("jq: %w", err)
	}
	if s, _ := body["status"].(string); s != "healthy" {
		return fmt.Errorf("API is unhealthy: %v", body)
	}
	return nil
}

// runHealthScript runs hack/health_check.sh (curl and jq) against url and returns its exit code.
func runHealthScript(t *testing.T, url string) int {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("hack/health_check.sh needs %s: %v", tool, err)
		}
	}
	out, err := exec.Command("bash", filepath.Join(harness.RepoRoot(), "hack", "health_check.sh"), url).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		t.Logf("health_check.sh: %s", out)
		return ee.ExitCode()
	}
	t.Fatalf("running health_check.sh: %v: %s", err, out)
	return -1
}

func getHealth(t *testing.T, url string) (int, HealthResponse) {
	t.Helper()
	r := do(t, http.MethodGet, url+"/api/v1/health", "", nil)
	var h HealthResponse
	r.json(t, &h)
	if r.Header.Get("X-Request-ID") == "" {
		t.Errorf("health answered without X-Request-ID")
	}
	return r.Code, h
}

func TestHealthHealthyAndLegacyScript(t *testing.T) {
	e := startShim(t, testCluster(t))
	code, h := getHealth(t, e.URL)
	if code != http.StatusOK || h.Status != Healthy {
		t.Fatalf("health = %d %+v, want 200 healthy", code, h)
	}
	want := map[string]string{"kubernetes": Healthy, "cache": Healthy, "dynamodb": Disabled}
	for k, v := range want {
		if h.Checks[k] != v {
			t.Errorf("checks[%s] = %q, want %q", k, h.Checks[k], v)
		}
	}
	if h.Version != "v0.0.0-test" {
		t.Errorf("version = %q", h.Version)
	}
	if ts, err := time.Parse(tasktable.TimeFormat, h.Timestamp); err != nil || time.Since(ts) > time.Hour || time.Since(ts) < -time.Hour {
		t.Errorf("timestamp %q: %v", h.Timestamp, err)
	}
	if err := legacyHealthCheck(e.URL + "/api/v1/health"); err != nil {
		t.Errorf("the old health_check.sh logic fails: %v", err)
	}
	if code := runHealthScript(t, e.URL+"/api/v1/health"); code != 0 {
		t.Errorf("hack/health_check.sh exit %d, want 0", code)
	}
	// Health needs no key even with the API on; a wrong key does not matter either.
	if r := do(t, http.MethodGet, e.URL+"/api/v1/health", "wrong", nil); r.Code != http.StatusOK {
		t.Errorf("health with a wrong key = %d", r.Code)
	}
}

func TestHealthCountsWorkers(t *testing.T) {
	e := startShim(t, testCluster(t))
	ctx := context.Background()
	_, before := getHealth(t, e.URL)

	obj := sampleIngestion(e.NS, "counted", "")
	if err := e.Direct.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseProcessingChunks
		s.Chunks = v1alpha1.ChunkCounts{Total: 9, Pending: 5, Active: 2, Succeeded: 2}
	})
	// A finished ingestion's pending count is not queued work.
	done := sampleIngestion(e.NS, "finished", "")
	if err := e.Direct.Create(ctx, done); err != nil {
		t.Fatal(err)
	}
	setStatus(t, e.Direct, done, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseFailed
		s.Chunks = v1alpha1.ChunkCounts{Total: 9, Pending: 7, Failed: 2}
	})
	createChunkJob(t, e.Direct, obj, 3, 1)
	createChunkJob(t, e.Direct, obj, 4, 1)
	createChunkJob(t, e.Direct, obj, 2, 0) // no pod yet: not a running worker

	// available: parallelism 4 (the default) less the 2 running Jobs, as at most 5 chunks wait.
	want := Workers{Active: before.Workers.Active + 2, Queued: before.Workers.Queued + 5,
		QueuedTasks: before.Workers.QueuedTasks + 5, Available: before.Workers.Available + 2}
	eventually(t, "workers counted", func() error {
		if _, h := getHealth(t, e.URL); h.Workers != want {
			return fmt.Errorf("workers = %+v, want %+v", h.Workers, want)
		}
		return nil
	})
}

func TestHealthDynamoDB(t *testing.T) {
	d := harness.StartDynalite(t)
	ctx := context.Background()
	if err := tasktable.EnsureTable(ctx, d.Client(), "tasks"); err != nil {
		t.Fatal(err)
	}
	withTable := func(table string) envOption {
		return func(_ *Config, deps *Deps) { deps.Tasks = tasktable.NewFromAPI(d.Client(), table) }
	}

	ok := startShim(t, testCluster(t), withTable("tasks"))
	code, h := getHealth(t, ok.URL)
	if code != http.StatusOK || h.Status != Healthy || h.Checks["dynamodb"] != Healthy {
		t.Fatalf("with a reachable table: %d %+v, want 200 healthy, dynamodb healthy", code, h)
	}

	// A missing table degrades: the load balancer keeps the replica (200), the old script alarms.
	missing := startShim(t, testCluster(t), withTable("no-such-table"))
	code, h = getHealth(t, missing.URL)
	if code != http.StatusOK || h.Status != Degraded || h.Checks["dynamodb"] != Unhealthy {
		t.Fatalf("with a missing table: %d %+v, want 200 degraded, dynamodb unhealthy", code, h)
	}
	if code := runHealthScript(t, missing.URL+"/api/v1/health"); code != 1 {
		t.Errorf("hack/health_check.sh exit %d on degraded, want 1", code)
	}
}

func TestHealthUnsyncedCacheIsUnhealthy(t *testing.T) {
	// A cache that was never started never syncs, as on a replica still starting.
	ca, err := cache.New(testCluster(t).Config, cache.Options{Scheme: testCluster(t).Scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := startShim(t, testCluster(t), func(_ *Config, d *Deps) {
		d.CacheSynced = func(ctx context.Context) bool {
			ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			return ca.WaitForCacheSync(ctx)
		}
	})
	code, h := getHealth(t, e.URL)
	if code != http.StatusServiceUnavailable || h.Status != Unhealthy || h.Checks["cache"] != Unhealthy || h.Checks["kubernetes"] != Healthy {
		t.Fatalf("health = %d %+v, want 503 unhealthy with cache unhealthy", code, h)
	}
	if err := legacyHealthCheck(e.URL + "/api/v1/health"); err == nil {
		t.Errorf("the old health_check.sh logic passes on an unhealthy replica")
	}
}

// sampleIngestion is a valid CsvIngestion as someone would apply it with kubectl.
func sampleIngestion(ns, name, taskID string) *v1alpha1.CsvIngestion {
	return &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.CsvIngestionSpec{
			TaskID:    taskID,
			Source:    v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: "csv-storage", Key: "exports/" + name + ".csv"}},
			Mapping:   v1alpha1.MappingSpec{IDPrefix: "77.", TextColumn: "formatted_text"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai"}},
			Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{
				Index: "idx", Namespace: "kubectl-ns", APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "pinecone"},
			}},
			Chunking: v1alpha1.ChunkingSpec{ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute}},
		},
	}
}

// setStatus writes the status subresource as the controller would.
func setStatus(t testing.TB, c client.Client, obj *v1alpha1.CsvIngestion, f func(*v1alpha1.CsvIngestionStatus)) {
	t.Helper()
	ctx := context.Background()
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatalf("reading %s: %v", obj.Name, err)
	}
	f(&obj.Status)
	if err := c.Status().Update(ctx, obj); err != nil {
		t.Fatalf("writing status of %s: %v", obj.Name, err)
	}
}

// createChunkJob creates chunk Job index of obj, labelled as the controller labels them, with
// active running pods in its status (0: none started).
func createChunkJob(t testing.TB, c client.Client, obj *v1alpha1.CsvIngestion, index int, active int32) {
	t.Helper()
	ctx := context.Background()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: obj.Namespace,
			Name:      worker.ChunkJobName(obj.Name, index),
			Labels: map[string]string{
				worker.LabelName: obj.Name, worker.LabelUID: string(obj.UID), worker.LabelRole: worker.RoleChunk,
				worker.LabelChunk: fmt.Sprint(index),
			},
		},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "embedder", Image: "embedder", Args: []string{"chunk"}}},
		}}},
	}
	if err := c.Create(ctx, job); err != nil {
		t.Fatalf("creating Job: %v", err)
	}
	if active == 0 {
		return // no pod running yet
	}
	now := metav1.Now()
	job.Status.StartTime = &now
	job.Status.Active = active
	if err := c.Status().Update(ctx, job); err != nil {
		t.Fatalf("writing Job status: %v", err)
	}
}
