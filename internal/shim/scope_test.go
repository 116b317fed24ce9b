package shim

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// A key scoped to namespace A lists, reads and cancels only A's tasks; B's tasks, in the cluster
// or only in the task table, are 404 to it by task id and by uid (not 403: it cannot learn they
// exist), and cancelling one changes nothing. A key without a namespaces entry sees the API's own
// namespace; only "*" sees every namespace.
func TestKeysSeeOnlyTheirNamespaces(t *testing.T) {
	ctx := context.Background()
	c := testCluster(t)
	nsA, nsB := newNamespace(t, c.Client), newNamespace(t, c.Client)
	d := harness.StartDynalite(t)
	if err := tasktable.EnsureTable(ctx, d.Client(), "scoped"); err != nil {
		t.Fatal(err)
	}
	table := tasktable.NewFromAPI(d.Client(), "scoped")
	const keyA, keyB, keyRO, keyAll = "key-of-team-a", "key-of-team-b", "read-key-of-team-a", "key-of-everyone"
	e := startShim(t, c, func(cfg *Config, deps *Deps) {
		cfg.APIKeys = apikeys.Join(StaticKeys(testKey), apikeys.Static(
			apikeys.Key{Name: "a", Value: keyA, Namespaces: []string{nsA}},
			apikeys.Key{Name: "b", Value: keyB, Namespaces: []string{nsB}},
			apikeys.Key{Name: "all", Value: keyAll, Namespaces: []string{apikeys.AllNamespaces}},
		))
		cfg.ReadOnlyKeys = apikeys.Static(apikeys.Key{Name: "ro", Value: keyRO, Namespaces: []string{nsA}})
		deps.Tasks = table
	})

	ingA := sampleIngestion(nsA, "in-a", "scope-a-"+uuid.NewString())
	ingB := sampleIngestion(nsB, "in-b", "scope-b-"+uuid.NewString())
	for _, o := range []*v1alpha1.CsvIngestion{ingA, ingB} {
		if err := e.Direct.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// A task of B whose resource is gone: only the table knows it.
	goneB := tasktable.Task{TaskID: "scope-gone-b-" + uuid.NewString(), Status: "processing", TaskType: tasktable.TaskTypeS3CSV,
		CreatedAt: time.Now(), Version: 1, K8s: tasktable.K8sRef{Namespace: nsB, Name: "deleted", UID: "uid-gone-b"}}
	if err := table.Put(ctx, goneB, nil); err != nil {
		t.Fatal(err)
	}

	listed := func(key string) []string {
		r := do(t, http.MethodGet, e.URL+"/api/v1/tasks?limit=1000", key, nil)
		if r.Code != http.StatusOK {
			t.Fatalf("GET /api/v1/tasks with %s: %d %s", key, r.Code, r.Body)
		}
		var items []StatusResponse
		r.json(t, &items)
		return taskIDs(items)
	}
	status := func(key, id string) int {
		return do(t, http.MethodGet, e.URL+"/api/v1/status/"+id, key, nil).Code
	}
	eventually(t, "both ingestions in the cache", func() error {
		if got := listed(keyAll); !slices.Contains(got, ingA.Spec.TaskID) || !slices.Contains(got, ingB.Spec.TaskID) || !slices.Contains(got, goneB.TaskID) {
			return fmt.Errorf("the cluster-wide key lists %v", got)
		}
		return nil
	})

	for _, key := range []string{keyA, keyRO} {
		got := listed(key)
		if !slices.Contains(got, ingA.Spec.TaskID) || slices.Contains(got, ingB.Spec.TaskID) || slices.Contains(got, goneB.TaskID) {
			t.Errorf("key %s lists %v: want A's task and none of B's", key, got)
		}
		if code := status(key, ingA.Spec.TaskID); code != http.StatusOK {
			t.Errorf("key %s: status of A's task %d, want 200", key, code)
		}
		for _, id := range []string{ingB.Spec.TaskID, string(ingB.UID), goneB.TaskID} {
			if code := status(key, id); code != http.StatusNotFound {
				t.Errorf("key %s: status of B's task %s: %d, want 404", key, id, code)
			}
		}
	}
	// The default-scoped key sees the API's namespace only.
	if got := listed(testKey); slices.Contains(got, ingA.Spec.TaskID) || slices.Contains(got, ingB.Spec.TaskID) {
		t.Errorf("the key without namespaces lists %v: want neither A's nor B's task", got)
	}
	if code := status(keyB, ingB.Spec.TaskID); code != http.StatusOK {
		t.Errorf("key B: status of its own task %d", code)
	}
	if code := status(keyB, goneB.TaskID); code != http.StatusOK {
		t.Errorf("key B: status of its task in the table %d", code)
	}

	// Cancel: B's task is 404 to A's key (by id and uid) and stays uncancelled; A's is cancelled.
	for _, id := range []string{ingB.Spec.TaskID, string(ingB.UID), goneB.TaskID} {
		if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+id, keyA, nil); r.Code != http.StatusNotFound || r.detail(t) != "Task not found" {
			t.Errorf("key A: DELETE of B's task %s: %d %s, want 404", id, r.Code, r.Body)
		}
	}
	var b v1alpha1.CsvIngestion
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(ingB), &b); err != nil || b.Spec.Cancel {
		t.Errorf("B's ingestion was cancelled by A's key (%v)", err)
	}
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+ingA.Spec.TaskID, keyRO, nil); r.Code != http.StatusForbidden {
		t.Errorf("read-only key: DELETE %d, want 403", r.Code)
	}
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+ingA.Spec.TaskID, keyA, nil); r.Code != http.StatusNoContent {
		t.Errorf("key A: DELETE of its own task %d %s, want 204", r.Code, r.Body)
	}
	var a v1alpha1.CsvIngestion
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(ingA), &a); err != nil || !a.Spec.Cancel {
		t.Errorf("A's ingestion not cancelled (%v)", err)
	}

	// Tasks are created in the API's namespace: a key not scoped to it may not create them.
	if r := do(t, http.MethodPost, e.URL+"/api/v1/process", keyA, `{"s3_key":"x.csv","question_id":1}`); r.Code != http.StatusForbidden {
		t.Errorf("key A: POST %d %s, want 403", r.Code, r.Body)
	}
	if r := do(t, http.MethodPost, e.URL+"/api/v1/process", keyAll, `{"s3_key":"x.csv","question_id":1}`); r.Code != http.StatusAccepted {
		t.Errorf("cluster-wide key: POST %d %s, want 202", r.Code, r.Body)
	}
}
