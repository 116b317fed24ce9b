package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/uuid"
	"golang.org/x/time/rate"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func TestRateLimitPerKey(t *testing.T) {
	// One token per 5 s after a burst of 3: a burst of 8 cannot all get through.
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) {
		c.APIKeys = StaticKeys("burst-key", "other-key")
		c.RateLimit = RateLimit{PerKey: Bucket{Rate: 0.2, Burst: 3}}
	})
	url := e.URL + "/api/v1/tasks"
	var codes []int
	var retryAfter int
	for range 8 {
		r := do(t, http.MethodGet, url, "burst-key", nil)
		codes = append(codes, r.Code)
		if r.Code == http.StatusTooManyRequests {
			n, err := strconv.Atoi(r.Header.Get("Retry-After"))
			if err != nil || n < 1 || n > 5 {
				t.Errorf("Retry-After %q, want 1–5 seconds", r.Header.Get("Retry-After"))
			}
			retryAfter = max(retryAfter, n)
			if r.detail(t) == "" {
				t.Errorf("429 without a JSON detail: %s", r.Body)
			}
		}
	}
	if !slices.Equal(codes[:3], []int{200, 200, 200}) || !slices.Contains(codes, http.StatusTooManyRequests) {
		t.Fatalf("codes %v: want the burst of 3 served, then 429s", codes)
	}
	// The bucket is per key: another key is not limited by this one.
	if r := do(t, http.MethodGet, url, "other-key", nil); r.Code != http.StatusOK {
		t.Errorf("another key: %d, want 200", r.Code)
	}
	// A client that waits as told gets through.
	time.Sleep(time.Duration(retryAfter) * time.Second)
	if r := do(t, http.MethodGet, url, "burst-key", nil); r.Code != http.StatusOK {
		t.Errorf("after waiting Retry-After: %d, want 200", r.Code)
	}
}

func TestRateLimitPerClientComesBeforeAuth(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) {
		c.RateLimit = RateLimit{PerClient: Bucket{Rate: 0.2, Burst: 2}}
	})
	var codes []int
	for range 6 {
		codes = append(codes, do(t, http.MethodGet, e.URL+"/api/v1/tasks", "guess", nil).Code)
	}
	if !slices.Equal(codes[:2], []int{401, 401}) || !slices.Contains(codes, http.StatusTooManyRequests) {
		t.Fatalf("codes %v: want two 401s, then key guessing slowed by 429s", codes)
	}
	// Health is never limited: the load balancer shares an address with clients.
	if code, _ := getHealth(t, e.URL); code != http.StatusOK {
		t.Errorf("health after the client's bucket ran dry: %d", code)
	}
}

func TestWellBehavedClientIsNeverLimited(t *testing.T) {
	const rps, burst = 20, 5
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) {
		c.RateLimit = RateLimit{PerKey: Bucket{Rate: rps, Burst: burst}, PerClient: Bucket{Rate: rps, Burst: burst}}
	})
	// The client keeps to the advertised rate with no burst of its own; the server's burst absorbs
	// network jitter.
	lim := rate.NewLimiter(rps, 1)
	for i := range 60 {
		if err := lim.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r := do(t, http.MethodGet, e.URL+"/api/v1/tasks?limit=1", testKey, nil); r.Code != http.StatusOK {
			t.Fatalf("request %d of a client within the limit: %d %s", i, r.Code, r.Body)
		}
	}
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		remote string
		xff    []string
		hops   int
		want   string
	}{
		{"10.0.0.1:5555", nil, 0, "10.0.0.1"},
		{"10.0.0.1:5555", []string{"6.6.6.6"}, 0, "10.0.0.1"}, // not trusted
		{"10.0.0.1:5555", []string{"6.6.6.6, 203.0.113.7"}, 1, "203.0.113.7"},
		{"10.0.0.1:5555", []string{"6.6.6.6", "203.0.113.7, 10.1.1.1"}, 2, "203.0.113.7"},
		{"10.0.0.1:5555", []string{"203.0.113.7"}, 2, "10.0.0.1"}, // fewer entries than hops
		{"10.0.0.1:5555", []string{"not-an-ip"}, 1, "10.0.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", nil, 0, "2001:db8:1:2::/64"},
		{"10.0.0.1:5555", []string{"2001:db8:1:2:ffff::1"}, 1, "2001:db8:1:2::/64"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := clientAddr(r, tc.hops); got != tc.want {
			t.Errorf("clientAddr(%s, %v, %d) = %q, want %q", tc.remote, tc.xff, tc.hops, got, tc.want)
		}
	}
}

