// Package webui is the live web view of CsvIngestions the manager serves at /ui/ on the shim's
// port: a list page, a page per ingestion, and suspend, resume and cancel. Pages are plain HTML,
// CSS and JavaScript embedded in the binary. Data comes from the manager's informer cache and is
// pushed to browsers with Server-Sent Events: browsers never poll the API server, and a change is
// sent at most a few times a second per page however often the resource changes.
package webui

import (
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/httpmetrics"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

//go:embed assets
var assetFS embed.FS

// Config shapes the UI. Zero values take the defaults noted.
type Config struct {
	// Keys are the API keys: a read-only or read-write key signs in to view, a read-write key
	// is needed for actions. Nil: no keys are configured, and the UI says so and shows nothing.
	Keys apikeys.Source
	// UpdateInterval is the least time between two pushes to one page; default 500ms (at most
	// two updates a second per page).
	UpdateInterval time.Duration
	// KeepAlive is how often an idle stream sends a comment (and re-checks its session);
	// default 15s.
	KeepAlive time.Duration
	// SessionTTL is how long a sign-in lasts; default 1h.
	SessionTTL time.Duration
	// PublicOrigin is the scheme://host[:port] browsers load the UI from when a proxy in front
	// rewrites Host (the CSRF check then compares Origin with it); empty: the request's Host.
	PublicOrigin string
	// DefaultNamespaces is the scope of a key that names none (apikeys.Key.Namespaces): the
	// namespaces whose ingestions it sees and acts on. Empty: such a key sees nothing (it signs in,
	// and the page says it has no namespace). Another namespace's ingestion is 404 to a key.
	DefaultNamespaces []string
	// WatchNamespaces are the namespaces the cache holds; nil: every one. A key's namespaces
	// outside them show nothing (they are skipped, not errors).
	WatchNamespaces []string
	// MaxEvents shown on a detail page; default 20.
	MaxEvents int
	// MaxStreams is how many live pages (event streams) the server keeps open at once, default
	// 256; past it a new one gets 503 with Retry-After.
	MaxStreams int
	// MaxStreamsPerKey is how many one key may hold, default 8; past it 429 with Retry-After.
	MaxStreamsPerKey int
}

// Deps are the UI's collaborators.
type Deps struct {
	// Reader reads CsvIngestions, their Jobs and events: the manager's cache. Required.
	Reader client.Reader
	// Writer patches spec.suspend and spec.cancel. Required.
	Writer client.Client
	// Informers of the cache, whose event handlers drive the live updates. Nil: no live updates
	// unless the caller publishes (tests).
	Informers cache.Informers
	// Recorder records who did each action on the ingestion. Required.
	Recorder events.EventRecorder
	Log      logr.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Revocations are the signed-out sessions, shared by the replicas (LeaseRevocations); nil:
	// this process only.
	Revocations Revocations
}

// Server is the web UI. Handler serves it; Start (a manager Runnable) hooks it to the informers.
type Server struct {
	cfg   Config
	deps  Deps
	log   logr.Logger
	hub   *hub
	slots *streamSlots
	// revocations are the signed-out sessions.
	revocations Revocations
	static      http.Handler
	mux         *http.ServeMux
	// detailComputes counts detail pages built (tests: once per change, not per open page).
	detailComputes atomic.Int64
}

// New checks deps and builds the server.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Reader == nil || deps.Writer == nil || deps.Recorder == nil {
		return nil, errors.New("webui: a reader, a writer and an event recorder are required")
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = 500 * time.Millisecond
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = time.Hour
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 20
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 256
	}
	if cfg.MaxStreamsPerKey <= 0 {
		cfg.MaxStreamsPerKey = 8
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	sub, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, fmt.Errorf("webui: embedded assets: %w", err)
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Log.WithName("webui"), hub: newHub(),
		slots: &streamSlots{perKey: map[string]int{}, max: cfg.MaxStreams, maxPerKey: cfg.MaxStreamsPerKey}, revocations: deps.Revocations}
	if s.revocations == nil {
		s.revocations = MemoryRevocations(deps.Now)
	}
	s.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /ui/{$}", s.page(sub))
	s.mux.Handle("GET /ui/static/", s.static)
	for _, rt := range s.routes() {
		s.mux.HandleFunc(rt.method+" "+rt.path, rt.handler)
		httpmetrics.Routes(rt.method + " " + rt.path)
	}
	httpmetrics.Routes("GET /ui/{$}", "GET /ui/static/")
	return s, nil
}

// access is what a route needs of the caller.
type access int

const (
	public access = iota // no key: sign-in, sign-out, the session check
	read                 // a signed-in read-only or read-write key
	write                // a signed-in read-write key (read-only: 403)
)

