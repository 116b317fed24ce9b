package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// post creates a task and returns the 202 body.
func post(t testing.TB, e *shimEnv, body string) ProcessResponse {
	t.Helper()
	r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey, body)
	if r.Code != http.StatusAccepted {
		t.Fatalf("POST /api/v1/process: %d %s, want 202", r.Code, r.Body)
	}
	var pr ProcessResponse
	r.json(t, &pr)
	if r.Header.Get("Location") != "/api/v1/status/"+pr.TaskID {
		t.Errorf("Location = %q", r.Header.Get("Location"))
	}
	return pr
}

// resourceOf finds the CsvIngestion of a task by its label, from the API server.
func resourceOf(t testing.TB, e *shimEnv, taskID string) *v1alpha1.CsvIngestion {
	t.Helper()
	var list v1alpha1.CsvIngestionList
	if err := e.Direct.List(context.Background(), &list, client.InNamespace(e.NS), client.MatchingLabels{worker.LabelTaskID: taskID}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d CsvIngestions labelled with task %s, want 1", len(list.Items), taskID)
	}
	return &list.Items[0]
}

func getStatus(t testing.TB, e *shimEnv, taskID string) (int, StatusResponse) {
	t.Helper()
	r := do(t, http.MethodGet, e.URL+"/api/v1/status/"+taskID, testKey, nil)
	var st StatusResponse
	if r.Code == http.StatusOK {
		r.json(t, &st)
	}
	return r.Code, st
}

// statusUntil polls the status until ok accepts it (the shim reads through its cache).
func statusUntil(t testing.TB, e *shimEnv, taskID string, ok func(StatusResponse) error) StatusResponse {
	t.Helper()
	var st StatusResponse
	eventually(t, "status of "+taskID, func() error {
		code, s := getStatus(t, e, taskID)
		if code != http.StatusOK {
			return fmt.Errorf("GET status: %d", code)
		}
		st = s
		return ok(s)
	})
	return st
}

