package shim

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func TestProcessValidationNamesEveryBadField(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) { c.MaxBodyBytes = 4096 })
	s3 := func(extra string) string {
		return `{"data_source":"s3_csv","s3_key":"exports/a.csv","question_id":239` + extra + `}`
	}
	mb := func(extra string) string { return `{"data_source":"metabase","question_id":239` + extra + `}` }
	long := strings.Repeat("k", 1025)
	cases := []struct {
		name string
		body string
		want []string // locs that must be named
	}{
		{"unknown data source", `{"data_source":"ftp","s3_key":"a.csv","question_id":1}`, []string{"body.data_source"}},
		{"data source not a string", `{"data_source":1,"s3_key":"a.csv","question_id":1}`, []string{"body.data_source"}},
		{"s3 without key", `{"data_source":"s3_csv","question_id":1}`, []string{"body.s3_key"}},
		{"default source without key", `{"question_id":1}`, []string{"body.s3_key"}},
		{"null key", `{"s3_key":null,"question_id":1}`, []string{"body.s3_key"}},
		{"empty key", `{"s3_key":"","question_id":1}`, []string{"body.s3_key"}},
		{"key too long", `{"s3_key":"` + long + `","question_id":1}`, []string{"body.s3_key"}},
		{"key with a control character", `{"s3_key":"a\u0000b","question_id":1}`, []string{"body.s3_key"}},
		{"question not a number", `{"s3_key":"a.csv","question_id":"abc"}`, []string{"body.question_id"}},
		{"question zero", `{"s3_key":"a.csv","question_id":0}`, []string{"body.question_id"}},
		{"question negative", `{"s3_key":"a.csv","question_id":-3}`, []string{"body.question_id"}},
		{"question fraction", `{"s3_key":"a.csv","question_id":1.5}`, []string{"body.question_id"}},
		{"question bool", `{"s3_key":"a.csv","question_id":true}`, []string{"body.question_id"}},
		{"metabase month 13", mb(`,"start_date":"2025-13-01"`), []string{"body.start_date"}},
		{"metabase US date", mb(`,"start_date":"01/10/2025"`), []string{"body.start_date"}},
		{"metabase short date", mb(`,"start_date":"2025-1-10"`), []string{"body.start_date"}},
		{"metabase datetime", mb(`,"start_date":"2025-01-10T00:00:00"`), []string{"body.start_date"}},
		{"metabase bad end", mb(`,"start_date":"2025-02-01","end_date":"2025-02-30"`), []string{"body.end_date"}},
		{"metabase end before start", mb(`,"start_date":"2025-02-10","end_date":"2025-02-01"`), []string{"body.end_date"}},
		{"s3 bad date", s3(`,"start_date":"yesterday"`), []string{"body.start_date"}},
		{"batch too small", s3(`,"batch_size":99`), []string{"body.batch_size"}},
		{"batch too big", s3(`,"batch_size":10001`), []string{"body.batch_size"}},
		{"batch not a number", s3(`,"batch_size":"many"`), []string{"body.batch_size"}},
		{"chunk too small", s3(`,"chunk_size":99`), []string{"body.chunk_size"}},
		{"chunk too big", s3(`,"chunk_size":100001`), []string{"body.chunk_size"}},
		{"chunk array", s3(`,"chunk_size":[1000]`), []string{"body.chunk_size"}},
		{"namespace too long", s3(`,"namespace":"` + strings.Repeat("n", 513) + `"`), []string{"body.namespace"}},
		{"namespace with newline", s3(`,"namespace":"v2\n"`), []string{"body.namespace"}},
		{"namespace number", s3(`,"namespace":2`), []string{"body.namespace"}},
		{"priority word", s3(`,"priority":"urgent"`), []string{"body.priority"}},
		{"priority too high", s3(`,"priority":10`), []string{"body.priority"}},
		{"priority negative", s3(`,"priority":-1`), []string{"body.priority"}},
		{"all at once", `{"data_source":"s3_csv","question_id":"x","batch_size":1,"chunk_size":1,"namespace":7,"priority":"asap","start_date":"x"}`,
			[]string{"body.s3_key", "body.question_id", "body.batch_size", "body.chunk_size", "body.namespace", "body.priority", "body.start_date"}},
		{"not JSON", `data_source=s3_csv`, []string{"body"}},
		{"array", `[]`, []string{"body"}},
		{"null", `null`, []string{"body"}},
		{"empty", ``, []string{"body"}},
		{"two objects", `{"s3_key":"a.csv","question_id":1} {}`, []string{"body"}},
		{"trailing bracket", `{"s3_key":"a.csv","question_id":1} ]`, []string{"body"}},
		{"truncated", `{"s3_key":"a.csv",`, []string{"body"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey, tc.body)
			if r.Code != http.StatusUnprocessableEntity {
				t.Fatalf("%d %s, want 422", r.Code, r.Body)
			}
			locs := r.fieldLocs(t)
			for _, w := range tc.want {
				if !slices.Contains(locs, w) {
					t.Errorf("422 names %v, want %s among them", locs, w)
				}
			}
			if len(locs) != len(tc.want) {
				t.Errorf("422 names %v, want exactly %v", locs, tc.want)
			}
		})
	}

	t.Run("body too large", func(t *testing.T) {
		body := `{"s3_key":"a.csv","question_id":1,"pad":"` + strings.Repeat("x", 5000) + `"}`
		r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey, body)
		if r.Code != http.StatusRequestEntityTooLarge || r.detail(t) == "" {
			t.Fatalf("%d %s, want 413 with a detail", r.Code, r.Body)
		}
	})

	var list v1alpha1.CsvIngestionList
	if err := e.Direct.List(context.Background(), &list, client.InNamespace(e.NS)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 0 {
		t.Errorf("invalid requests created %d CsvIngestions", len(list.Items))
	}
}

func TestProcessMetabaseNeedsConfiguredURL(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) { c.Defaults.MetabaseURL = "" })
	r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey,
		`{"data_source":"metabase","question_id":239,"start_date":"2025-01-10"}`)
	if r.Code != http.StatusUnprocessableEntity || !slices.Equal(r.fieldLocs(t), []string{"body.data_source"}) {
		t.Fatalf("%d %s, want 422 naming data_source", r.Code, r.Body)
	}
}

func TestParseProcessRequestDefaultsAndLaxNumbers(t *testing.T) {
	d := withDefaults(Config{Defaults: testDefaults("ns")}).Defaults
	req, errs := ParseProcessRequest([]byte(`{"s3_key":"k.csv","question_id":"239","batch_size":5000.0,"chunk_size":" 2500 ","extra":{"ignored":true}}`), d)
	if len(errs) > 0 {
		t.Fatalf("errors: %+v", errs)
	}
	want := ProcessRequest{DataSource: "s3_csv", S3Key: "k.csv", QuestionID: 239, BatchSize: 5000, ChunkSize: 2500, Namespace: "v2", Priority: "normal"}
	if req != want {
		t.Errorf("got %+v, want %+v", req, want)
	}

	req, errs = ParseProcessRequest([]byte(`{"data_source":"metabase","question_id":7,"start_date":"2024-12-31","namespace":"","priority":3}`), d)
	if len(errs) > 0 {
		t.Fatalf("errors: %+v", errs)
	}
	want = ProcessRequest{DataSource: "metabase", QuestionID: 7, StartDate: "2024-12-31", EndDate: "2025-01-02",
		BatchSize: 100, ChunkSize: 1000, Namespace: "", Priority: "3"}
	if req != want {
		t.Errorf("got %+v, want %+v", req, want)
	}
}