// uiRoute is one API endpoint of the UI; docs/security.md's key table is checked against these.
type uiRoute struct {
	method, path string
	access       access
	handler      http.HandlerFunc
}

func (s *Server) routes() []uiRoute {
	return []uiRoute{
		{http.MethodGet, "/ui/api/session", public, s.handleSession},
		{http.MethodPost, "/ui/api/login", public, s.handleLogin},
		{http.MethodPost, "/ui/api/logout", public, s.handleLogout},
		{http.MethodGet, "/ui/api/ingestions", read, s.authed(s.handleList)},
		{http.MethodGet, "/ui/api/ingestions/{ns}/{name}", read, s.authed(s.handleDetail)},
		{http.MethodGet, "/ui/api/stream", read, s.authed(s.handleStream)},
		{http.MethodPost, "/ui/api/ingestions/{ns}/{name}/{action}", write, s.handleAction},
	}
}

func (s *Server) now() time.Time { return s.deps.Now() }

// Handler serves every path under /ui/.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The pages load only their own scripts and styles and talk only to this origin.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-store")
		}
		s.mux.ServeHTTP(w, r)
	})
}

// NeedLeaderElection is false: every replica serves the UI from its own cache.
func (s *Server) NeedLeaderElection() bool { return false }

// Start runs the pump that feeds the streams and hooks the hub to the cache's informers, and
// waits for ctx to end.
func (s *Server) Start(ctx context.Context) error {
	go s.pump(ctx)
	if s.deps.Informers == nil {
		<-ctx.Done()
		return nil
	}
	type reg struct {
		inf cache.Informer
		h   toolscache.ResourceEventHandlerRegistration
	}
	var regs []reg
	defer func() {
		for _, r := range regs {
			_ = r.inf.RemoveEventHandler(r.h)
		}
	}()
	hook := func(obj client.Object, key func(any) (types.NamespacedName, bool), c change) error {
		// Events may be unreadable (RBAC of an older install): do not block the UI on them.
		inf, err := s.deps.Informers.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("webui: informer for %T: %w", obj, err)
		}
		pub := func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if k, ok := key(o); ok {
				s.hub.publish(k, c)
			}
		}
		h, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: pub, UpdateFunc: func(_, n any) { pub(n) }, DeleteFunc: pub,
		})
		if err != nil {
			return fmt.Errorf("webui: event handler for %T: %w", obj, err)
		}
		regs = append(regs, reg{inf, h})
		return nil
	}
	ingestionKey := func(o any) (types.NamespacedName, bool) {
		c, ok := o.(*v1alpha1.CsvIngestion)
		if !ok {
			return types.NamespacedName{}, false
		}
		return types.NamespacedName{Namespace: c.Namespace, Name: c.Name}, true
	}
	jobKey := func(o any) (types.NamespacedName, bool) {
		j, ok := o.(*batchv1.Job)
		if !ok || j.Labels[worker.LabelName] == "" {
			return types.NamespacedName{}, false
		}
		return types.NamespacedName{Namespace: j.Namespace, Name: j.Labels[worker.LabelName]}, true
	}
	eventKey := func(o any) (types.NamespacedName, bool) {
		e, ok := o.(*corev1.Event)
		if !ok || e.InvolvedObject.Kind != "CsvIngestion" {
			return types.NamespacedName{}, false
		}
		return types.NamespacedName{Namespace: e.InvolvedObject.Namespace, Name: e.InvolvedObject.Name}, true
	}
	if err := hook(&v1alpha1.CsvIngestion{}, ingestionKey, changeIngestion); err != nil {
		return err
	}
	if err := hook(&batchv1.Job{}, jobKey, changeJobs); err != nil {
		return err
	}
	if err := hook(&corev1.Event{}, eventKey, changeEvents); err != nil {
		return err
	}
	s.log.Info("live updates on", "updateInterval", s.cfg.UpdateInterval.String())
	<-ctx.Done()
	return nil
}

// page serves the single HTML page; the script shows the list or an ingestion by the URL's hash.
func (s *Server) page(assets fs.FS) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := fs.ReadFile(assets, "index.html")
		if err != nil {
			http.Error(w, "page missing", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b)
	}
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func fail(w http.ResponseWriter, code int, msg string) { writeJSON(w, code, apiError{Error: msg}) }

// sessionError answers a request whose session could not be established.
func sessionError(w http.ResponseWriter, err error) {
	if errors.Is(err, errSessionsDown) {
		fail(w, http.StatusServiceUnavailable, "sessions cannot be checked now (the API server is unreachable); try again")
		return
	}
	if errors.Is(err, errKeysDown) {
		fail(w, http.StatusServiceUnavailable, "API keys are unavailable or none are configured; ask the operator's administrator")
		return
	}
	fail(w, http.StatusUnauthorized, "sign in with an API key")
}