func wordIs(w string) func(StatusResponse) error {
	return func(s StatusResponse) error {
		if s.Status != w {
			return fmt.Errorf("status %q, want %q", s.Status, w)
		}
		return nil
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestProcessCreatesTheExpectedIngestion(t *testing.T) {
	e := startShim(t, testCluster(t))
	pr := post(t, e, `{"data_source":"s3_csv","s3_key":"exports/239-200-300.csv","question_id":239,
		"batch_size":5000,"chunk_size":2000,"namespace":"v3","priority":"high"}`)
	if _, err := uuid.Parse(pr.TaskID); err != nil {
		t.Errorf("task_id %q is not a UUID: %v", pr.TaskID, err)
	}
	if pr.Status != "pending" || pr.Message == "" {
		t.Errorf("202 body %+v", pr)
	}
	created, err := time.Parse(tasktable.TimeFormat, pr.CreatedAt)
	if err != nil || time.Since(created) > time.Hour || time.Since(created) < -time.Hour {
		t.Errorf("created_at %q: %v", pr.CreatedAt, err)
	}

	obj := resourceOf(t, e, pr.TaskID)
	if obj.Name != "task-"+pr.TaskID || obj.Spec.TaskID != pr.TaskID {
		t.Errorf("name %q, spec.taskID %q", obj.Name, obj.Spec.TaskID)
	}
	sp := obj.Spec
	checks := []struct {
		what      string
		got, want any
	}{
		{"source.s3", sp.Source.S3, &v1alpha1.S3Source{Bucket: "csv-storage", Key: "exports/239-200-300.csv", StageKeyPrefix: "vectordb-staging/", S3Connection: v1alpha1.S3Connection{
			Region: "eu-west-1", Endpoint: "http://127.0.0.1:9000",
			CredentialsSecretRef: &v1alpha1.S3CredentialsSecretRef{Name: "s3-creds", AccessKeyIDKey: "AWS_ACCESS_KEY_ID", SecretAccessKeyKey: "AWS_SECRET_ACCESS_KEY"},
		}}},
		{"source.metabase", sp.Source.Metabase == nil, true},
		{"mapping.idColumn", sp.Mapping.IDColumn, "id"},
		{"mapping.idPrefix", sp.Mapping.IDPrefix, "239."},
		{"mapping.textColumn", sp.Mapping.TextColumn, "formatted_text"},
		{"mapping.textTemplate", sp.Mapping.TextTemplate, ""},
		{"mapping.sanitize", sp.Mapping.Sanitize, "legacy"},
		{"mapping.namespaceColumn", sp.Mapping.NamespaceColumn, ""},
		{"mapping.metadata.include", sp.Mapping.Metadata.Include, "all"},
		{"mapping.metadata.format", sp.Mapping.Metadata.Format, "legacy"},
		{"embedding.model", sp.Embedding.Model, "text-embedding-ada-002"},
		{"embedding.apiKeySecretRef", sp.Embedding.APIKeySecretRef, v1alpha1.SecretKeyRef{Name: "openai", Key: "token"}},
		{"embedding.requestsPerMinute", sp.Embedding.RequestsPerMinute, int32(300)},
		{"target.pinecone.index", sp.Target.Pinecone.Index, "clickbid-prod"},
		{"target.pinecone.namespace", sp.Target.Pinecone.Namespace, "v3"},
		{"target.pinecone.apiKeySecretRef", sp.Target.Pinecone.APIKeySecretRef, v1alpha1.SecretKeyRef{Name: "pinecone", Key: "api-key"}},
		{"target.pinecone.batchSize (5000 capped)", sp.Target.Pinecone.BatchSize, int32(1000)},
		{"chunking.rowsPerChunk", sp.Chunking.RowsPerChunk, int32(2000)},
		{"chunking.parallelism", sp.Chunking.Parallelism, int32(4)},
		{"chunking.chunkTimeout", sp.Chunking.ChunkTimeout.Duration, 30 * time.Minute},
		{"tracking", sp.Tracking, &v1alpha1.TrackingSpec{DynamoDB: &v1alpha1.DynamoDBTracking{
			Table: "vectordb-tasks-prod", Region: "us-east-1", Endpoint: "http://127.0.0.1:8001"}}},
		{"deadLetter", sp.DeadLetter, &v1alpha1.DeadLetterSpec{Bucket: "csv-storage", KeyPrefix: "failed/"}},
		{"cancel", sp.Cancel, false},
		{"priority label", obj.Labels[LabelPriority], "high"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %s, want %s", c.what, jsonOf(c.got), jsonOf(c.want))
		}
	}
	var params map[string]any
	if err := json.Unmarshal([]byte(obj.Annotations[AnnotationParameters]), &params); err != nil {
		t.Fatalf("parameters annotation: %v", err)
	}
	wantParams := map[string]any{"data_source": "s3_csv", "s3_key": "exports/239-200-300.csv", "question_id": 239.0,
		"batch_size": 5000.0, "chunk_size": 2000.0, "namespace": "v3", "priority": "high"}
	if !reflect.DeepEqual(params, wantParams) {
		t.Errorf("parameters annotation = %v, want %v", params, wantParams)
	}
}

func TestProcessMetabase(t *testing.T) {
	e := startShim(t, testCluster(t))
	pr := post(t, e, `{"data_source":"metabase","question_id":239,"start_date":"2025-01-10"}`)
	obj := resourceOf(t, e, pr.TaskID)
	want := &v1alpha1.MetabaseSource{
		URL: "https://metabase.example.com", QuestionID: 239,
		Parameters:      map[string]string{"Start_Date": "2025-01-10", "End_Date": "2025-01-12"},
		APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "metabase", Key: "api-key"},
		StageTo: v1alpha1.S3Stage{Bucket: "csv-storage", KeyPrefix: "staged/", S3Connection: v1alpha1.S3Connection{
			Region: "eu-west-1", Endpoint: "http://127.0.0.1:9000",
			CredentialsSecretRef: &v1alpha1.S3CredentialsSecretRef{Name: "s3-creds", AccessKeyIDKey: "AWS_ACCESS_KEY_ID", SecretAccessKeyKey: "AWS_SECRET_ACCESS_KEY"},
		}},
		ExportRowLimit: v1alpha1.DefaultMetabaseExportRowLimit, // the CRD's default
	}
	if !reflect.DeepEqual(obj.Spec.Source.Metabase, want) || obj.Spec.Source.S3 != nil {
		t.Errorf("source = %s, want metabase %s", jsonOf(obj.Spec.Source), jsonOf(want))
	}
	if obj.Spec.Mapping.IDPrefix != "239." || obj.Spec.Target.Pinecone.Namespace != "v2" || obj.Spec.Target.Pinecone.BatchSize != 100 ||
		obj.Spec.Chunking.RowsPerChunk != 1000 {
		t.Errorf("defaults not applied: %s", jsonOf(obj.Spec))
	}
	st := statusUntil(t, e, pr.TaskID, wordIs("pending"))
	p := st.Metadata.Parameters
	if st.Metadata.TaskType != "metabase_processing" || p.StartDate != "2025-01-10" || p.EndDate != "2025-01-12" || p.QuestionID != 239 || p.DataSource != "metabase" {
		t.Errorf("metadata = %s", jsonOf(st.Metadata))
	}
}

func TestStatusThroughEveryPhase(t *testing.T) {
	e := startShim(t, testCluster(t))
	pr := post(t, e, `{"s3_key":"exports/q.csv","question_id":41,"batch_size":500,"chunk_size":2000}`)
	obj := resourceOf(t, e, pr.TaskID)

	st := statusUntil(t, e, pr.TaskID, wordIs("pending"))
	if st.TaskID != pr.TaskID || st.StartedAt != nil || st.CompletedAt != nil || st.Error != nil || st.Result != nil ||
		st.Progress != (Progress{}) {
		t.Errorf("new task status = %s", jsonOf(st))
	}
	md := st.Metadata
	wantParams := parameters{DataSource: "s3_csv", S3Key: "exports/q.csv", QuestionID: 41, Namespace: "v2", ChunkSize: 2000, BatchSize: 500, Priority: "normal"}
	if md.TaskType != "s3_csv_processing" || md.Parameters != wantParams || md.Namespace != "v2" || md.CreatedAt != pr.CreatedAt ||
		md.Kubernetes == nil || *md.Kubernetes != (K8sRef{Namespace: e.NS, Name: obj.Name, UID: string(obj.UID)}) {
		t.Errorf("metadata = %s", jsonOf(md))
	}

	start := metav1.NewTime(time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC))
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhasePlanning
		s.StartTime = &start
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("processing"))
	if st.StartedAt == nil || *st.StartedAt != "2025-01-10T12:00:00.000000Z" || st.Result != nil {
		t.Errorf("planning: %s", jsonOf(st))
	}

	// Rows not counted yet: progress by chunks.
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseProcessingChunks
		s.Chunks = v1alpha1.ChunkCounts{Total: 8, Pending: 5, Active: 1, Succeeded: 2}
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("processing_chunks"))
	if st.Progress.Percentage != 25 || st.Progress.ChunksTotal != 8 || st.Progress.ChunksProcessing != 1 {
		t.Errorf("processing without rows: %s", jsonOf(st.Progress))
	}

	createChunkJob(t, e.Direct, obj, 7, 1)
	createChunkJob(t, e.Direct, obj, 5, 1)
	createChunkJob(t, e.Direct, obj, 3, 0) // created, no pod yet
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Chunks = v1alpha1.ChunkCounts{Total: 10, Pending: 4, Active: 2, Succeeded: 3, Failed: 1}
		s.Records = v1alpha1.RecordCounts{Total: 20000, Processed: 8000, Failed: 3}
	})
	five := int64(5)
	wantProgress := Progress{TotalRecords: 20000, ProcessedRecords: 8000, FailedRecords: 3, ChunksTotal: 10, ChunksCompleted: 3,
		ChunksProcessing: 2, ChunksFailed: 1, CurrentChunk: &five, Percentage: 40}
	st = statusUntil(t, e, pr.TaskID, func(s StatusResponse) error {
		if !reflect.DeepEqual(s.Progress, wantProgress) {
			return fmt.Errorf("progress %s, want %s", jsonOf(s.Progress), jsonOf(wantProgress))
		}
		return nil
	})
	if st.Status != "processing_chunks" || st.Result != nil || st.Error != nil {
		t.Errorf("processing: %s", jsonOf(st))
	}

	end := metav1.NewTime(start.Add(90 * time.Minute))
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhasePartiallyCompleted
		s.Chunks = v1alpha1.ChunkCounts{Total: 10, Succeeded: 10}
		s.Records = v1alpha1.RecordCounts{Total: 20000, Processed: 19990, Failed: 10, Skipped: 1}
		s.Usage = &v1alpha1.Usage{VectorsUpserted: 19989}
		s.CompletionTime = &end
		s.Message = "10 rows failed"
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("partially_completed"))
	wantResult := &Result{TotalRecords: 20000, ProcessedRecords: 19990, FailedRecords: 10, SkippedRecords: 1, VectorsUpserted: 19989,
		ChunksTotal: 10, ChunksCompleted: 10, Message: "10 rows failed"}
	if !reflect.DeepEqual(st.Result, wantResult) || st.Progress.Percentage != 99.95 || st.Progress.CurrentChunk != nil ||
		st.CompletedAt == nil || *st.CompletedAt != "2025-01-10T13:30:00.000000Z" || st.Error != nil {
		t.Errorf("partially completed: %s", jsonOf(st))
	}

	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseCompleted
		s.Records = v1alpha1.RecordCounts{Total: 20000, Processed: 20000}
		s.Usage = &v1alpha1.Usage{VectorsUpserted: 20000}
		s.Message = ""
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("completed"))
	if st.Result == nil || st.Result.VectorsUpserted != 20000 || st.Progress.Percentage != 100 || st.Error != nil {
		t.Errorf("completed: %s", jsonOf(st))
	}
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+pr.TaskID, testKey, nil); r.Code != http.StatusConflict || !strings.Contains(r.detail(t), "completed") {
		t.Errorf("DELETE of a completed task: %d %s, want 409", r.Code, r.Body)
	}

	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseFailed
		s.Message = "summary"
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: v1alpha1.ConditionFailed, Status: metav1.ConditionTrue,
			Reason: "HeaderMismatch", Message: "the CSV header has no column formatted_text", ObservedGeneration: obj.Generation})
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("failed"))
	if st.Error == nil || *st.Error != "the CSV header has no column formatted_text" || st.Result == nil {
		t.Errorf("failed: %s", jsonOf(st))
	}

	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) {
		s.Phase = v1alpha1.PhaseCancelled
		s.Conditions = nil
	})
	st = statusUntil(t, e, pr.TaskID, wordIs("cancelled"))
	if st.Error != nil || st.Result == nil {
		t.Errorf("cancelled: %s", jsonOf(st))
	}
}

