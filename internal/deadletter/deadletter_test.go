package deadletter

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// A dead-letter write S3 refuses for good (AccessDenied, NoSuchBucket) is a permanent error with
// reason DeadLetterUnwritable, so the chunk is not retried (a retry would embed its rows again);
// a server error stays retryable. S3's wire answers, through the real SDK.
func TestWriteErrors(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	for _, tc := range []struct {
		status    int
		code      string
		permanent bool
	}{
		{http.StatusForbidden, "AccessDenied", true},
		{http.StatusNotFound, "NoSuchBucket", true},
		{http.StatusInternalServerError, "InternalError", false},
	} {
		t.Run(tc.code, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(tc.status)
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused</Message></Error>`, tc.code)
			}))
			defer srv.Close()
			cl, err := source.NewS3Client(context.Background(), v1alpha1.S3Connection{Endpoint: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			w := New(cl, "dl", "failed/", "task-1", 3, []string{"id", "text"})
			if err := w.Add(context.Background(), 7, []string{"7", "x"}, "empty_text", "empty"); err != nil {
				t.Fatal(err) // buffered, not written yet
			}
			err = w.Close(context.Background())
			p, perm := worker.AsPermanent(err)
			switch {
			case err == nil:
				t.Fatal("no error")
			case tc.permanent && (!perm || p.Reason != worker.ReasonDeadLetterUnwritable):
				t.Fatalf("%v, want permanent %s", err, worker.ReasonDeadLetterUnwritable)
			case !tc.permanent && perm:
				t.Fatalf("%v is permanent, want retryable", err)
			}
			if !strings.Contains(err.Error(), "s3://dl/failed/task-1/chunk-0003.csv") {
				t.Errorf("the error does not name the object: %v", err)
			}
		})
	}
}