type keyCtx struct{}

// authed serves next only to a signed-in session (a read-only or read-write key).
func (s *Server) authed(next func(http.ResponseWriter, *http.Request, apikeys.Key)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		k, err := s.session(r.Context(), r)
		if err != nil {
			sessionError(w, err)
			return
		}
		next(w, r, k)
	}
}

// scopeOf is the namespaces key may see and act on.
func (s *Server) scopeOf(k apikeys.Key) apikeys.Scope {
	return apikeys.ScopeOf(k, s.cfg.DefaultNamespaces)
}

// sessionView is what the page learns of its key: the name, whether it may act and where, never
// the key.
type sessionView struct {
	Name  string `json:"name"`
	Write bool   `json:"write"`
	// Namespaces the key sees; ["*"] for every namespace.
	Namespaces []string `json:"namespaces"`
}

func (s *Server) view(k apikeys.Key) sessionView {
	sc := s.scopeOf(k)
	ns := sc.Namespaces()
	if sc.All() {
		ns = []string{apikeys.AllNamespaces}
	}
	return sessionView{Name: k.Name, Write: k.Write, Namespaces: ns}
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	k, err := s.session(r.Context(), r)
	if err != nil {
		sessionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(k))
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if why := sameOrigin(r, s.cfg.PublicOrigin); why != "" {
		fail(w, http.StatusForbidden, why)
		return
	}
	var body struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&body); err != nil {
		fail(w, http.StatusBadRequest, "the body must be JSON with the key")
		return
	}
	keys, err := s.keys(r.Context())
	if err != nil {
		sessionError(w, err)
		return
	}
	k, ok := apikeys.Match(strings.TrimSpace(body.Key), keys)
	if !ok {
		fail(w, http.StatusUnauthorized, "invalid API key")
		return
	}
	exp := s.now().Add(s.cfg.SessionTTL)
	s.setSession(w, r, makeSession(k, exp, newSessionID()), exp)
	s.log.Info("signed in", "key", k.Name, "write", k.Write, "namespaces", s.scopeOf(k).String())
	writeJSON(w, http.StatusOK, s.view(k))
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if why := sameOrigin(r, s.cfg.PublicOrigin); why != "" {
		fail(w, http.StatusForbidden, why)
		return
	}
	// The session ends on the server too: a copy of the cookie is refused from now on.
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
		if keys, err := s.keys(r.Context()); err == nil {
			if k, sid, exp, ok := checkSession(c.Value, keys, s.now()); ok {
				if err := s.revocations.Revoke(r.Context(), k.Name, sid, exp); err != nil {
					s.log.Error(err, "sign-out: cannot revoke the session", "key", k.Name)
					fail(w, http.StatusServiceUnavailable, "cannot end the session on the server now; try again")
					return
				}
				s.log.Info("signed out", "key", k.Name)
			}
		}
	}
	s.setSession(w, r, "", time.Time{})
	w.WriteHeader(http.StatusNoContent)
}

// readCtx bounds cache reads: an informer that cannot sync must not hang a page.
func readCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 5*time.Second)
}

// list is the list page of the ingestions in scope.
func (s *Server) list(ctx context.Context, scope apikeys.Scope) ([]Summary, error) {
	var items []v1alpha1.CsvIngestion
	if scope.All() {
		var l v1alpha1.CsvIngestionList
		if err := s.deps.Reader.List(ctx, &l, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("listing CsvIngestions: %w", err)
		}
		items = l.Items
	} else {
		for _, ns := range scope.Namespaces() {
			if s.cfg.WatchNamespaces != nil && !slices.Contains(s.cfg.WatchNamespaces, ns) {
				continue
			}
			var l v1alpha1.CsvIngestionList
			if err := s.deps.Reader.List(ctx, &l, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
				return nil, fmt.Errorf("listing CsvIngestions in %s: %w", ns, err)
			}
			items = append(items, l.Items...)
		}
	}
	now := s.now()
	out := make([]Summary, 0, len(items))
	for i := range items {
		out = append(out, summarize(&items[i], now))
	}
	return out, nil
}

