package webui

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// A read-only key views and is refused actions with 403 and a message naming it; a read-write
// key cancels, which is a patch of spec.cancel and an event naming the key, never its value.
func TestReadKeyViewsWriteKeyActs(t *testing.T) {
	e := startUI(t, Config{UpdateInterval: 50 * time.Millisecond})
	ctx := context.Background()
	obj := ingestion(e.NS, "q239")
	if err := e.Direct.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	setRunning(t, e.Direct, obj, 2000)

	anon := e.browser(t)
	for _, p := range []string{"/ui/api/session", "/ui/api/ingestions", "/ui/api/ingestions/" + e.NS + "/q239", "/ui/api/stream"} {
		if r := anon.do(http.MethodGet, p, nil, nil); r.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without signing in: %d %s, want 401", p, r.Code, r.Body)
		}
	}
	if r := anon.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, nil); r.Code != http.StatusUnauthorized {
		t.Errorf("cancel without signing in: %d %s", r.Code, r.Body)
	}
	// The page and its assets need no key (they hold no data).
	for _, p := range []string{"/ui/", "/ui/static/app.js", "/ui/static/app.css"} {
		if r := anon.do(http.MethodGet, p, nil, nil); r.Code != http.StatusOK {
			t.Errorf("GET %s: %d", p, r.Code)
		}
	}
	if r := anon.login("not-a-key"); r.Code != http.StatusUnauthorized || r.Header.Get("Set-Cookie") != "" {
		t.Errorf("login with a wrong key: %d %s, cookie %q", r.Code, r.Body, r.Header.Get("Set-Cookie"))
	}

	ro := e.browser(t)
	r := ro.login(readKey)
	if r.Code != http.StatusOK || !strings.Contains(r.Body, `"name":"analyst"`) || !strings.Contains(r.Body, `"write":false`) {
		t.Fatalf("read key login: %d %s", r.Code, r.Body)
	}
	ck := r.Header.Get("Set-Cookie")
	for _, want := range []string{cookieName + "=", "Path=/ui/", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q lacks %q", ck, want)
		}
	}
	if strings.Contains(ck, readKey) {
		t.Errorf("the session cookie holds the key itself: %q", ck)
	}
	if r := ro.do(http.MethodGet, "/ui/api/ingestions", nil, nil); r.Code != http.StatusOK || !strings.Contains(r.Body, `"name":"q239"`) {
		t.Fatalf("list with the read key: %d %s", r.Code, r.Body)
	}
	r = ro.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, nil)
	if r.Code != http.StatusForbidden || !strings.Contains(r.Body, `\"analyst\" is read-only`) {
		t.Errorf("cancel with the read key: %d %s, want 403 naming the read-only key", r.Code, r.Body)
	}
	if got := get(t, e, obj); got.Spec.Cancel {
		t.Fatal("a read-only key cancelled the ingestion")
	}

	rw := e.browser(t)
	if r := rw.login(writeKey); r.Code != http.StatusOK || !strings.Contains(r.Body, `"write":true`) {
		t.Fatalf("write key login: %d %s", r.Code, r.Body)
	}
	// CSRF: without the UI's header, or from another origin, refused before anything else.
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, map[string]string{csrfHeader: ""}); r.Code != http.StatusForbidden {
		t.Errorf("cancel without the CSRF header: %d %s", r.Code, r.Body)
	}
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, map[string]string{"Origin": "https://evil.example"}); r.Code != http.StatusForbidden {
		t.Errorf("cancel from another origin: %d %s", r.Code, r.Body)
	}
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}); r.Code != http.StatusForbidden {
		t.Errorf("cancel with Sec-Fetch-Site cross-site: %d %s", r.Code, r.Body)
	}
	if get(t, e, obj).Spec.Cancel {
		t.Fatal("a refused request cancelled the ingestion")
	}

	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/suspend", nil, nil); r.Code != http.StatusOK {
		t.Fatalf("suspend: %d %s", r.Code, r.Body)
	}
	if !get(t, e, obj).Spec.Suspend {
		t.Error("suspend did not set spec.suspend")
	}
	eventually(t, "the cache sees the suspension", func() error {
		r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/suspend", nil, nil)
		if r.Code != http.StatusConflict {
			return errorf("second suspend: %d %s", r.Code, r.Body)
		}
		return nil
	})
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/resume", nil, nil); r.Code != http.StatusOK {
		t.Fatalf("resume: %d %s", r.Code, r.Body)
	}
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/cancel", nil, nil); r.Code != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.Code, r.Body)
	}
	if !get(t, e, obj).Spec.Cancel {
		t.Fatal("cancel did not set spec.cancel")
	}
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/explode", nil, nil); r.Code != http.StatusNotFound {
		t.Errorf("unknown action: %d %s", r.Code, r.Body)
	}
	if r := rw.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/nope/cancel", nil, nil); r.Code != http.StatusNotFound {
		t.Errorf("cancel of a missing ingestion: %d %s", r.Code, r.Body)
	}

	// Each action is an event on the ingestion naming the key, never its value.
	eventually(t, "the action events", func() error {
		var evs eventsv1.EventList
		if err := e.Direct.List(ctx, &evs, client.InNamespace(e.NS)); err != nil {
			return err
		}
		got := map[string]string{}
		for _, ev := range evs.Items {
			if strings.Contains(ev.Note, writeKey) || strings.Contains(ev.Note, readKey) {
				t.Fatalf("an event holds a key value: %q", ev.Note)
			}
			got[ev.Reason] = ev.Note
		}
		for _, reason := range []string{ReasonSuspendRequested, ReasonResumeRequested, ReasonCancelRequested} {
			if !strings.Contains(got[reason], `API key "operator"`) {
				return errorf("event %s: %q", reason, got[reason])
			}
		}
		return nil
	})
	// The detail page shows them, from the cache.
	eventually(t, "the detail page's events", func() error {
		r := ro.do(http.MethodGet, "/ui/api/ingestions/"+e.NS+"/q239", nil, nil)
		var d Detail
		if err := json.Unmarshal([]byte(r.Body), &d); err != nil {
			return err
		}
		for _, ev := range d.Events {
			if ev.Reason == ReasonCancelRequested && strings.Contains(ev.Message, "operator") {
				return nil
			}
		}
		return errorf("events on the page: %+v", d.Events)
	})

	// Rotation: once the read key is gone, its session ends.
	e.Keys.set([]apikeys.Key{{Name: "operator", Value: writeKey, Write: true}})
	if r := ro.do(http.MethodGet, "/ui/api/ingestions", nil, nil); r.Code != http.StatusUnauthorized {
		t.Errorf("after the read key was removed: %d", r.Code)
	}
	if r := rw.do(http.MethodPost, "/ui/api/logout", nil, nil); r.Code != http.StatusNoContent {
		t.Errorf("logout: %d", r.Code)
	}
	if r := rw.do(http.MethodGet, "/ui/api/session", nil, nil); r.Code != http.StatusUnauthorized {
		t.Errorf("after logout: %d", r.Code)
	}
}

