package source

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// flakyS3 serves ranged GETs of data over S3's REST API and cuts the first cuts responses off
// after half their bytes, as a server or proxy closing a slow stream does.
type flakyS3 struct {
	data   string
	mu     sync.Mutex
	cuts   int
	ranges []string
}

func (f *flakyS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a, b int
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err != nil || r.Header.Get("If-Match") != `"e1"` {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	cut := f.cuts > 0
	f.cuts--
	f.mu.Unlock()
	body := f.data[a : b+1]
	w.Header().Set("ETag", `"e1"`)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusPartialContent)
	if !cut {
		io.WriteString(w, body)
		return
	}
	io.WriteString(w, body[:len(body)/2])
	w.(http.Flusher).Flush()
	conn, _, _ := w.(http.Hijacker).Hijack()
	conn.Close()
}

func TestOpenChunkResumesABrokenStream(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "k")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
	data := strings.Repeat("0123456789abcdef", 4096)
	for name, tc := range map[string]struct {
		cuts    int
		wantErr bool
	}{
		"two breaks":        {cuts: 2},
		"breaks every time": {cuts: 1000, wantErr: true},
		"no break":          {cuts: 0},
	} {
		t.Run(name, func(t *testing.T) {
			f := &flakyS3{data: data, cuts: tc.cuts}
			srv := httptest.NewServer(f)
			defer srv.Close()
			cl, err := NewS3Client(context.Background(), v1alpha1.S3Connection{Endpoint: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			o := &Object{Client: cl, Bucket: "b", Key: "k.csv", ETag: `"e1"`, Size: int64(len(data))}
			rc, err := o.OpenChunk(context.Background(), "none", 100, 40000)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("read %d bytes without an error from a stream that always breaks", len(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v (ranges %v)", err, f.ranges)
			}
			if string(got) != data[100:40100] {
				t.Fatalf("read %d bytes that differ from the range (ranges %v)", len(got), f.ranges)
			}
			if len(f.ranges) != tc.cuts+1 {
				t.Fatalf("%d GETs %v, want %d", len(f.ranges), f.ranges, tc.cuts+1)
			}
		})
	}
}
