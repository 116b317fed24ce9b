package chunkrun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const metabaseKey = "mb-test-key"

// metabase is an httptest Metabase that answers the CSV export of one question and records what
// was wrong with any request it got.
type metabase struct {
	*httptest.Server
	mu       sync.Mutex
	problems []string
	exports  int
}

func startMetabase(t *testing.T, question int, csvBody []byte) *metabase {
	mb := &metabase{}
	mb.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mb.mu.Lock()
		defer mb.mu.Unlock()
		fail := func(format string, args ...any) {
			mb.problems = append(mb.problems, fmt.Sprintf(format, args...))
			http.Error(w, "bad request", http.StatusBadRequest)
		}
		if r.Method != http.MethodPost {
			fail("method %s, want POST", r.Method)
			return
		}
		if want := fmt.Sprintf("/api/card/%d/query/csv", question); r.URL.Path != want {
			fail("path %s, want %s", r.URL.Path, want)
			return
		}
		if got := r.Header.Get("X-Api-Key"); got != metabaseKey {
			fail("x-api-key %q", got)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			fail("content type %q", ct)
			return
		}
		if err := r.ParseForm(); err != nil {
			fail("form: %v", err)
			return
		}
		if got := r.PostForm.Get("format_rows"); got != "false" {
			fail("format_rows %q, want false (raw values)", got)
			return
		}
		var params []map[string]any
		if err := json.Unmarshal([]byte(r.PostForm.Get("parameters")), &params); err != nil {
			fail("parameters %q: %v", r.PostForm.Get("parameters"), err)
			return
		}
		want := []map[string]any{
			{"type": "text", "target": []any{"variable", []any{"template-tag", "End_Date"}}, "value": "2025-01-12"},
			{"type": "text", "target": []any{"variable", []any{"template-tag", "Start_Date"}}, "value": "2025-01-10"},
		}
		if !reflect.DeepEqual(params, want) {
			fail("parameters %v, want %v", params, want)
			return
		}
		mb.exports++
		w.Header().Set("Content-Type", "text/csv")
		_, _ = w.Write(csvBody)
	}))
	t.Cleanup(mb.Close)
	return mb
}

func TestMetabaseExportIsStagedAndIngested(t *testing.T) {
	e := newEnv(t, fakeopenai.Options{})
	rows := genLegacy(700, 23)
	mb := startMetabase(t, 239, csvBytes(t, legacyCSV(rows)))

	ing := e.ingestion("")
	ing.Spec.Source = v1alpha1.SourceSpec{
		Metabase: &v1alpha1.MetabaseSource{
			URL: mb.URL, QuestionID: 239,
			Parameters:      map[string]string{"Start_Date": "2025-01-10", "End_Date": "2025-01-12"},
			APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "metabase", Key: "api-key"},
			StageTo: v1alpha1.S3Stage{Bucket: bucket, KeyPrefix: e.prefix + "staged/",
				S3Connection: v1alpha1.S3Connection{Region: e.minio.Region, Endpoint: e.minio.Endpoint}},
		},
		CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto"},
	}
	ing.Spec.Mapping.IDPrefix = "239."
	ing.Spec.Chunking.RowsPerChunk = 300

	plan, err := planner.Plan(context.Background(), ing, planner.Deps{S3: e.s3, MetabaseAPIKey: metabaseKey})
	if len(mb.problems) > 0 {
		t.Fatalf("Metabase got a bad request: %v", mb.problems)
	}
	if err != nil {
		t.Fatal(err)
	}
	stagedKey := e.prefix + "staged/" + ing.ObjectID() + ".csv"
	if plan.Key != stagedKey || plan.TotalRows != 700 || mb.exports != 1 {
		t.Fatalf("plan of %s with %d rows after %d exports; want %s, 700 rows, 1 export", plan.Key, plan.TotalRows, mb.exports, stagedKey)
	}
	staged, err := e.get(stagedKey)
	if err != nil || string(staged) != string(csvBytes(t, legacyCSV(rows))) {
		t.Fatalf("staged object differs from the export (%v)", err)
	}
	if loc, err := planner.Locate(ing); err != nil || loc.Key != stagedKey {
		t.Fatalf("chunks would read %q (%v), the plan staged %q", loc.Key, err, stagedKey)
	}

	if _, err := e.runChunks(ing, plan, 2); err != nil {
		t.Fatal(err)
	}
	checkIngested(t, e, rows, map[string]any{
		"source": "metabase", "s3_key": stagedKey, "task_id": ing.TaskID, "question_id": 239.0,
	}, 300)
}
