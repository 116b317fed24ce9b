package ratelease

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func newReports(t *testing.T, clk *clock, o ReportsOptions) *Reports {
	t.Helper()
	o.Key, o.Now, o.Log = testKey, clk.Now, logr.Discard()
	s, err := NewReports(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func report(ns, ing, uid string, chunk int, s v1alpha1.BatchStatus) BatchReport {
	return BatchReport{Namespace: ns, Ingestion: ing, UID: uid, Chunk: chunk, Summary: s}
}

// The handler refuses what it must, with the status and a message saying why, and keeps only
// what it accepted.
func TestReportHandler(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newReports(t, clk, ReportsOptions{})
	cred := Credential(testKey, "ns", "a")
	ok := `{"namespace":"ns","ingestion":"a","uid":"u1","chunk":3,"summary":{"batches":2,"inProgress":1,"completed":1,"lines":100,"linesDone":40}}`
	cases := []struct {
		name, method, auth, body string
		want                     int
		msg                      string
	}{
		{"accepted", http.MethodPost, "Bearer " + cred, ok, http.StatusNoContent, ""},
		{"get", http.MethodGet, "Bearer " + cred, "", http.StatusMethodNotAllowed, "POST"},
		{"no credential", http.MethodPost, "", ok, http.StatusUnauthorized, "missing credential"},
		{"not bearer", http.MethodPost, cred, ok, http.StatusUnauthorized, "missing credential"},
		{"another ingestion's credential", http.MethodPost, "Bearer " + Credential(testKey, "ns", "b"), ok, http.StatusForbidden, "not valid for ingestion ns/a"},
		{"another key", http.MethodPost, "Bearer " + Credential([]byte("another-key-0123456789"), "ns", "a"), ok, http.StatusForbidden, "not valid"},
		{"unknown field", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"chunk":3`, `"chunk":3,"extra":1`, 1), http.StatusBadRequest, "unknown field"},
		{"not json", http.MethodPost, "Bearer " + cred, "{", http.StatusBadRequest, "bad batch report"},
		{"no uid", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"uid":"u1"`, `"uid":""`, 1), http.StatusBadRequest, "uid are required"},
		{"negative chunk", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"chunk":3`, `"chunk":-1`, 1), http.StatusBadRequest, "out of range"},
		{"chunk beyond any plan", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"chunk":3`, `"chunk":50000`, 1), http.StatusBadRequest, "at most 50000 chunks"},
		{"negative count", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"linesDone":40`, `"linesDone":-4`, 1), http.StatusBadRequest, "negative"},
		{"more states than batches", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"batches":2`, `"batches":1`, 1), http.StatusBadRequest, "2 batches by state, more than its 1"},
		{"too many batches", http.MethodPost, "Bearer " + cred, strings.Replace(ok, `"batches":2`, `"batches":2000000`, 1), http.StatusBadRequest, "more than a chunk can cut"},
		{"body too large", http.MethodPost, "Bearer " + cred, `{"namespace":"` + strings.Repeat("x", maxReportBody) + `"}`, http.StatusRequestEntityTooLarge, "exceeds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, ReportPath, strings.NewReader(tc.body))
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", w.Code, w.Body.String(), tc.want)
			}
			if tc.msg != "" {
				var e struct{ Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tc.msg) {
					t.Errorf("answer %q, want an error saying %q", w.Body.String(), tc.msg)
				}
			}
		})
	}
	got := s.Chunks("ns", "a", "u1")
	want := v1alpha1.BatchStatus{Batches: 2, InProgress: 1, Completed: 1, Lines: 100, LinesDone: 40}
	if len(got) != 1 || got[3].Summary != want {
		t.Errorf("kept %+v, want only chunk 3 = %+v", got, want)
	}
}