func TestCancel(t *testing.T) {
	e := startShim(t, testCluster(t))
	ctx := context.Background()
	pr := post(t, e, `{"s3_key":"exports/c.csv","question_id":5}`)
	del := func(id string) response { return do(t, http.MethodDelete, e.URL+"/api/v1/task/"+id, testKey, nil) }

	r := del(pr.TaskID)
	if r.Code != http.StatusNoContent || len(r.Body) != 0 {
		t.Fatalf("DELETE: %d %s, want 204", r.Code, r.Body)
	}
	obj := resourceOf(t, e, pr.TaskID)
	if !obj.Spec.Cancel {
		t.Fatalf("spec.cancel not set after DELETE")
	}
	// Again while the controller has not finished the cancel: 409, as the old service answered a
	// second DELETE (it marked the task CANCELLED at once).
	eventually(t, "cancel seen by the cache", func() error {
		var c v1alpha1.CsvIngestion
		if err := e.Cached.Get(ctx, client.ObjectKeyFromObject(obj), &c); err != nil || !c.Spec.Cancel {
			return fmt.Errorf("cache has cancel=%t (%v)", c.Spec.Cancel, err)
		}
		return nil
	})
	if r := del(pr.TaskID); r.Code != http.StatusConflict || r.detail(t) != "Task is already being cancelled" {
		t.Errorf("second DELETE: %d %s, want 409", r.Code, r.Body)
	}
	setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) { s.Phase = v1alpha1.PhaseCancelled })
	statusUntil(t, e, pr.TaskID, wordIs("cancelled"))
	if r := del(pr.TaskID); r.Code != http.StatusConflict || !strings.Contains(r.detail(t), "cancelled") {
		t.Errorf("DELETE of a cancelled task: %d %s, want 409", r.Code, r.Body)
	}

	unknown := uuid.NewString()
	if r := del(unknown); r.Code != http.StatusNotFound || r.detail(t) != "Task not found" {
		t.Errorf("DELETE of an unknown task: %d %s, want 404", r.Code, r.Body)
	}
	if code, _ := getStatus(t, e, unknown); code != http.StatusNotFound {
		t.Errorf("GET status of an unknown task: %d, want 404", code)
	}
}