// Without any key configured the UI answers, and says so, rather than failing or letting anyone in.
func TestNoKeysConfigured(t *testing.T) {
	e := startUI(t, Config{})
	e.UI.cfg.Keys = nil
	b := e.browser(t)
	if r := b.login("anything"); r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Body, "none are configured") {
		t.Errorf("login without keys: %d %s", r.Code, r.Body)
	}
	if r := b.do(http.MethodGet, "/ui/api/ingestions", nil, nil); r.Code != http.StatusUnauthorized {
		t.Errorf("list without keys: %d %s", r.Code, r.Body)
	}
}

// The list stream sends a snapshot, then the rows that changed, read from the cache when sent; the
// detail stream follows one ingestion; a closed stream leaves nothing behind in the hub.
func TestStreamsFollowTheCache(t *testing.T) {
	e := startUI(t, Config{UpdateInterval: 100 * time.Millisecond})
	ctx := context.Background()
	a := ingestion(e.NS, "a")
	if err := e.Direct.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	setRunning(t, e.Direct, a, 1000)
	b := e.browser(t)
	if r := b.login(readKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	eventually(t, "a in the cache", func() error {
		if r := b.do(http.MethodGet, "/ui/api/ingestions", nil, nil); !strings.Contains(r.Body, `"rowsProcessed":1000`) {
			return errorf("%s", r.Body)
		}
		return nil
	})
	list := b.stream("/ui/api/stream")
	ev, err := list.next()
	if err != nil || ev.Name != "snapshot" || !strings.Contains(ev.Data, `"name":"a"`) {
		t.Fatalf("first list event %+v, %v", ev, err)
	}
	detailStream := b.stream("/ui/api/stream?ingestion=" + e.NS + "/a")
	ev, err = detailStream.next()
	if err != nil || ev.Name != "detail" {
		t.Fatalf("first detail event %+v, %v", ev, err)
	}
	var d Detail
	if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
		t.Fatal(err)
	}
	if d.Grid.Total != 10 || d.Grid.Completed != "0-1" || d.Grid.Failed != "7" || len(d.FailedChunks) != 1 ||
		d.FailedChunks[0].Reason != "Unauthorized" || !deadLetterOf(d.FailedChunks[0].DeadLetter, "s3://csv-storage/failed/", "/chunk-0007.csv") {
		t.Errorf("detail %+v", d)
	}
	if got := e.UI.hub.subscribers(); got != 2 {
		t.Errorf("%d subscribers, want 2", got)
	}

	// Many status changes: the last one arrives; how many pushes it took is logged, not asserted.
	cur := &v1alpha1.CsvIngestion{}
	for i := int64(1); i <= 20; i++ {
		if err := e.Direct.Get(ctx, client.ObjectKeyFromObject(a), cur); err != nil {
			t.Fatal(err)
		}
		cur.Status.Records.Processed = 1000 + i*100
		if err := e.Direct.Status().Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	pushes := 0
	for {
		ev, err := list.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name != "changes" {
			t.Fatalf("unexpected %s: %s", ev.Name, ev.Data)
		}
		pushes++
		var ch listChanges
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.Upsert) == 1 && ch.Upsert[0].RowsProcessed == 3000 {
			break
		}
	}
	t.Logf("20 status updates reached the list page in %d pushes", pushes)

	// Deleting it sends a delete to the list and "gone" to the detail page.
	if err := e.Direct.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := list.next()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(ev.Data, `"delete":["`+e.NS+`/a"]`) {
			break
		}
	}
	for {
		ev, err := detailStream.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name == "gone" {
			break
		}
	}

	// Closing the streams unsubscribes them.
	list.close()
	detailStream.close()
	eventually(t, "no subscribers after disconnect", func() error {
		if n := e.UI.hub.subscribers(); n != 0 {
			return errorf("%d subscribers", n)
		}
		return nil
	})
}

