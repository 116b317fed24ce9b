package webui

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// docs/security.md's key table lists every UI route that needs a key once, with 403 for
// read-only keys exactly where the route acts.
func TestSecurityDocKeyTable(t *testing.T) {
	rows, err := apikeys.DocKeyTable("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	want := map[string]bool{}
	for _, rt := range s.routes() {
		if rt.access != public {
			want[rt.method+" "+rt.path] = rt.access == write
		}
	}
	got := map[string]bool{}
	for _, r := range rows {
		if r.Surface != "UI" {
			continue
		}
		if _, dup := got[r.Request]; dup {
			t.Errorf("%s is listed twice", r.Request)
		}
		got[r.Request] = r.ReadOnly == "403"
		if r.ReadWrite != "allowed" || r.OtherNamespace == "" {
			t.Errorf("%s: read-write %q, other namespace %q", r.Request, r.ReadWrite, r.OtherNamespace)
		}
	}
	for req, w := range want {
		if g, ok := got[req]; !ok {
			t.Errorf("docs/security.md does not list %s", req)
		} else if g != w {
			t.Errorf("docs/security.md says read-only keys get 403 on %s: %v; the code: %v", req, g, w)
		}
	}
	for req := range got {
		if _, ok := want[req]; !ok {
			t.Errorf("docs/security.md lists %s, which is no UI route that needs a key", req)
		}
	}
}