// List pages of the UI API: ?limit= (default and most MaxListPage) and ?continue= (the token of
// the previous page), in namespace/name order.
const MaxListPage = 1000

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, k apikeys.Key) {
	q := r.URL.Query()
	limit := MaxListPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListPage {
			fail(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", MaxListPage))
			return
		}
		limit = n
	}
	after := ""
	if v := q.Get("continue"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || !strings.Contains(string(b), "/") {
			fail(w, http.StatusBadRequest, "continue must be the token of an earlier page")
			return
		}
		after = string(b)
	}
	ctx, cancel := readCtx(r)
	defer cancel()
	items, err := s.list(ctx, s.scopeOf(k))
	if err != nil {
		s.log.Error(err, "list page")
		fail(w, http.StatusServiceUnavailable, "cannot read ingestions: "+err.Error())
		return
	}
	sort.Slice(items, func(i, j int) bool {
		return items[i].Namespace+"/"+items[i].Name < items[j].Namespace+"/"+items[j].Name
	})
	start := sort.Search(len(items), func(i int) bool { return items[i].Namespace+"/"+items[i].Name > after })
	page := items[start:min(len(items), start+limit)]
	body := map[string]any{"items": page}
	if start+limit < len(items) {
		last := page[len(page)-1]
		body["continue"] = base64.RawURLEncoding.EncodeToString([]byte(last.Namespace + "/" + last.Name))
	}
	writeJSON(w, http.StatusOK, body)
}

// IndexEventUID indexes the cached events by the uid of the object they are about, so a detail
// page reads its ingestion's events, not every event of the namespace.
const IndexEventUID = "involvedObject.uid"

// RegisterIndexes adds the UI's cache indexes; call it before the cache starts.
func RegisterIndexes(ctx context.Context, fi client.FieldIndexer) error {
	if err := fi.IndexField(ctx, &corev1.Event{}, IndexEventUID, func(o client.Object) []string {
		if e, ok := o.(*corev1.Event); ok && e.InvolvedObject.UID != "" {
			return []string{string(e.InvolvedObject.UID)}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing events by object: %w", err)
	}
	return nil
}

// get reads one ingestion's page; found is false when it does not exist.
func (s *Server) get(ctx context.Context, key types.NamespacedName) (d Detail, found bool, err error) {
	var obj v1alpha1.CsvIngestion
	if err := s.deps.Reader.Get(ctx, key, &obj); err != nil {
		if apierrors.IsNotFound(err) {
			return Detail{}, false, nil
		}
		return Detail{}, false, fmt.Errorf("reading CsvIngestion %s: %w", key, err)
	}
	var jobs batchv1.JobList
	if err := s.deps.Reader.List(ctx, &jobs, client.InNamespace(key.Namespace),
		client.MatchingLabels{worker.LabelUID: string(obj.UID), worker.LabelRole: worker.RoleChunk}); err != nil {
		return Detail{}, false, fmt.Errorf("listing the Jobs of %s: %w", key, err)
	}
	var evs corev1.EventList
	var mine []corev1.Event
	// The index (RegisterIndexes) reads this ingestion's events, not the namespace's.
	if err := s.deps.Reader.List(ctx, &evs, client.InNamespace(key.Namespace),
		client.MatchingFields{IndexEventUID: string(obj.UID)}, client.UnsafeDisableDeepCopy); err != nil {
		// The page still shows the ingestion; it says the events are unavailable.
		s.log.Error(err, "listing events", "ingestion", key.String())
		mine = []corev1.Event{{Type: corev1.EventTypeWarning, Reason: "EventsUnavailable",
			Message: "the UI cannot read events (RBAC: list and watch on events): " + err.Error()}}
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.UID == obj.UID {
			mine = append(mine, e)
		}
	}
	return detail(&obj, jobs.Items, mine, s.now(), s.cfg.MaxEvents), true, nil
}

func keyOf(r *http.Request) types.NamespacedName {
	return types.NamespacedName{Namespace: r.PathValue("ns"), Name: r.PathValue("name")}
}

// notFound answers for an ingestion that does not exist or is outside the key's namespaces: the
// same words either way, so a key cannot learn what exists elsewhere.
func notFound(w http.ResponseWriter, key types.NamespacedName) {
	fail(w, http.StatusNotFound, "no CsvIngestion "+key.String())
}

func (s *Server) handleDetail(w http.ResponseWriter, r *http.Request, k apikeys.Key) {
	if !s.scopeOf(k).Allows(keyOf(r).Namespace) {
		notFound(w, keyOf(r))
		return
	}
	ctx, cancel := readCtx(r)
	defer cancel()
	d, found, err := s.get(ctx, keyOf(r))
	switch {
	case err != nil:
		s.log.Error(err, "detail page")
		fail(w, http.StatusServiceUnavailable, "cannot read the ingestion: "+err.Error())
	case !found:
		notFound(w, keyOf(r))
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

// The detail page lists an ingestion's recent events from the manager's cache (an informer on
// events about CsvIngestions only).
// +kubebuilder:rbac:groups="",resources=events,verbs=list;watch
