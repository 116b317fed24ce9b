package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// A key scoped to namespace A lists, streams and cancels only A's ingestions: B's are 404 to it
// (the same answer as for one that does not exist), never appear in its list or its stream, and
// its actions on them change nothing. A "*" key sees both.
func TestKeyScopedToANamespace(t *testing.T) {
	e := startUI(t, Config{UpdateInterval: 50 * time.Millisecond})
	const wideKey = "cluster-wide-key-value-0b1e"
	e.Keys.set([]apikeys.Key{
		{Name: "team-a", Value: writeKey, Write: true}, // the default scope: e.NS
		{Name: "everyone", Value: wideKey, Write: true, Namespaces: []string{apikeys.AllNamespaces}},
	})
	ctx := context.Background()
	mine, theirs := ingestion(e.NS, "mine"), ingestion(e.Other, "theirs")
	for _, o := range []*v1alpha1.CsvIngestion{mine, theirs} {
		if err := e.Direct.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	wide := e.browser(t)
	if r := wide.login(wideKey); r.Code != http.StatusOK || !strings.Contains(r.Body, `"namespaces":["*"]`) {
		t.Fatalf("cluster-wide login: %d %s", r.Code, r.Body)
	}
	eventually(t, "both in the cache", func() error {
		if r := wide.do(http.MethodGet, "/ui/api/ingestions", nil, nil); !strings.Contains(r.Body, `"name":"mine"`) || !strings.Contains(r.Body, `"name":"theirs"`) {
			return errorf("cluster-wide list: %s", r.Body)
		}
		return nil
	})

	a := e.browser(t)
	if r := a.login(writeKey); r.Code != http.StatusOK || !strings.Contains(r.Body, `"namespaces":["`+e.NS+`"]`) {
		t.Fatalf("login: %d %s", r.Code, r.Body)
	}
	if r := a.do(http.MethodGet, "/ui/api/ingestions", nil, nil); !strings.Contains(r.Body, `"name":"mine"`) || strings.Contains(r.Body, "theirs") {
		t.Errorf("scoped list: %s", r.Body)
	}
	missing := a.do(http.MethodGet, "/ui/api/ingestions/"+e.Other+"/no-such", nil, nil)
	for _, p := range []string{"/ui/api/ingestions/" + e.Other + "/theirs", "/ui/api/stream?ingestion=" + e.Other + "/theirs"} {
		r := a.do(http.MethodGet, p, nil, nil)
		if r.Code != http.StatusNotFound || strings.Replace(r.Body, "theirs", "no-such", 1) != missing.Body {
			t.Errorf("GET %s: %d %s, want 404 as for a missing one (%s)", p, r.Code, r.Body, missing.Body)
		}
	}
	if r := a.do(http.MethodPost, "/ui/api/ingestions/"+e.Other+"/theirs/cancel", nil, nil); r.Code != http.StatusNotFound {
		t.Errorf("cancel of B's ingestion: %d %s, want 404", r.Code, r.Body)
	}
	var got v1alpha1.CsvIngestion
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(theirs), &got); err != nil || got.Spec.Cancel {
		t.Errorf("B's ingestion cancelled by a key of A (%v)", err)
	}

	// The stream: the snapshot has A's only; a change of B's is never sent, A's is.
	list := a.stream("/ui/api/stream")
	ev, err := list.next()
	if err != nil || ev.Name != "snapshot" || !strings.Contains(ev.Data, `"name":"mine"`) || strings.Contains(ev.Data, "theirs") {
		t.Fatalf("snapshot %+v, %v", ev, err)
	}
	setRunning(t, e.Direct, theirs, 500)
	setRunning(t, e.Direct, mine, 700)
	for {
		ev, err := list.next()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ev.Data, "theirs") {
			t.Fatalf("B's change reached A's stream: %s %s", ev.Name, ev.Data)
		}
		if strings.Contains(ev.Data, `"rowsProcessed":700`) {
			break
		}
	}
	list.close()

	if r := a.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/mine/cancel", nil, nil); r.Code != http.StatusOK {
		t.Errorf("cancel of A's ingestion: %d %s", r.Code, r.Body)
	}
	if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(mine), &got); err != nil || !got.Spec.Cancel {
		t.Errorf("A's ingestion not cancelled (%v)", err)
	}
	if r := wide.do(http.MethodGet, "/ui/api/ingestions/"+e.Other+"/theirs", nil, nil); r.Code != http.StatusOK {
		t.Errorf("cluster-wide key: detail of B's ingestion %d", r.Code)
	}
}