// Two DELETEs of one task at once: exactly one sets spec.cancel (204), the other is 409, even
// when both read the task before either wrote.
func TestConcurrentCancelsOneWins(t *testing.T) {
	e := startShim(t, testCluster(t))
	for round := 0; round < 3; round++ {
		pr := post(t, e, `{"s3_key":"exports/race.csv","question_id":6}`)
		resourceOf(t, e, pr.TaskID)
		eventually(t, "task in the cache", func() error {
			if code, _ := getStatus(t, e, pr.TaskID); code != http.StatusOK {
				return fmt.Errorf("status %d", code)
			}
			return nil
		})
		codes := make(chan int, 2)
		for i := 0; i < 2; i++ {
			go func() {
				codes <- do(t, http.MethodDelete, e.URL+"/api/v1/task/"+pr.TaskID, testKey, nil).Code
			}()
		}
		a, b := <-codes, <-codes
		if min(a, b) != http.StatusNoContent || max(a, b) != http.StatusConflict {
			t.Errorf("round %d: two DELETEs answered %d and %d, want one 204 and one 409", round, a, b)
		}
	}
}

func TestStatusOfResourcesAppliedWithKubectl(t *testing.T) {
	e := startShim(t, testCluster(t))
	ctx := context.Background()

	withID := sampleIngestion(e.NS, "with-task-id", "kubectl-task-1")
	noID := sampleIngestion(e.NS, "no-task-id", "")
	fromStatus := sampleIngestion(e.NS, "status-task-id", "")
	for _, o := range []*v1alpha1.CsvIngestion{withID, noID, fromStatus} {
		if err := e.Direct.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(t, e.Direct, fromStatus, func(s *v1alpha1.CsvIngestionStatus) { s.TaskID = "legacy-id-9" })

	for _, tc := range []struct {
		id, name, wantTaskID string
	}{
		{"kubectl-task-1", withID.Name, "kubectl-task-1"},
		{string(noID.UID), noID.Name, string(noID.UID)},
		{"legacy-id-9", fromStatus.Name, string(fromStatus.UID)},
	} {
		st := statusUntil(t, e, tc.id, wordIs("pending"))
		if st.Metadata.Kubernetes == nil || st.Metadata.Kubernetes.Name != tc.name || st.TaskID != tc.wantTaskID {
			t.Errorf("task %s: %s", tc.id, jsonOf(st))
		}
		want := parameters{DataSource: "s3_csv", S3Key: "exports/" + tc.name + ".csv", QuestionID: 77, Namespace: "kubectl-ns",
			ChunkSize: 1000, BatchSize: 100}
		if st.Metadata.Parameters != want {
			t.Errorf("task %s parameters from the spec = %+v, want %+v", tc.id, st.Metadata.Parameters, want)
		}
	}
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/kubectl-task-1", testKey, nil); r.Code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Code, r.Body)
	}
	var got v1alpha1.CsvIngestion
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(withID), &got); err != nil || !got.Spec.Cancel {
		t.Errorf("kubectl resource not cancelled (%v)", err)
	}
}

