package source

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// s3Refusing answers every request with one S3 error, as S3 writes it (XML body, status).
func s3Refusing(status int, code string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s refused</Message><RequestId>r1</RequestId></Error>`, code, code)
	})
}

// Writes the worker can never make (AccessDenied, NoSuchBucket) are permanent, with the reason a
// read of the same location would get; a server error is retryable. Table-driven over S3's own
// wire answers, through the real SDK.
func TestPutClassifiesWriteErrors(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	for _, tc := range []struct {
		status     int
		code       string
		wantReason string // "" means retryable
	}{
		{http.StatusForbidden, "AccessDenied", worker.ReasonUnauthorized},
		{http.StatusNotFound, "NoSuchBucket", worker.ReasonSourceMissing},
		{http.StatusInternalServerError, "InternalError", ""},
		{http.StatusServiceUnavailable, "SlowDown", ""},
	} {
		t.Run(tc.code, func(t *testing.T) {
			srv := httptest.NewServer(s3Refusing(tc.status, tc.code))
			defer srv.Close()
			cl, err := NewS3Client(context.Background(), v1alpha1.S3Connection{Endpoint: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err = ProbeWrite(ctx, cl, "dl", "failed/t1/.write-probe")
			if err == nil {
				t.Fatal("no error")
			}
			p, perm := worker.AsPermanent(err)
			switch {
			case tc.wantReason == "" && perm:
				t.Fatalf("%s is permanent (%v), want retryable", tc.code, err)
			case tc.wantReason != "" && (!perm || p.Reason != tc.wantReason):
				t.Fatalf("%s: %v, want permanent %s", tc.code, err, tc.wantReason)
			}
			if !strings.Contains(err.Error(), "s3://dl/failed/t1/.write-probe") {
				t.Errorf("the error does not name the location: %v", err)
			}
		})
	}
}
