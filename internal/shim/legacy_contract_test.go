package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// clientGet is what an old client does: a plain request, the body read as generic JSON. Nothing
// of this package's types is used to read the answers, so the test sees what the wire carries.
func clientCall(t *testing.T, method, url, key, body string) (int, http.Header, any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, url, raw)
		}
	}
	return resp.StatusCode, resp.Header, v
}

func detailOf(v any) any {
	m, _ := v.(map[string]any)
	return m["detail"]
}

// TestLegacyAPIContract calls every route of the old API as its clients do and checks what they
// read: status codes, the old 400 and 401 messages, the bare array of GET /api/v1/tasks, the old
// health keys, GET /health and GET /.
func TestLegacyAPIContract(t *testing.T) {
	e := startShim(t, testCluster(t))
	base := e.URL

	t.Run("GET / is app info", func(t *testing.T) {
		code, _, v := clientCall(t, http.MethodGet, base+"/", "", "")
		m, _ := v.(map[string]any)
		if code != http.StatusOK || m["message"] != AppTitle || m["version"] == "" || m["docs"] == nil {
			t.Errorf("GET /: %d %v", code, v)
		}
		// Only the root: an unknown path is still 404.
		if code, _, _ := clientCall(t, http.MethodGet, base+"/nothing-here", "", ""); code != http.StatusNotFound {
			t.Errorf("GET /nothing-here: %d, want 404", code)
		}
	})

	t.Run("GET /health is static for load balancers", func(t *testing.T) {
		code, _, v := clientCall(t, http.MethodGet, base+"/health", "", "")
		if m, _ := v.(map[string]any); code != http.StatusOK || m["status"] != "healthy" {
			t.Errorf("GET /health: %d %v", code, v)
		}
	})

	t.Run("GET /api/v1/health has the old keys", func(t *testing.T) {
		code, _, v := clientCall(t, http.MethodGet, base+"/api/v1/health", "", "")
		m, _ := v.(map[string]any)
		if code != http.StatusOK || m["status"] != "healthy" {
			t.Fatalf("health: %d %v", code, v)
		}
		for _, k := range []string{"status", "version", "environment", "workers", "services", "timestamp"} {
			if _, ok := m[k]; !ok {
				t.Errorf("health has no %q: %v", k, m)
			}
		}
		if m["environment"] != "production" {
			t.Errorf("environment = %v", m["environment"])
		}
		w, _ := m["workers"].(map[string]any)
		for _, k := range []string{"active", "available", "queued_tasks"} {
			if _, ok := w[k].(float64); !ok {
				t.Errorf("workers.%s is not a number: %v", k, w)
			}
		}
		s, _ := m["services"].(map[string]any)
		// No task table in this server: dynamodb is disabled; the rest is healthy.
		if s["redis"] != "healthy" || s["api"] != "healthy" || s["dynamodb"] != "disabled" {
			t.Errorf("services = %v", s)
		}
	})

	t.Run("401 without a key or with a wrong one, on every private route", func(t *testing.T) {
		routes := [][2]string{
			{http.MethodPost, "/api/v1/process"}, {http.MethodGet, "/api/v1/status/x"},
			{http.MethodGet, "/api/v1/tasks"}, {http.MethodDelete, "/api/v1/task/x"},
		}
		for _, rt := range routes {
			body := ""
			if rt[0] == http.MethodPost {
				body = `{"s3_key":"a.csv","question_id":1}`
			}
			for key, want := range map[string]string{"": "API key is missing", "wrong": "Invalid API key"} {
				code, _, v := clientCall(t, rt[0], base+rt[1], key, body)
				if code != http.StatusUnauthorized || detailOf(v) != want {
					t.Errorf("%s %s with key %q: %d %v, want 401 %q", rt[0], rt[1], key, code, v, want)
				}
			}
		}
	})

	t.Run("POST /api/v1/process: the old route's 400s and the model's 422", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			code       int
			detail     string
		}{
			{"s3_csv without question_id", `{"data_source":"s3_csv","s3_key":"exports/a.csv"}`, 400,
				"question_id is required for CSV processing to construct proper vector IDs (format: question_id.row_id)"},
			{"default source without question_id", `{"s3_key":"exports/a.csv"}`, 400,
				"question_id is required for CSV processing to construct proper vector IDs (format: question_id.row_id)"},
			{"metabase without start_date", `{"data_source":"metabase","question_id":239}`, 400,
				"start_date is required for metabase data source"},
			// The model is validated before the route's checks: another bad field is a 422.
			{"no question_id and a bad batch_size", `{"s3_key":"exports/a.csv","batch_size":5}`, 422, ""},
			{"s3_csv without s3_key", `{"data_source":"s3_csv","question_id":239}`, 422, ""},
			{"metabase without question_id", `{"data_source":"metabase","start_date":"2025-01-10"}`, 422, ""},
		} {
			code, _, v := clientCall(t, http.MethodPost, base+"/api/v1/process", testKey, tc.body)
			if code != tc.code {
				t.Errorf("%s: %d %v, want %d", tc.name, code, v, tc.code)
				continue
			}
			if tc.code == 400 && detailOf(v) != tc.detail {
				t.Errorf("%s: detail %v, want %q", tc.name, detailOf(v), tc.detail)
			}
			if tc.code == 422 {
				if _, ok := detailOf(v).([]any); !ok {
					t.Errorf("%s: 422 detail is not a list: %v", tc.name, v)
				}
			}
		}
	})

	var taskID string
	t.Run("POST /api/v1/process 202", func(t *testing.T) {
		code, _, v := clientCall(t, http.MethodPost, base+"/api/v1/process", testKey, `{"data_source":"s3_csv","s3_key":"exports/239-200-300.csv","question_id":239}`)
		m, _ := v.(map[string]any)
		if code != http.StatusAccepted || m["status"] != "pending" || m["task_id"] == "" || m["message"] == nil || m["created_at"] == nil {
			t.Fatalf("202: %d %v", code, v)
		}
		taskID, _ = m["task_id"].(string)
		// The ingestion writes the old vector space and the old metadata.
		obj := resourceOf(t, e, taskID)
		if obj.Spec.Embedding.Model != "text-embedding-ada-002" || obj.Spec.Mapping.Metadata.Format != "legacy" ||
			obj.Spec.Mapping.IDPrefix != "239." || obj.Spec.Target.Pinecone.Namespace != "v2" {
			t.Errorf("created spec: model %q, metadata format %q, id prefix %q, namespace %q", obj.Spec.Embedding.Model,
				obj.Spec.Mapping.Metadata.Format, obj.Spec.Mapping.IDPrefix, obj.Spec.Target.Pinecone.Namespace)
		}
	})
	if taskID == "" {
		t.FailNow()
	}

	t.Run("GET /api/v1/status/{id} 200 and 404", func(t *testing.T) {
		eventually(t, "task visible", func() error {
			code, _, v := clientCall(t, http.MethodGet, base+"/api/v1/status/"+taskID, testKey, "")
			m, _ := v.(map[string]any)
			if code != http.StatusOK || m["task_id"] != taskID {
				return fmt.Errorf("status: %d %v", code, v)
			}
			for _, k := range []string{"status", "progress", "started_at", "completed_at", "error", "result", "metadata"} {
				if _, ok := m[k]; !ok {
					return fmt.Errorf("status has no %q", k)
				}
			}
			return nil
		})
		code, _, v := clientCall(t, http.MethodGet, base+"/api/v1/status/"+uuid.NewString(), testKey, "")
		if code != http.StatusNotFound || detailOf(v) != "Task not found" {
			t.Errorf("unknown task: %d %v", code, v)
		}
	})

	t.Run("GET /api/v1/tasks is a bare array; pages by query parameters; 422 on a bad limit", func(t *testing.T) {
		eventually(t, "task listed", func() error {
			code, h, v := clientCall(t, http.MethodGet, base+"/api/v1/tasks?limit=1000", testKey, "")
			arr, ok := v.([]any)
			if code != http.StatusOK || !ok {
				return fmt.Errorf("tasks: %d, body %T, want a JSON array", code, v)
			}
			var ids []string
			for _, it := range arr {
				m, _ := it.(map[string]any)
				id, _ := m["task_id"].(string)
				ids = append(ids, id)
			}
			if !slices.Contains(ids, taskID) {
				return fmt.Errorf("task %s not in %v", taskID, ids)
			}
			if h.Get("X-Total-Count") == "" {
				return fmt.Errorf("no X-Total-Count")
			}
			return nil
		})
		code, _, v := clientCall(t, http.MethodGet, base+"/api/v1/tasks?limit=1&offset=0&status_filter=pending&task_type=s3_csv_processing", testKey, "")
		if arr, ok := v.([]any); code != http.StatusOK || !ok || len(arr) > 1 {
			t.Errorf("one page of pending s3_csv tasks: %d %v", code, v)
		}
		code, _, v = clientCall(t, http.MethodGet, base+"/api/v1/tasks?task_type=metabase_processing&limit=1000", testKey, "")
		if arr, _ := v.([]any); code != http.StatusOK {
			t.Errorf("task_type filter: %d %v", code, v)
		} else {
			for _, it := range arr {
				if m, _ := it.(map[string]any); m["task_id"] == taskID {
					t.Errorf("an s3_csv task is listed under task_type=metabase_processing")
				}
			}
		}
		if code, _, v := clientCall(t, http.MethodGet, base+"/api/v1/tasks?limit=0", testKey, ""); code != http.StatusUnprocessableEntity {
			t.Errorf("limit=0: %d %v, want 422", code, v)
		}
	})

	t.Run("DELETE /api/v1/task/{id} 204, 409, 404", func(t *testing.T) {
		code, _, v := clientCall(t, http.MethodDelete, base+"/api/v1/task/"+taskID, testKey, "")
		if code != http.StatusNoContent || v != nil {
			t.Errorf("DELETE: %d %v, want 204 and no body", code, v)
		}
		// Its cancel already requested: the old service had marked it CANCELLED, so 409.
		if code, _, v := clientCall(t, http.MethodDelete, base+"/api/v1/task/"+taskID, testKey, ""); code != http.StatusConflict || detailOf(v) == nil {
			t.Errorf("second DELETE: %d %v, want 409", code, v)
		}
		obj := resourceOf(t, e, taskID)
		setStatus(t, e.Direct, obj, func(s *v1alpha1.CsvIngestionStatus) { s.Phase = v1alpha1.PhaseCancelled })
		eventually(t, "cancelled", func() error {
			code, _, v := clientCall(t, http.MethodDelete, base+"/api/v1/task/"+taskID, testKey, "")
			if code != http.StatusConflict || detailOf(v) == nil {
				return fmt.Errorf("DELETE of a cancelled task: %d %v, want 409", code, v)
			}
			return nil
		})
		code, _, v = clientCall(t, http.MethodDelete, base+"/api/v1/task/"+uuid.NewString(), testKey, "")
		if code != http.StatusNotFound || detailOf(v) != "Task not found" {
			t.Errorf("DELETE of an unknown task: %d %v", code, v)
		}
	})
}
