package shim

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// listPage is a page of GET /api/v1/tasks as a client sees it: the body is a bare JSON array (the
// old list[TaskStatus]); the totals come from the headers.
type listPage struct {
	Tasks                []StatusResponse
	Total, Limit, Offset int // Total is -1 when the page does not say (more pages follow)
	Continue             string
}

func listTasks(t testing.TB, e *shimEnv, query string) (int, listPage, response) {
	t.Helper()
	r := do(t, http.MethodGet, e.URL+"/api/v1/tasks"+query, testKey, nil)
	var lr listPage
	if r.Code == http.StatusOK {
		r.json(t, &lr.Tasks) // fails unless the body is an array
		lr.Total, lr.Continue = -1, r.Header.Get(HeaderContinue)
		if lr.Continue != "" && r.Header.Get(HeaderTotalCount) != "" {
			t.Errorf("a page with a next page claims a total")
		}
		headers := map[string]*int{HeaderLimit: &lr.Limit, HeaderOffset: &lr.Offset}
		if r.Header.Get(HeaderTotalCount) != "" || (lr.Continue == "" && !strings.Contains(query, "continue=")) {
			headers[HeaderTotalCount] = &lr.Total // a complete listing from the newest says its total
		}
		for h, v := range headers {
			n, err := strconv.Atoi(r.Header.Get(h))
			if err != nil {
				t.Fatalf("header %s = %q: %v", h, r.Header.Get(h), err)
			}
			*v = n
		}
	}
	return r.Code, lr, r
}

// mine keeps the tasks of this test's namespace (the cluster is shared).
func mine(e *shimEnv, items []StatusResponse) []string {
	var ids []string
	for _, s := range items {
		if s.Metadata.Kubernetes != nil && s.Metadata.Kubernetes.Namespace == e.NS {
			ids = append(ids, s.TaskID)
		}
	}
	return ids
}

func TestListNewestFirstFilterAndPages(t *testing.T) {
	e := startShim(t, testCluster(t))
	var ids []string // oldest first
	for i := range 5 {
		ids = append(ids, post(t, e, fmt.Sprintf(`{"s3_key":"exports/%d.csv","question_id":%d}`, i, i+1)).TaskID)
	}
	newestFirst := slices.Clone(ids)
	slices.Reverse(newestFirst)

	eventually(t, "all five listed", func() error {
		_, lr, _ := listTasks(t, e, "?limit=1000")
		if got := mine(e, lr.Tasks); !slices.Equal(got, newestFirst) {
			return fmt.Errorf("listed %v, want %v", got, newestFirst)
		}
		return nil
	})

	// Pages are consecutive slices of the whole list, by offset or by continue token; the total
	// is told once the end is reached.
	_, all, _ := listTasks(t, e, "?limit=1000")
	if all.Total != len(all.Tasks) || all.Continue != "" {
		t.Fatalf("the whole list: total %d for %d tasks, continue %q", all.Total, len(all.Tasks), all.Continue)
	}
	var paged []StatusResponse
	for off := 0; off < all.Total; off += 2 {
		code, lr, r := listTasks(t, e, fmt.Sprintf("?limit=2&offset=%d", off))
		if code != http.StatusOK || lr.Limit != 2 || lr.Offset != off || len(lr.Tasks) > 2 ||
			(off+2 < all.Total) != (lr.Continue != "") || (lr.Continue == "" && lr.Total != all.Total) {
			t.Fatalf("page at %d: %d %s %+v", off, code, r.Body, r.Header)
		}
		paged = append(paged, lr.Tasks...)
	}
	if got, want := taskIDs(paged), taskIDs(all.Tasks); !slices.Equal(got, want) {
		t.Errorf("pages joined = %v, want %v", got, want)
	}
	paged = nil
	for q, n := "?limit=2", 0; ; n++ {
		code, lr, r := listTasks(t, e, q)
		if code != http.StatusOK || n > all.Total {
			t.Fatalf("page %d: %d %s", n, code, r.Body)
		}
		paged = append(paged, lr.Tasks...)
		if lr.Continue == "" {
			break
		}
		q = "?limit=2&continue=" + lr.Continue
	}
	if got, want := taskIDs(paged), taskIDs(all.Tasks); !slices.Equal(got, want) {
		t.Errorf("pages by continue token = %v, want %v", got, want)
	}
	if _, lr, _ := listTasks(t, e, fmt.Sprintf("?offset=%d", all.Total)); len(lr.Tasks) != 0 || lr.Tasks == nil {
		t.Errorf("past the end: %+v, want an empty list", lr)
	}

	// status_filter picks one status word.
	obj := resourceOf(t, e, ids[1])
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) { s.Phase = v1alpha1.PhaseCompleted })
	eventually(t, "filtered by completed", func() error {
		_, lr, _ := listTasks(t, e, "?status_filter=completed")
		if got := mine(e, lr.Tasks); !slices.Equal(got, []string{ids[1]}) {
			return fmt.Errorf("completed = %v, want [%s]", got, ids[1])
		}
		for _, s := range lr.Tasks {
			if s.Status != "completed" {
				return fmt.Errorf("a %s task in the completed list", s.Status)
			}
		}
		return nil
	})
	_, lr, _ := listTasks(t, e, "?status_filter=pending&limit=1000")
	if got, want := mine(e, lr.Tasks), []string{ids[4], ids[3], ids[2], ids[0]}; !slices.Equal(got, want) {
		t.Errorf("pending = %v, want %v", got, want)
	}

	for _, tc := range []struct{ query, loc string }{
		{"?limit=0", "query.limit"},
		{"?limit=1001", "query.limit"},
		{"?limit=ten", "query.limit"},
		{"?offset=-1", "query.offset"},
		{"?offset=x", "query.offset"},
		{"?offset=10001", "query.offset"},
		{"?continue=bm90LWEtdG9rZW4", "query.continue"},
		{"?continue=x.y", "query.continue"},
		{"?status_filter=done", "query.status_filter"},
	} {
		code, _, r := listTasks(t, e, tc.query)
		if code != http.StatusUnprocessableEntity || !slices.Equal(r.fieldLocs(t), []string{tc.loc}) {
			t.Errorf("GET /api/v1/tasks%s: %d %s, want 422 naming %s", tc.query, code, r.Body, tc.loc)
		}
	}
}

