package webui

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Signing out ends the session on every replica: a copy of the cookie, presented to another
// server sharing the revocation Lease, is refused once the sign-out is done. A new sign-in works.
func TestSignOutEndsCopiedCookieEverywhere(t *testing.T) {
	leaseNS := "default"
	lease := "ui-sessions-" + strings.ReplaceAll(t.Name(), "/", "-")
	lease = strings.ToLower(lease)
	shared := func(d *Deps) {
		d.Revocations = LeaseRevocations(cluster.Client, cluster.Client, leaseNS, lease, 50*time.Millisecond)
	}
	e1 := startUIServer(t, Config{}, 0, shared)
	e2 := startUIServer(t, Config{}, 0, shared)
	e2.Keys.set(*e1.Keys.keys.Load())
	t.Cleanup(func() {
		_ = cluster.Client.Delete(context.Background(), &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: leaseNS, Name: lease}})
	})

	b := e1.browser(t)
	r := b.login(writeKey)
	if r.Code != http.StatusOK {
		t.Fatalf("login: %d %s", r.Code, r.Body)
	}
	cookie := strings.Split(r.Header.Get("Set-Cookie"), ";")[0]
	copied := func(e *env) int {
		req, _ := http.NewRequest(http.MethodGet, e.URL+"/ui/api/session", nil)
		req.Header.Set("Cookie", cookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c1, c2 := copied(e1), copied(e2); c1 != http.StatusOK || c2 != http.StatusOK {
		t.Fatalf("the cookie before sign-out: %d on its server, %d on the other; want 200 on both", c1, c2)
	}
	if r := b.do(http.MethodPost, "/ui/api/logout", nil, nil); r.Code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Code, r.Body)
	}
	if c := copied(e1); c != http.StatusUnauthorized {
		t.Errorf("the copied cookie on the server that signed out: %d, want 401", c)
	}
	eventually(t, "the copied cookie refused by the other server", func() error {
		if c := copied(e2); c != http.StatusUnauthorized {
			return errorf("%d", c)
		}
		return nil
	})
	if r := b.login(writeKey); r.Code != http.StatusOK {
		t.Errorf("signing in again: %d %s", r.Code, r.Body)
	}
	if r := b.do(http.MethodGet, "/ui/api/session", nil, nil); r.Code != http.StatusOK {
		t.Errorf("the new session: %d %s", r.Code, r.Body)
	}
}

// failingRevocations is a revocation store whose API server refuses everything.
type failingRevocations struct{ err error }

func (f failingRevocations) Revoke(context.Context, string, string, time.Time) error { return f.err }
func (f failingRevocations) Revoked(context.Context, string, string, time.Time) (bool, error) {
	return false, f.err
}

// When the signed-out list cannot be written, sign-out says so (503) instead of pretending the
// session ended; when it cannot be read, sessions are refused (closed), with 503, not let through.
func TestSessionsFailClosed(t *testing.T) {
	e := startUIServer(t, Config{}, 0, func(d *Deps) {
		d.Revocations = failingRevocations{err: errorf("leases is forbidden")}
	})
	b := e.browser(t)
	if r := b.login(readKey); r.Code != http.StatusOK {
		t.Fatalf("login: %d %s", r.Code, r.Body)
	}
	if r := b.do(http.MethodGet, "/ui/api/session", nil, nil); r.Code != http.StatusServiceUnavailable {
		t.Errorf("session with an unreadable revocation list: %d %s, want 503", r.Code, r.Body)
	}
	r := b.do(http.MethodPost, "/ui/api/logout", nil, nil)
	if r.Code != http.StatusServiceUnavailable || strings.Contains(r.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign-out with an unwritable revocation list: %d %s (cookie %q), want 503 and the cookie kept", r.Code, r.Body, r.Header.Get("Set-Cookie"))
	}
}
