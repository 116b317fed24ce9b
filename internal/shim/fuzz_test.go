package shim

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// FuzzHandlers sends arbitrary requests through the whole handler (middleware, auth, validation,
// the API server of the test cluster): no input may give a 5xx or a panic (the recovery middleware
// turns a panic into a 500, so both show as a 5xx here).
const hangAfter = 30 * time.Second

func FuzzHandlers(f *testing.F) {
	c := testCluster(f)
	if os.Getenv(sharedKubeconfigEnv) == "" {
		// Fuzz workers, started from here on, use this cluster instead of starting their own.
		if err := os.Setenv(sharedKubeconfigEnv, c.Kubeconfig); err != nil {
			f.Fatal(err)
		}
	}
	// Discard logs: the fuzz function must not log through f, and there would be millions of lines.
	e := startShim(f, c, func(_ *Config, d *Deps) { d.Log = logr.Discard() })
	h := e.Server.Handler()
	methods := []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut, http.MethodHead, http.MethodOptions, http.MethodPatch}

	f.Add(uint8(1), "/api/v1/process", "", []byte(`{"s3_key":"exports/a.csv","question_id":239}`), true, "")
	f.Add(uint8(1), "/api/v1/process", "", []byte(`{"data_source":"metabase","question_id":"7","start_date":"2024-02-29","batch_size":1e4}`), true, "req-1")
	f.Add(uint8(1), "/api/v1/process", "", []byte(`{"question_id":9223372036854775807,"s3_key":"\u00e9","priority":9,"namespace":""}`), true, "")
	f.Add(uint8(1), "/api/v1/process", "", []byte(`{"chunk_size":1e400,"batch_size":-0.0}`), true, "")
	f.Add(uint8(1), "/api/v1/process", "", []byte(`{"s3_key":"a","question_id":1,"start_date":"0000-01-01","end_date":"9999-12-31"}`), true, "")
	f.Add(uint8(0), "/api/v1/status/abc", "", []byte(nil), true, "")
	f.Add(uint8(0), "/api/v1/status/"+string(make([]byte, 300)), "", []byte(nil), true, "")
	f.Add(uint8(0), "/api/v1/tasks", "limit=5&offset=99999999999999999999&status_filter=failed", []byte(nil), true, "")
	f.Add(uint8(2), "/api/v1/task/xyz", "", []byte(nil), true, "1.2.3.4, ::1")
	f.Add(uint8(0), "/api/v1/health", "", []byte(nil), false, "")
	f.Add(uint8(3), "/api/v1/../v1/process", "", []byte(`{`), false, "")
	f.Add(uint8(0), "//api/v1/status/%2F..", "a=%zz", []byte(nil), true, "")

	f.Fuzz(func(t *testing.T, m uint8, path, query string, body []byte, withKey bool, header string) {
		req := &http.Request{
			Method:     methods[int(m)%len(methods)],
			URL:        &url.URL{Path: path, RawQuery: query},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{},
			Body:       http.NoBody,
			Host:       "shim.test",
			RemoteAddr: "192.0.2.10:4321",
			RequestURI: path,
		}
		if len(body) > 0 {
			req.Body = httpBody(body)
			req.ContentLength = int64(len(body))
		}
		if withKey {
			req.Header.Set("X-API-Key", testKey)
		} else if header != "" {
			req.Header.Set("X-API-Key", header)
		}
		req.Header.Set("X-Request-ID", header)
		req.Header.Set("X-Forwarded-For", header)
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(rec, req.WithContext(t.Context()))
		}()
		// The fuzzing engine has no notion of a hang; a request still unanswered after this long
		// (every request is answered from the cache or one API call) is reported as one.
		select {
		case <-done:
		case <-time.After(hangAfter):
			t.Fatalf("%s %q ?%q body %q: no answer after %s", req.Method, path, query, body, hangAfter)
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %q ?%q body %q: %d %s", req.Method, path, query, body, rec.Code, rec.Body)
		}
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func httpBody(b []byte) readCloser { return readCloser{bytes.NewReader(b)} }