func taskIDs(items []StatusResponse) []string {
	var out []string
	for _, s := range items {
		out = append(out, s.TaskID)
	}
	return out
}

// A task whose resource is gone is answered from the DynamoDB task table.
func TestTaskTableFallback(t *testing.T) {
	d := harness.StartDynalite(t)
	ctx := context.Background()
	if err := tasktable.EnsureTable(ctx, d.Client(), "tasks"); err != nil {
		t.Fatal(err)
	}
	table := tasktable.NewFromAPI(d.Client(), "tasks")
	e := startShim(t, testCluster(t), func(_ *Config, deps *Deps) { deps.Tasks = table })

	created := time.Date(2020, 3, 4, 5, 6, 7, 123456000, time.UTC)
	gone := tasktable.Task{
		TaskID: uuid.NewString(), Status: "partially_completed", TaskType: tasktable.TaskTypeS3CSV,
		Parameters:   tasktable.Parameters{DataSource: "s3_csv", S3Key: "exports/old.csv", QuestionID: 239, Namespace: "v2", ChunkSize: 1000, BatchSize: 100},
		TotalRecords: 3000, ProcessedRecords: 2990, FailedRecords: 10, ChunksTotal: 3, ChunksCompleted: 3,
		ProgressPercentage: 99.67, VectorsUpserted: 2990, ErrorMessage: "",
		CreatedAt: created, StartedAt: created.Add(time.Second), CompletedAt: created.Add(time.Hour),
		K8s:     tasktable.K8sRef{Namespace: e.NS, Name: "deleted-one", UID: "uid-1"},
		Version: 7,
	}
	running := tasktable.Task{
		TaskID: uuid.NewString(), Status: "processing_chunks", TaskType: tasktable.TaskTypeS3CSV,
		Parameters:  tasktable.Parameters{DataSource: "s3_csv", S3Key: "exports/run.csv", QuestionID: 1, Namespace: "v2"},
		ChunksTotal: 4, ChunksProcessing: 2, CreatedAt: created.Add(time.Minute), Version: 3,
		K8s: tasktable.K8sRef{UID: "uid-2"}, // every write names its owner
	}
	if err := table.Put(ctx, gone, nil); err != nil {
		t.Fatal(err)
	}
	if err := table.Put(ctx, running, map[int]tasktable.ChunkEntry{
		0: {Status: "completed", StartRow: 0, EndRow: 999},
		2: {Status: "processing", StartRow: 2000, EndRow: 2999},
		3: {Status: "processing", StartRow: 3000, EndRow: 3999},
	}); err != nil {
		t.Fatal(err)
	}

	code, st := getStatus(t, e, gone.TaskID)
	if code != http.StatusOK {
		t.Fatalf("GET status of a task only in the table: %d", code)
	}
	wantResult := &Result{TotalRecords: 3000, ProcessedRecords: 2990, FailedRecords: 10, VectorsUpserted: 2990, ChunksTotal: 3, ChunksCompleted: 3}
	if st.Status != "partially_completed" || st.Progress.Percentage != 99.67 || !equalJSON(st.Result, wantResult) ||
		st.StartedAt == nil || *st.StartedAt != "2020-03-04T05:06:08.123456Z" || st.Metadata.CreatedAt != "2020-03-04T05:06:07.123456Z" ||
		st.Metadata.Parameters.S3Key != "exports/old.csv" || st.Metadata.Kubernetes == nil || st.Metadata.Kubernetes.Name != "deleted-one" {
		t.Errorf("status from the table = %s", jsonOf(st))
	}
	_, st = getStatus(t, e, running.TaskID)
	if st.Status != "processing_chunks" || st.Progress.CurrentChunk == nil || *st.Progress.CurrentChunk != 2 || st.Result != nil {
		t.Errorf("running task from the table = %s", jsonOf(st))
	}

	for _, id := range []string{gone.TaskID, running.TaskID} {
		if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+id, testKey, nil); r.Code != http.StatusConflict {
			t.Errorf("DELETE of a task whose resource is gone: %d %s, want 409", r.Code, r.Body)
		}
	}
	if code, _ := getStatus(t, e, uuid.NewString()); code != http.StatusNotFound {
		t.Errorf("unknown task: %d, want 404", code)
	}

	// Listed with the cluster's tasks; a task in both places is listed once, from the cluster.
	pr := post(t, e, `{"s3_key":"exports/new.csv","question_id":2}`)
	if err := table.Put(ctx, tasktable.Task{TaskID: pr.TaskID, Status: "pending", TaskType: tasktable.TaskTypeS3CSV,
		CreatedAt: time.Now(), Version: 1, K8s: tasktable.K8sRef{UID: "uid-3"}}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "merged list", func() error {
		_, lr, _ := listTasks(t, e, "?limit=1000")
		var got []string
		for _, s := range lr.Tasks {
			if s.TaskID == pr.TaskID || s.TaskID == gone.TaskID || s.TaskID == running.TaskID {
				got = append(got, s.TaskID)
			}
		}
		if want := []string{pr.TaskID, running.TaskID, gone.TaskID}; !slices.Equal(got, want) {
			return fmt.Errorf("listed %v, want %v", got, want)
		}
		return nil
	})
	_, lr, _ := listTasks(t, e, "?status_filter=partially_completed&limit=1000")
	if !slices.Contains(taskIDs(lr.Tasks), gone.TaskID) || slices.Contains(taskIDs(lr.Tasks), running.TaskID) {
		t.Errorf("filtered list = %v", taskIDs(lr.Tasks))
	}

	// The resource's own state wins over the table's while it exists.
	obj := resourceOf(t, e, pr.TaskID)
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) { s.Phase = v1alpha1.PhasePlanning })
	statusUntil(t, e, pr.TaskID, wordIs("processing"))
	if err := e.Direct.Delete(ctx, obj); err != nil {
		t.Fatal(err)
	}
	statusUntil(t, e, pr.TaskID, wordIs("pending"))
	var left v1alpha1.CsvIngestionList
	if err := e.Direct.List(ctx, &left, client.InNamespace(e.NS)); err != nil || len(left.Items) != 0 {
		t.Errorf("resources left: %d (%v)", len(left.Items), err)
	}
}

func equalJSON(a, b any) bool { return jsonOf(a) == jsonOf(b) }
