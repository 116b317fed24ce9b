package shim

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// docs/security.md's key table lists every authenticated REST route once, with 403 for read-only
// keys exactly where the route writes.
func TestSecurityDocKeyTable(t *testing.T) {
	rows, err := apikeys.DocKeyTable("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: testDefaults("ns")},
		Deps{Client: fake.NewClientBuilder().Build(), CacheSynced: func(ctx context.Context) bool { return true },
			APIServerCheck: func(context.Context) error { return nil }, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, rt := range srv.routes {
		if rt.private {
			want[rt.method+" "+rt.path] = rt.write
		}
	}
	got := map[string]bool{}
	for _, r := range rows {
		if r.Surface != "REST" {
			continue
		}
		if _, dup := got[r.Request]; dup {
			t.Errorf("%s is listed twice", r.Request)
		}
		got[r.Request] = r.ReadOnly == "403"
		if r.ReadWrite != "allowed" || (r.ReadOnly != "403" && r.ReadOnly != "allowed") {
			t.Errorf("%s: read-only %q, read-write %q", r.Request, r.ReadOnly, r.ReadWrite)
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
			t.Errorf("docs/security.md lists %s, which is no authenticated route", req)
		}
	}
}
