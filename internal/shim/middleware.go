package shim

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/httpmetrics"
)

// streamRoute is the web UI's event stream: counted, but not timed (it lasts as long as the page).
const streamRoute = "GET /ui/api/stream"

// route is one endpoint; the OpenAPI test checks the document against this table.
type route struct {
	method  string
	path    string
	private bool // behind X-API-Key and the rate limits
	write   bool // changes tasks: refused to read-only keys
	handler http.HandlerFunc
}

func (s *Server) buildRoutes() []route {
	rs := []route{
		{method: http.MethodGet, path: "/api/v1/health", handler: s.handleHealth},
		{method: http.MethodGet, path: "/health", handler: s.handleStaticHealth},
		{method: http.MethodGet, path: "/", handler: s.handleRoot},
		{method: http.MethodGet, path: "/api/v1/openapi.json", handler: s.handleOpenAPI},
	}
	if s.cfg.APIEnabled {
		rs = append(rs,
			route{method: http.MethodPost, path: "/api/v1/process", private: true, write: true, handler: s.handleProcess},
			route{method: http.MethodGet, path: "/api/v1/status/{task_id}", private: true, handler: s.handleStatus},
			route{method: http.MethodGet, path: "/api/v1/tasks", private: true, handler: s.handleList},
			route{method: http.MethodDelete, path: "/api/v1/task/{task_id}", private: true, write: true, handler: s.handleCancel},
		)
	}
	return rs
}

func (s *Server) buildHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes {
		h := rt.handler
		if rt.private {
			h = s.guard(h, rt.write)
		}
		pattern := rt.path
		if pattern == "/" {
			pattern = "/{$}" // the root only, not every path
		}
		mux.Handle(rt.method+" "+pattern, h)
		httpmetrics.Routes(rt.method + " " + pattern)
	}
	if s.deps.UI != nil {
		ui := s.limitClient(s.deps.UI)
		mux.Handle("/ui/", ui)
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	}
	return s.outer(jsonFallback(mux))
}

// reqInfo is what the outer middleware learns of a request, for handlers and logs.
type reqInfo struct {
	id     string
	client string
}

type reqInfoKey struct{}

func info(ctx context.Context) reqInfo {
	ri, _ := ctx.Value(reqInfoKey{}).(reqInfo)
	return ri
}

// requestIDPattern is what an incoming X-Request-ID may look like to be kept; anything else (it
// ends up in logs and annotations) is replaced by a fresh id.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// outer gives every request an id (X-Request-ID in and out), a body limit, an access log line and
// a JSON 500 instead of a dropped connection if a handler panics.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := reqInfo{id: r.Header.Get("X-Request-ID"), client: clientAddr(r, s.cfg.ForwardedForHops)}
		if !requestIDPattern.MatchString(ri.id) {
			ri.id = uuid.NewString()
		}
		w.Header().Set("X-Request-ID", ri.id)
		r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			// The mux (the UI's too) has set the pattern that matched on r by now.
			httpmetrics.Observe(r.Pattern, sw.status(), time.Since(start), r.Pattern == streamRoute)
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
					panic(p)
				}
				s.log.Error(errors.New("handler panicked"), "request failed", "panic", p,
					"requestID", ri.id, "method", r.Method, "path", r.URL.Path)
				if !sw.wrote {
					writeError(sw, http.StatusInternalServerError, "Internal server error")
				}
			}
			// Never the key or the query: only what identifies the request.
			s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status(),
				"duration", time.Since(start).String(), "requestID", ri.id, "client", ri.client,
				"bytes", sw.bytes)
		}()
		next.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status code for the access log.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
	bytes int64
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.code, w.wrote = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.code
}

// jsonFallback answers what the mux has no route for (404, 405) in JSON, as FastAPI did, instead
// of the mux's plain text.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.code < 400 {
			// A redirect (path cleaning): let the mux answer it.
			mux.ServeHTTP(w, r)
			return
		}
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		writeError(w, rec.code, http.StatusText(rec.code))
	})
}

// recorder keeps the status and headers the mux's own 404/405 handlers set, and drops their body.
type recorder struct {
	header http.Header
	code   int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// limitClient puts h behind the per-client rate limit only (the web UI authenticates itself).
func (s *Server) limitClient(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := s.ipRL.allow(info(r.Context()).client, time.Now()); !ok {
			httpmetrics.Limited(httpmetrics.LimitClient)
			tooManyRequests(w, wait)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// guard puts the task API behind the per-client rate limit (first, so key guessing is slowed
// too), the API key, and the per-key rate limit. A read-only key passes only where write is false.
func (s *Server) guard(next http.HandlerFunc, write bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		ri := info(r.Context())
		if ok, wait := s.ipRL.allow(ri.client, now); !ok {
			httpmetrics.Limited(httpmetrics.LimitClient)
			tooManyRequests(w, wait)
			return
		}
		key := r.Header.Get("X-API-Key")
		if key == "" {
			writeError(w, http.StatusUnauthorized, detailKeyMissing)
			return
		}
		keys, err := s.cfg.APIKeys(r.Context())
		if err != nil {
			s.log.Error(err, "cannot read API keys", "requestID", ri.id)
			writeError(w, http.StatusServiceUnavailable, "API keys are unavailable; try again later")
			return
		}
		k, ok := apikeys.Match(key, keys)
		if ok {
			k.Write = true // every key of --api-keys-path may write, as it always could
		} else {
			ro, err := s.readOnlyKeys(r.Context())
			if err != nil {
				s.log.Error(err, "cannot read read-only API keys", "requestID", ri.id)
				writeError(w, http.StatusServiceUnavailable, "API keys are unavailable; try again later")
				return
			}
			if k, ok = apikeys.Match(key, ro); !ok {
				writeError(w, http.StatusUnauthorized, detailKeyInvalid)
				return
			}
			k.Write = false
			if write {
				writeError(w, http.StatusForbidden, detailKeyReadOnly)
				return
			}
		}
		if ok, wait := s.keyRL.allow(keyID(key), now); !ok {
			httpmetrics.Limited(httpmetrics.LimitKey)
			tooManyRequests(w, wait)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{key: k, scope: s.scopeOf(k)})))
	}
}

func (s *Server) readOnlyKeys(ctx context.Context) ([]apikeys.Key, error) {
	if s.cfg.ReadOnlyKeys == nil {
		return nil, nil
	}
	return s.cfg.ReadOnlyKeys(ctx)
}

func tooManyRequests(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
	writeError(w, http.StatusTooManyRequests, "Rate limit exceeded; retry after the time in Retry-After")
}
