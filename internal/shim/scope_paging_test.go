package shim

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// A key scoped to one namespace pages through a table whose newest items are another
// namespace's: a page of the table may hold nothing the key sees, and its X-Continue (the
// horizon of what was read, a time without a task id) must still be a token the next request
// accepts, until the key's own older task is reached.
func TestScopedKeyPagesPastOtherNamespacesItems(t *testing.T) {
	ctx := context.Background()
	d := harness.StartDynalite(t)
	if err := tasktable.EnsureTable(ctx, d.Client(), "scoped-paging"); err != nil {
		t.Fatal(err)
	}
	table := tasktable.NewFromAPI(d.Client(), "scoped-paging")
	const nsA, nsOther = "paging-team-a", "paging-team-other"
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	put := func(id, ns string, at time.Time) {
		task := tasktable.Task{TaskID: id, Status: "completed", TaskType: tasktable.TaskTypeS3CSV, CreatedAt: at, Version: 1,
			K8s: tasktable.K8sRef{Namespace: ns, Name: id, UID: "uid-" + id}}
		if err := table.Put(ctx, task, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("paging-a-0", nsA, base)
	for i := 1; i <= 12; i++ {
		put(fmt.Sprintf("paging-other-%02d", i), nsOther, base.Add(time.Duration(i)*time.Second))
	}
	const keyA = "paging-key-of-team-a-0123456789abcdef"
	e := startShim(t, testCluster(t), func(c *Config, deps *Deps) {
		c.ReadOnlyKeys = apikeys.Static(apikeys.Key{Name: "a", Value: keyA, Namespaces: []string{nsA}})
		deps.Tasks = table
	})

	var got []string
	query := "?limit=5"
	for page := 0; ; page++ {
		if page == 10 {
			t.Fatalf("10 pages of 5 did not end; listed %v", got)
		}
		r := do(t, http.MethodGet, e.URL+"/api/v1/tasks"+query, keyA, nil)
		if r.Code != http.StatusOK {
			t.Fatalf("page %d (%s): %d %s", page, query, r.Code, r.Body)
		}
		var items []StatusResponse
		r.json(t, &items)
		got = append(got, taskIDs(items)...)
		next := r.Header.Get(HeaderContinue)
		if next == "" {
			break
		}
		query = "?limit=5&continue=" + next
	}
	if len(got) != 1 || got[0] != "paging-a-0" {
		t.Errorf("key of %s listed %v over its pages, want only [paging-a-0]", nsA, got)
	}
}

// Two namespaces' ingestions with the same task id: a key scoped to one of them reads and cancels
// its own, even when the other is older (which a cluster-wide key's lookup picks).
func TestSameTaskIDInTwoNamespaces(t *testing.T) {
	ctx := context.Background()
	c := testCluster(t)
	nsA, nsB := newNamespace(t, c.Client), newNamespace(t, c.Client)
	const keyA = "same-id-key-of-team-a-0123456789abc"
	e := startShim(t, c, func(cfg *Config, deps *Deps) {
		cfg.APIKeys = apikeys.Static(apikeys.Key{Name: "a", Value: keyA, Write: true, Namespaces: []string{nsA}})
	})
	id := "same-id-" + nsA
	ingB := sampleIngestion(nsB, "older", id)
	if err := e.Direct.Create(ctx, ingB); err != nil {
		t.Fatal(err)
	}
	ingA := sampleIngestion(nsA, "newer", id)
	if err := e.Direct.Create(ctx, ingA); err != nil {
		t.Fatal(err)
	}
	eventually(t, "key A reads its own task", func() error {
		r := do(t, http.MethodGet, e.URL+"/api/v1/status/"+id, keyA, nil)
		if r.Code != http.StatusOK {
			return fmt.Errorf("%d %s", r.Code, r.Body)
		}
		var st StatusResponse
		r.json(t, &st)
		if st.Metadata.Kubernetes == nil || st.Metadata.Kubernetes.Namespace != nsA {
			return fmt.Errorf("status names %+v, want the ingestion in %s", st.Metadata.Kubernetes, nsA)
		}
		return nil
	})
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+id, keyA, nil); r.Code != http.StatusNoContent {
		t.Fatalf("key A: DELETE %d %s", r.Code, r.Body)
	}
	var a, b v1alpha1.CsvIngestion
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(ingA), &a); err != nil || !a.Spec.Cancel {
		t.Errorf("A's ingestion not cancelled (%v)", err)
	}
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(ingB), &b); err != nil || b.Spec.Cancel {
		t.Errorf("B's ingestion was cancelled by A's key (%v)", err)
	}
}