func TestJSONErrorsAndRequestIDs(t *testing.T) {
	e := startShim(t, testCluster(t))
	r := do(t, http.MethodGet, e.URL+"/api/v1/nothing-here", testKey, nil)
	if r.Code != http.StatusNotFound || r.detail(t) != "Not Found" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("unknown path: %d %s %q", r.Code, r.Body, r.Header.Get("Content-Type"))
	}
	r = do(t, http.MethodPut, e.URL+"/api/v1/process", testKey, `{}`)
	if r.Code != http.StatusMethodNotAllowed || r.detail(t) != "Method Not Allowed" || !strings.Contains(r.Header.Get("Allow"), "POST") {
		t.Errorf("wrong method: %d %s Allow=%q", r.Code, r.Body, r.Header.Get("Allow"))
	}

	req, _ := http.NewRequest(http.MethodGet, e.URL+"/api/v1/health", nil)
	req.Header.Set("X-Request-ID", "trace-42.a:b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-ID"); got != "trace-42.a:b" {
		t.Errorf("request id not echoed: %q", got)
	}
	req.Header.Set("X-Request-ID", "has spaces\tand tabs")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := uuid.Parse(resp.Header.Get("X-Request-ID")); err != nil {
		t.Errorf("a malformed request id was not replaced: %q", resp.Header.Get("X-Request-ID"))
	}

	// The id of the request that created a task is kept on its resource.
	req, _ = http.NewRequest(http.MethodPost, e.URL+"/api/v1/process", strings.NewReader(`{"s3_key":"a.csv","question_id":1}`))
	req.Header.Set("X-API-Key", testKey)
	req.Header.Set("X-Request-ID", "create-1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var pr ProcessResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if obj := resourceOf(t, e, pr.TaskID); obj.Annotations[AnnotationRequestID] != "create-1" {
		t.Errorf("request id annotation = %q", obj.Annotations[AnnotationRequestID])
	}
}

func TestAPIDisabledKeepsHealth(t *testing.T) {
	e := startShim(t, testCluster(t), func(c *Config, _ *Deps) {
		c.APIEnabled = false
		c.APIKeys = nil
		c.Defaults = Defaults{}
	})
	if r := do(t, http.MethodPost, e.URL+"/api/v1/process", testKey, `{"s3_key":"a.csv","question_id":1}`); r.Code != http.StatusNotFound || r.detail(t) != "Not Found" {
		t.Errorf("POST with the API off: %d %s, want 404", r.Code, r.Body)
	}
	if code, h := getHealth(t, e.URL); code != http.StatusOK || h.Status != Healthy {
		t.Errorf("health with the API off: %d %+v", code, h)
	}
	r := do(t, http.MethodGet, e.URL+"/api/v1/openapi.json", "", nil)
	var doc struct {
		Paths map[string]any `json:"paths"`
	}
	r.json(t, &doc)
	var paths []string
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	// GET / and GET /health need no key and are served like /api/v1/health, API or not.
	if want := []string{"/", "/api/v1/health", "/api/v1/openapi.json", "/health"}; !slices.Equal(paths, want) {
		t.Errorf("OpenAPI paths with the API off = %v, want %v", paths, want)
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	// New contacts nothing, so a client of an address where nothing listens will do.
	cl, err := client.New(&rest.Config{Host: "http://127.0.0.1:1"}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok := Deps{Client: cl, CacheSynced: func(context.Context) bool { return true }, APIServerCheck: func(context.Context) error { return nil }, Log: logr.Discard()}
	for _, tc := range []struct {
		name string
		cfg  Config
		deps Deps
		want string
	}{
		{"no client", Config{}, Deps{}, "Kubernetes client"},
		{"API without keys", Config{APIEnabled: true, Defaults: testDefaults("ns")}, ok, "API keys"},
		{"API without bucket", Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: Defaults{Namespace: "ns", Index: "i",
			OpenAISecret: testDefaults("").OpenAISecret, PineconeSecret: testDefaults("").PineconeSecret}}, ok, "bucket"},
		{"API without index", Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: Defaults{Namespace: "ns", Bucket: "b",
			OpenAISecret: testDefaults("").OpenAISecret, PineconeSecret: testDefaults("").PineconeSecret}}, ok, "index"},
		{"bad namespace", Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: func() Defaults { d := testDefaults("Not_A_Namespace"); return d }()}, ok, "namespace"},
		{"bad endpoint", Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: func() Defaults { d := testDefaults("ns"); d.S3Endpoint = "minio:9000"; return d }()}, ok, "S3 endpoint"},
		{"bad burst", Config{RateLimit: RateLimit{PerKey: Bucket{Rate: 1}}}, ok, "burst"},
		{"bad sanitize", Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: func() Defaults { d := testDefaults("ns"); d.Sanitize = "html"; return d }()}, ok, "sanitize"},
	} {
		_, err := New(tc.cfg, tc.deps)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(Config{APIEnabled: true, APIKeys: StaticKeys("k"), Defaults: testDefaults("ns")}, ok); err != nil {
		t.Errorf("complete config refused: %v", err)
	}
}

