package shim

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

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
