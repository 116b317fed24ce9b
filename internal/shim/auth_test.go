package shim

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// logBuffer collects every log line of a server.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) write(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, "%s %s\n", prefix, args)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAuthKeysFromSecretWithRotation(t *testing.T) {
	ctx := context.Background()
	keysNS := newNamespace(t, testCluster(t).Client)
	secret := types.NamespacedName{Namespace: keysNS, Name: "shim-api-keys"}
	logs := &logBuffer{}
	e := startShim(t, testCluster(t), func(c *Config, d *Deps) {
		// Read through the cache, as the manager does.
		c.APIKeys = SecretKeys(d.Client, secret)
		d.Log = funcr.New(logs.write, funcr.Options{Verbosity: 10})
	})
	tasks := e.URL + "/api/v1/tasks"

	// No Secret yet: the keys cannot be read, which is the server's problem, not the client's.
	if r := do(t, http.MethodGet, tasks, "key-one-0123456789abcdef0123456789", nil); r.Code != http.StatusServiceUnavailable {
		t.Fatalf("without the keys Secret: %d %s, want 503", r.Code, r.Body)
	}

	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: secret.Namespace, Name: secret.Name},
		// From a file, with its newline.
		Data: map[string][]byte{"primary": []byte("key-one-0123456789abcdef0123456789\n")},
	}
	if err := e.Direct.Create(ctx, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "key-one-0123456789abcdef0123456789 accepted", func() error { return expectCode(t, tasks, "key-one-0123456789abcdef0123456789", http.StatusOK) })

	// The exact bodies of the old API.
	for _, tc := range []struct{ key, body string }{
		{"", `{"detail":"API key is missing"}`},
		{"key-two-0123456789abcdef0123456789", `{"detail":"Invalid API key"}`},
		{"KEY-ONE", `{"detail":"Invalid API key"}`},
		{"key-on", `{"detail":"Invalid API key"}`},
	} {
		r := do(t, http.MethodGet, tasks, tc.key, nil)
		if r.Code != http.StatusUnauthorized || strings.TrimSpace(string(r.Body)) != tc.body {
			t.Errorf("key %q: %d %s, want 401 %s", tc.key, r.Code, r.Body, tc.body)
		}
	}

	// Rotation: add the new key, move clients, drop the old one. No restart.
	sec.Data["secondary"] = []byte("key-two-0123456789abcdef0123456789")
	if err := e.Direct.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "key-two-0123456789abcdef0123456789 accepted", func() error { return expectCode(t, tasks, "key-two-0123456789abcdef0123456789", http.StatusOK) })
	if err := expectCode(t, tasks, "key-one-0123456789abcdef0123456789", http.StatusOK); err != nil {
		t.Errorf("old key during rotation: %v", err)
	}
	delete(sec.Data, "primary")
	if err := e.Direct.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "key-one-0123456789abcdef0123456789 refused", func() error {
		return expectCode(t, tasks, "key-one-0123456789abcdef0123456789", http.StatusUnauthorized)
	})
	if err := expectCode(t, tasks, "key-two-0123456789abcdef0123456789", http.StatusOK); err != nil {
		t.Errorf("new key after rotation: %v", err)
	}

	// Every endpoint of the task API is behind the key.
	for _, ep := range []struct{ method, path string }{
		{http.MethodPost, "/api/v1/process"},
		{http.MethodGet, "/api/v1/status/some-task"},
		{http.MethodGet, "/api/v1/tasks"},
		{http.MethodDelete, "/api/v1/task/some-task"},
	} {
		if r := do(t, ep.method, e.URL+ep.path, "", `{}`); r.Code != http.StatusUnauthorized || r.detail(t) != detailKeyMissing {
			t.Errorf("%s %s without a key: %d %s", ep.method, ep.path, r.Code, r.Body)
		}
		if r := do(t, ep.method, e.URL+ep.path, "nope", `{}`); r.Code != http.StatusUnauthorized || r.detail(t) != detailKeyInvalid {
			t.Errorf("%s %s with a wrong key: %d %s", ep.method, ep.path, r.Code, r.Body)
		}
	}

	// Access logs carry the request, never the key.
	out := logs.String()
	if !strings.Contains(out, `"path"="/api/v1/tasks"`) || !strings.Contains(out, `"status"=401`) {
		t.Errorf("no access log lines for the requests:\n%s", out)
	}
	for _, k := range []string{"key-one-0123456789abcdef0123456789", "key-two-0123456789abcdef0123456789", "nope"} {
		if strings.Contains(out, k) {
			t.Errorf("the logs contain the key %q", k)
		}
	}
}

func expectCode(t testing.TB, url, key string, want int) error {
	if r := do(t, http.MethodGet, url, key, nil); r.Code != want {
		return fmt.Errorf("GET %s with key %q: %d %s, want %d", url, key, r.Code, r.Body, want)
	}
	return nil
}

// A read-only key reads tasks and is refused, with 403 and a message saying why, where tasks are
// created or cancelled; the read-write keys keep every right they had.
func TestReadOnlyKeys(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, d *Deps) {
		c.ReadOnlyKeys = StaticKeys("viewer-key")
	})
	for _, tc := range []struct {
		method, path, key string
		code              int
		detail            string
	}{
		{http.MethodGet, "/api/v1/tasks", "viewer-key", http.StatusOK, ""},
		{http.MethodGet, "/api/v1/status/no-such-task", "viewer-key", http.StatusNotFound, "Task not found"},
		{http.MethodPost, "/api/v1/process", "viewer-key", http.StatusForbidden, detailKeyReadOnly},
		{http.MethodDelete, "/api/v1/task/no-such-task", "viewer-key", http.StatusForbidden, detailKeyReadOnly},
		{http.MethodDelete, "/api/v1/task/no-such-task", testKey, http.StatusNotFound, "Task not found"},
		{http.MethodPost, "/api/v1/process", "viewer-ke", http.StatusUnauthorized, detailKeyInvalid},
	} {
		r := do(t, tc.method, e.URL+tc.path, tc.key, `{}`)
		if r.Code != tc.code || (tc.detail != "" && r.detail(t) != tc.detail) {
			t.Errorf("%s %s with %q: %d %s; want %d %q", tc.method, tc.path, tc.key, r.Code, r.Body, tc.code, tc.detail)
		}
	}
}

// The web UI is mounted under /ui/ (and /ui redirects there), behind the per-client rate limit.
func TestUIMountedBehindTheClientLimit(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, d *Deps) {
		c.RateLimit = RateLimit{PerClient: Bucket{Rate: 0.001, Burst: 2}}
		d.UI = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("ui:" + r.URL.Path))
		})
	})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(e.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r := do(t, http.MethodGet, e.URL+"/ui/static/app.js", "", nil); r.Code != http.StatusOK || string(r.Body) != "ui:/ui/static/app.js" {
		t.Errorf("GET /ui/static/app.js: %d %s", r.Code, r.Body)
	}
	if r := do(t, http.MethodGet, e.URL+"/ui/", "", nil); r.Code != http.StatusOK {
		t.Errorf("GET /ui/: %d %s", r.Code, r.Body)
	}
	if r := do(t, http.MethodGet, e.URL+"/ui/", "", nil); r.Code != http.StatusTooManyRequests {
		t.Errorf("past the per-client burst: %d, want 429", r.Code)
	}
}