// The store keeps the latest report per chunk, apart per UID, within its bounds; it forgets a
// chunk not heard from within the TTL and an ingestion that ended.
func TestReportStore(t *testing.T) {
	one := v1alpha1.BatchStatus{Batches: 1, Validating: 1, Lines: 10}
	two := v1alpha1.BatchStatus{Batches: 1, Completed: 1, Lines: 10, LinesDone: 10}
	t.Run("latest per chunk, per uid", func(t *testing.T) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newReports(t, clk, ReportsOptions{})
		must(t, s.Put(report("ns", "a", "u1", 0, one)))
		must(t, s.Put(report("ns", "a", "u1", 0, two)))
		// A late pod of an earlier ingestion of the same name: kept apart, never shown for u1.
		must(t, s.Put(report("ns", "a", "u0", 1, one)))
		got := s.Chunks("ns", "a", "u1")
		if len(got) != 1 || got[0].Summary != two {
			t.Errorf("u1: %+v, want chunk 0 = %+v", got, two)
		}
		if got := s.Chunks("ns", "a", "u0"); len(got) != 1 || got[1].Summary != one {
			t.Errorf("u0: %+v", got)
		}
		if got := s.Chunks("ns", "b", "u1"); len(got) != 0 {
			t.Errorf("another ingestion sees %+v", got)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newReports(t, clk, ReportsOptions{TTL: time.Minute})
		must(t, s.Put(report("ns", "a", "u1", 0, one)))
		clk.Add(40 * time.Second)
		must(t, s.Put(report("ns", "a", "u1", 1, one)))
		clk.Add(20 * time.Second) // chunk 0 silent for exactly the TTL
		if got := s.Chunks("ns", "a", "u1"); len(got) != 1 || got[1].Summary != one {
			t.Errorf("after the TTL: %+v, want chunk 1 only", got)
		}
		clk.Add(time.Minute)
		must(t, s.Put(report("ns", "c", "u9", 0, one))) // sweeps
		if s.Len() != 1 {
			t.Errorf("%d entries after expiry, want 1", s.Len())
		}
	})
	t.Run("bounds", func(t *testing.T) {
		clk := &clock{t: time.Unix(1_700_000_000, 0)}
		s := newReports(t, clk, ReportsOptions{MaxPerIngestion: 2, Max: 3})
		must(t, s.Put(report("ns", "a", "u1", 0, one)))
		must(t, s.Put(report("ns", "a", "u1", 1, one)))
		if err := s.Put(report("ns", "a", "u1", 2, one)); err == nil || !strings.Contains(err.Error(), "already reports 2 chunks") {
			t.Errorf("third chunk of a: %v, want refused", err)
		}
		// Other UIDs of the same name count against it too (a pod cannot invent UIDs to grow it).
		if err := s.Put(report("ns", "a", "u2", 0, one)); err == nil {
			t.Error("another UID of a beyond the bound: accepted")
		}
		// A known chunk is always updated.
		must(t, s.Put(report("ns", "a", "u1", 1, two)))
		must(t, s.Put(report("ns", "b", "u1", 0, one)))
		if err := s.Put(report("ns", "c", "u1", 0, one)); err == nil || !strings.Contains(err.Error(), "at most 3") {
			t.Errorf("beyond the total bound: %v, want refused", err)
		}
		s.Forget("ns", "a")
		if got := s.Chunks("ns", "a", "u1"); len(got) != 0 {
			t.Errorf("after Forget: %+v", got)
		}
		must(t, s.Put(report("ns", "c", "u1", 0, one)))
		if s.Len() != 2 {
			t.Errorf("%d entries, want 2", s.Len())
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReportURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://leases.ns.svc:8083/v1/rate-leases": "http://leases.ns.svc:8083/v1/batch-reports",
		"http://127.0.0.1:9/prefix/v1/rate-leases": "http://127.0.0.1:9/prefix/v1/batch-reports",
		"http://leases:8083/other":                 "http://leases:8083/v1/batch-reports",
		"http://leases:8083":                       "http://leases:8083/v1/batch-reports",
	} {
		if got := ReportURL(in); got != want {
			t.Errorf("ReportURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// The reporter's posts reach the store through the real handler; a manager that refuses or
// cannot be reached costs the chunk nothing but one log line per kind of failure.
func TestReporter(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s := newReports(t, clk, ReportsOptions{})
	mux := http.NewServeMux()
	mux.Handle(ReportPath, s)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) { mu.Lock(); lines = append(lines, args); mu.Unlock() }, funcr.Options{})
	url := ReportURL(srv.URL + Path)
	sum := v1alpha1.BatchStatus{Batches: 1, InProgress: 1, Lines: 5, LinesDone: 2}

	r := NewReporter(url, Credential(testKey, "ns", "a"), "ns", "a", "u1", 7, nil, log)
	if !r.Report(context.Background(), sum) {
		t.Fatal("report not taken")
	}
	if got := s.Chunks("ns", "a", "u1"); got[7].Summary != sum {
		t.Errorf("kept %+v, want chunk 7 = %+v", got, sum)
	}
	// A credential of another ingestion: refused, logged once however often it is tried.
	bad := NewReporter(url, Credential(testKey, "ns", "b"), "ns", "a", "u1", 7, nil, log)
	for range 3 {
		if bad.Report(context.Background(), sum) {
			t.Fatal("report with another ingestion's credential taken")
		}
	}
	// No manager at all: same.
	gone := NewReporter("http://127.0.0.1:1"+ReportPath, Credential(testKey, "ns", "a"), "ns", "a", "u1", 7, nil, log)
	for range 2 {
		if gone.Report(context.Background(), sum) {
			t.Fatal("report to nowhere taken")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 2 || !strings.Contains(lines[0], "403") || !strings.Contains(lines[0], "not valid for ingestion ns/a") ||
		!strings.Contains(lines[1], "transport") {
		t.Errorf("log lines %q, want one for the 403 and one for the transport failure", lines)
	}
	for _, l := range lines {
		if strings.Contains(l, Credential(testKey, "ns", "b")) {
			t.Error("the credential is in the log")
		}
	}
}