// A stream outlives the read and write timeouts its server has for ordinary requests (the
// shim's are 30 s and 60 s; here 300 ms): keep-alives and changes still arrive well past them.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	const serverTimeout = 300 * time.Millisecond
	e := startUIServer(t, Config{UpdateInterval: 50 * time.Millisecond, KeepAlive: 100 * time.Millisecond}, serverTimeout)
	ctx := context.Background()
	a := ingestion(e.NS, "a")
	if err := e.Direct.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	if r := b.login(readKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	eventually(t, "a in the cache", func() error {
		if r := b.do(http.MethodGet, "/ui/api/ingestions", nil, nil); !strings.Contains(r.Body, `"name":"a"`) {
			return errorf("%s", r.Body)
		}
		return nil
	})
	s := b.stream("/ui/api/stream?ingestion=" + e.NS + "/a")
	if ev, err := s.next(); err != nil || ev.Name != "detail" {
		t.Fatalf("first event %+v, %v", ev, err)
	}
	opened := time.Now()
	time.Sleep(5 * serverTimeout) // only keep-alives meanwhile
	setRunning(t, e.Direct, a, 4321)
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatalf("the stream ended %s after it opened (server timeouts %s): %v", time.Since(opened).Round(time.Millisecond), serverTimeout, err)
		}
		if ev.Name == "detail" && strings.Contains(ev.Data, `"rowsProcessed":4321`) {
			break
		}
	}
	if r := b.do(http.MethodGet, "/ui/api/session", nil, nil); r.Code != http.StatusOK {
		t.Errorf("an ordinary request on the same server: %d %s", r.Code, r.Body)
	}
}