// The UI's list pages: ?limit= rows in namespace/name order, ?continue= the previous page's token,
// no token on the last page; bad parameters are 400.
func TestListPages(t *testing.T) {
	e := startUI(t, Config{})
	ctx := context.Background()
	names := []string{"a1", "a2", "a3", "a4", "a5"}
	for _, n := range names {
		if err := e.Direct.Create(ctx, ingestion(e.NS, n)); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser(t)
	if r := b.login(readKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	eventually(t, "all five in the cache", func() error {
		if r := b.do(http.MethodGet, "/ui/api/ingestions", nil, nil); strings.Count(r.Body, `"namespace"`) != len(names) {
			return errorf("%s", r.Body)
		}
		return nil
	})
	var got []string
	q := "?limit=2"
	for page := 0; ; page++ {
		r := b.do(http.MethodGet, "/ui/api/ingestions"+q, nil, nil)
		var body struct {
			Items    []Summary `json:"items"`
			Continue string    `json:"continue"`
		}
		if err := json.Unmarshal([]byte(r.Body), &body); err != nil || r.Code != http.StatusOK || len(body.Items) > 2 || page > 3 {
			t.Fatalf("page %d: %d %s", page, r.Code, r.Body)
		}
		for _, s := range body.Items {
			got = append(got, s.Name)
		}
		if body.Continue == "" {
			break
		}
		q = "?limit=2&continue=" + body.Continue
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("pages joined: %v, want %v", got, names)
	}
	for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=x", "?continue=bm8tc2xhc2g"} {
		if r := b.do(http.MethodGet, "/ui/api/ingestions"+bad, nil, nil); r.Code != http.StatusBadRequest {
			t.Errorf("GET /ui/api/ingestions%s: %d %s, want 400", bad, r.Code, r.Body)
		}
	}
}

// Streams past a key's cap are 429, past the server's 503, both with Retry-After; a closed
// stream frees its slot.
func TestStreamCaps(t *testing.T) {
	e := startUI(t, Config{MaxStreams: 1, MaxStreamsPerKey: 1})
	ro, rw := e.browser(t), e.browser(t)
	if r := ro.login(readKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	if r := rw.login(writeKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	s := ro.stream("/ui/api/stream")
	if ev, err := s.next(); err != nil || ev.Name != "snapshot" {
		t.Fatalf("first stream: %+v %v", ev, err)
	}
	for _, c := range []struct {
		b    *browser
		code int
	}{{ro, http.StatusTooManyRequests}, {rw, http.StatusServiceUnavailable}} {
		r := c.b.do(http.MethodGet, "/ui/api/stream", nil, nil)
		if r.Code != c.code || r.Header.Get("Retry-After") == "" {
			t.Errorf("past the cap: %d (Retry-After %q) %s, want %d with Retry-After", r.Code, r.Header.Get("Retry-After"), r.Body, c.code)
		}
	}
	s.close()
	eventually(t, "the slot freed", func() error {
		if n := e.UI.slots.open(); n != 0 {
			return errorf("%d open", n)
		}
		return nil
	})
	s2 := rw.stream("/ui/api/stream")
	if ev, err := s2.next(); err != nil || ev.Name != "snapshot" {
		t.Fatalf("after the first closed: %+v %v", ev, err)
	}
	s2.close()
}

// The per-key cap counts each key, not each key name: names repeat across the read-write and the
// read-only Secrets (both made with a data key "api-key", say), and one holder's open pages must
// not use up another's.
func TestStreamCapPerKeyNotPerName(t *testing.T) {
	const first, second = "first-holder-key-value-0123456789", "second-holder-key-value-012345678"
	e := startUI(t, Config{MaxStreams: 4, MaxStreamsPerKey: 1, Keys: apikeys.Static(
		apikeys.Key{Name: "api-key", Value: first, Write: true},
		apikeys.Key{Name: "api-key", Value: second},
	)})
	a, b := e.browser(t), e.browser(t)
	for _, c := range []struct {
		br  *browser
		key string
	}{{a, first}, {b, second}} {
		if r := c.br.login(c.key); r.Code != http.StatusOK {
			t.Fatal(r.Body)
		}
	}
	s := a.stream("/ui/api/stream")
	defer s.close()
	if ev, err := s.next(); err != nil || ev.Name != "snapshot" {
		t.Fatalf("first key's stream: %+v %v", ev, err)
	}
	if r := a.do(http.MethodGet, "/ui/api/stream", nil, nil); r.Code != http.StatusTooManyRequests {
		t.Errorf("first key's second stream: %d %s, want 429", r.Code, r.Body)
	}
	s2 := b.stream("/ui/api/stream")
	defer s2.close()
	if ev, err := s2.next(); err != nil || ev.Name != "snapshot" {
		t.Errorf("second key of the same name, first stream: %+v %v, want a snapshot", ev, err)
	}
}