func TestGracefulShutdownFinishesRequestsInFlight(t *testing.T) {
	e := startShim(t, testCluster(t))
	host := strings.TrimPrefix(e.URL, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"s3_key":"exports/slow.csv","question_id":3}`
	// With Expect: 100-continue the server answers 100 once the handler reads the body, so the
	// test knows the request is in the handler before it starts the shutdown.
	fmt.Fprintf(conn, "POST /api/v1/process HTTP/1.1\r\nHost: %s\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", host, testKey, len(body))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue, got %v %v", resp, err)
	}

	stopped := make(chan error, 1)
	go func() { stopped <- e.stop() }()
	eventually(t, "listener closed", func() error {
		c, err := net.Dial("tcp", host)
		if err == nil {
			c.Close()
			return errors.New("still accepting connections")
		}
		return nil
	})
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request in flight during shutdown: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("request in flight during shutdown: %d %s, want 202", resp.StatusCode, b)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve after graceful shutdown: %v", err)
	}
}

// The OpenAPI document lists exactly the routes served, and its schemas have exactly the fields
// of the response types, so neither can drift from the other.
func TestOpenAPIMatchesRoutesAndTypes(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	s := &Server{cfg: Config{APIEnabled: true}}
	var served, documented []string
	for _, rt := range s.buildRoutes() {
		served = append(served, rt.method+" "+rt.path)
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(served)
	sort.Strings(documented)
	if !slices.Equal(served, documented) {
		t.Errorf("documented %v, served %v", documented, served)
	}
	for name, typ := range map[string]any{
		"Health": HealthResponse{}, "ProcessResponse": ProcessResponse{}, "Status": StatusResponse{}, "Progress": Progress{},
		"Result": Result{}, "Metadata": Metadata{}, "Parameters": parameters{}, "Error": errorBody{},
		"LoadBalancerHealth": LoadBalancerHealth{}, "AppInfo": AppInfo{},
		"ValidationError": validationBody{},
	} {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		var props []string
		for p := range schema.Properties {
			props = append(props, p)
		}
		sort.Strings(props)
		if fields := jsonFields(reflect.TypeOf(typ)); !slices.Equal(props, fields) {
			t.Errorf("schema %s has %v, type has %v", name, props, fields)
		}
	}
	// The request schema names every field the parser reads.
	var req []string
	for p := range doc.Components.Schemas["ProcessRequest"].Properties {
		req = append(req, p)
	}
	sort.Strings(req)
	if want := []string{"batch_size", "chunk_size", "data_source", "end_date", "namespace", "priority", "question_id", "s3_key", "start_date", "sync_mode"}; !slices.Equal(req, want) {
		t.Errorf("ProcessRequest schema has %v, want %v", req, want)
	}
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