// A task created a moment ago, possibly by another replica, is found before this replica's cache
// has it. The cache here never sees the task's namespace, the worst case of lag.
func TestStatusFindsATaskTheCacheHasNotSeen(t *testing.T) {
	other := newNamespace(t, testCluster(t).Client)
	blind := func(withReader bool) envOption {
		return func(c *Config, d *Deps) {
			c.WatchNamespaces = []string{other}
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			cr := cachedClient(ctx, t, testCluster(t), cache.Options{DefaultNamespaces: map[string]cache.Config{other: {}}})
			d.Client, d.CacheSynced = cr.client, cr.synced
			if !withReader {
				d.APIReader = nil
			}
		}
	}
	e := startShim(t, testCluster(t), blind(true))
	pr := post(t, e, `{"s3_key":"exports/lag.csv","question_id":8}`)
	code, st := getStatus(t, e, pr.TaskID)
	if code != http.StatusOK || st.TaskID != pr.TaskID || st.Status != "pending" {
		t.Errorf("GET status right after POST: %d %s", code, jsonOf(st))
	}
	if r := do(t, http.MethodDelete, e.URL+"/api/v1/task/"+pr.TaskID, testKey, nil); r.Code != http.StatusNoContent {
		t.Errorf("DELETE right after POST: %d %s", r.Code, r.Body)
	}

	// Without the API reader the same lookup has only the cache, which proves the reader is what
	// found it above.
	e2 := startShim(t, testCluster(t), blind(false))
	pr2 := post(t, e2, `{"s3_key":"exports/lag.csv","question_id":8}`)
	if code, _ := getStatus(t, e2, pr2.TaskID); code != http.StatusNotFound {
		t.Errorf("without the API reader: %d, want 404", code)
	}
}