// A stream ends, with "signedout", when its key is removed.
func TestStreamEndsWhenTheKeyGoes(t *testing.T) {
	e := startUI(t, Config{KeepAlive: 100 * time.Millisecond})
	b := e.browser(t)
	if r := b.login(readKey); r.Code != http.StatusOK {
		t.Fatal(r.Body)
	}
	s := b.stream("/ui/api/stream")
	if ev, err := s.next(); err != nil || ev.Name != "snapshot" {
		t.Fatalf("%+v %v", ev, err)
	}
	e.Keys.set(nil)
	ev, err := s.next()
	if err != nil || ev.Name != "signedout" {
		t.Fatalf("after the key was removed: %+v %v", ev, err)
	}
	if _, err := s.next(); err == nil {
		t.Error("the stream went on after signing out")
	}
}

// No secret value reaches any page, JSON answer or stream: not the Secrets an ingestion names,
// not a password written into an endpoint URL, not the API keys.
func TestNoSecretReachesAnyPage(t *testing.T) {
	e := startUI(t, Config{UpdateInterval: 50 * time.Millisecond})
	ctx := context.Background()
	secrets := map[string]map[string]string{
		"s3-creds": {"AWS_ACCESS_KEY_ID": "AKIASECRETVALUE1", "AWS_SECRET_ACCESS_KEY": "s3-secret-value-2"},
		"openai":   {"api-key": "sk-secret-value-3"},
		"pinecone": {"api-key": "pc-secret-value-4"},
	}
	for name, data := range secrets {
		if err := e.Direct.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.NS}, StringData: data}); err != nil {
			t.Fatal(err)
		}
	}
	obj := ingestion(e.NS, "q239")
	obj.Spec.Source.S3.Endpoint = "https://minio-user:url-password-5@minio.example:9000/?token=url-token-6"
	obj.Spec.Embedding.BaseURL = "https://proxy-user:url-password-7@openai-proxy.example/v1"
	if err := e.Direct.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	setRunning(t, e.Direct, obj, 5000)
	b := e.browser(t)
	var bodies []string
	r := b.login(writeKey)
	bodies = append(bodies, r.Body)
	eventually(t, "the ingestion in the cache", func() error {
		if r := b.do(http.MethodGet, "/ui/api/ingestions/"+e.NS+"/q239", nil, nil); r.Code != http.StatusOK {
			return errorf("%d %s", r.Code, r.Body)
		}
		return nil
	})
	for _, p := range []string{"/ui/", "/ui/static/app.js", "/ui/static/app.css", "/ui/api/session", "/ui/api/ingestions", "/ui/api/ingestions/" + e.NS + "/q239"} {
		bodies = append(bodies, b.do(http.MethodGet, p, nil, nil).Body)
	}
	bodies = append(bodies, b.do(http.MethodPost, "/ui/api/ingestions/"+e.NS+"/q239/suspend", nil, nil).Body)
	for _, p := range []string{"/ui/api/stream", "/ui/api/stream?ingestion=" + e.NS + "/q239"} {
		s := b.stream(p)
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, ev.Data)
		s.close()
	}
	all := strings.Join(bodies, "\n")
	if !strings.Contains(all, "s3-creds") || !strings.Contains(all, "pinecone (key api-key)") || !strings.Contains(all, "https://minio.example:9000/") {
		t.Errorf("the pages do not name the Secrets or the endpoint: %s", all)
	}
	leaks := []string{readKey, writeKey, "url-password-5", "url-token-6", "url-password-7", "minio-user", "proxy-user"}
	for _, data := range secrets {
		for _, v := range data {
			leaks = append(leaks, v)
		}
	}
	for _, v := range leaks {
		if strings.Contains(all, v) {
			t.Errorf("a page holds the secret value %q", v)
		}
	}
}

func get(t *testing.T, e *env, obj *v1alpha1.CsvIngestion) *v1alpha1.CsvIngestion {
	t.Helper()
	out := &v1alpha1.CsvIngestion{}
	if err := e.Direct.Get(context.Background(), client.ObjectKeyFromObject(obj), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// deadLetterOf: a dead-letter key is <prefix><taskID>-<uid>/chunk-NNNN.csv, here (no
// spec.taskID: the task id is the uid) <prefix><uid>/chunk-NNNN.csv.
func deadLetterOf(key, before, after string) bool {
	uid := strings.TrimSuffix(strings.TrimPrefix(key, before), after)
	return strings.HasPrefix(key, before) && strings.HasSuffix(key, after) && len(uid) == 36
}
