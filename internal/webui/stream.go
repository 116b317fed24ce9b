package webui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/httpmetrics"
)

// listChanges is one push to the list page: rows to add or replace, and rows gone.
type listChanges struct {
	Upsert []Summary `json:"upsert"`
	Delete []string  `json:"delete"` // namespace/name
}

// sharedChanges is listChanges with rows encoded once for every stream that gets them.
type sharedChanges struct {
	Upsert []json.RawMessage `json:"upsert"`
	Delete []string          `json:"delete"`
}

// streamRetryAfter is what a refused stream is told to wait, in seconds.
const streamRetryAfter = 10

// streamSlots counts open streams per key and in all, so one key cannot hold the server's
// streams (and with them its memory and the cache's readers).
type streamSlots struct {
	mu             sync.Mutex
	perKey         map[string]int
	total          int
	maxPerKey, max int
	refusedKey     int64
	refusedOverall int64
}

// acquire takes a slot for key; code is 0 and release frees it, or code is 429 (the key's cap)
// or 503 (the server's).
func (l *streamSlots) acquire(key string) (release func(), code int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.perKey[key] >= l.maxPerKey:
		l.refusedKey++
		return nil, http.StatusTooManyRequests
	case l.total >= l.max:
		l.refusedOverall++
		return nil, http.StatusServiceUnavailable
	}
	l.perKey[key]++
	l.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perKey[key]--; l.perKey[key] <= 0 {
				delete(l.perKey, key)
			}
		})
	}, 0
}

// slotID names k in streamSlots: its name and a digest of its value, since names repeat across
// the read-write and read-only Secrets and one holder's pages must not use up another's. The
// value itself is not kept.
func slotID(k apikeys.Key) string {
	h := sha256.Sum256([]byte(k.Value))
	return k.Name + "/" + hex.EncodeToString(h[:16])
}

// open is how many streams are open now.
func (l *streamSlots) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// handleStream is the Server-Sent Events stream of the list page, or with ?ingestion=ns/name of
// one ingestion's page. It sends the whole view first, then what the pump hands it (what changed,
// at most once per UpdateInterval); it ends when the client goes away or its key stops being
// accepted or changes namespaces.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, k apikeys.Key) {
	var only *types.NamespacedName
	scope := s.scopeOf(k)
	if v := r.URL.Query().Get("ingestion"); v != "" {
		ns, name, ok := strings.Cut(v, "/")
		if !ok || ns == "" || name == "" {
			fail(w, http.StatusBadRequest, "ingestion must be namespace/name")
			return
		}
		only = &types.NamespacedName{Namespace: ns, Name: name}
		if !scope.Allows(ns) {
			notFound(w, *only)
			return
		}
	}
	release, code := s.slots.acquire(slotID(k))
	if code != 0 {
		w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
		if code == http.StatusTooManyRequests {
			httpmetrics.Limited(httpmetrics.LimitStreamsKey)
			s.log.V(1).Info("stream refused: the key's streams are at their cap", "key", k.Name, "cap", s.cfg.MaxStreamsPerKey)
			fail(w, code, fmt.Sprintf("the API key %q has %d live pages open, the most allowed; close some and retry", k.Name, s.cfg.MaxStreamsPerKey))
			return
		}
		httpmetrics.Limited(httpmetrics.LimitStreamsTotal)
		s.log.Info("stream refused: the server's streams are at their cap", "key", k.Name, "cap", s.cfg.MaxStreams)
		fail(w, code, fmt.Sprintf("the server has %d live pages open, the most it serves; retry later", s.cfg.MaxStreams))
		return
	}
	defer release()
	httpmetrics.StreamOpened()
	defer httpmetrics.StreamClosed()

	rc := http.NewResponseController(w)
	// The shim's server has read and write timeouts for ordinary requests; a stream lives on,
	// and sets a write deadline per message instead.
	_ = rc.SetReadDeadline(time.Time{})
	ctx := r.Context()
	sub := s.hub.subscribe(only, scope.Allows)
	defer s.hub.unsubscribe(sub)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx-style proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(f frame) error {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", f.event, f.data); err != nil {
			return err
		}
		return rc.Flush()
	}
	full := func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if only != nil {
			return write(s.detailFrame(rctx, *only))
		}
		items, err := s.list(rctx, scope)
		if err != nil {
			return write(encodeFrame("failure", apiError{Error: err.Error()}))
		}
		return write(encodeFrame("snapshot", map[string]any{"items": items}))
	}
	if err := full(); err != nil {
		return
	}
	keep := time.NewTicker(s.cfg.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keep.C:
			// A key removed or rotated ends its open streams too, and so does a change of its
			// namespaces (the page reconnects with the new ones).
			if nk, err := s.session(ctx, r); err != nil || s.scopeOf(nk).String() != scope.String() {
				_ = write(encodeFrame("signedout", apiError{Error: "the session ended: sign in again"}))
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		case <-sub.wake:
			frames, resync := sub.take()
			if resync {
				if full() != nil {
					return
				}
				continue
			}
			for _, f := range frames {
				if write(f) != nil {
					return
				}
			}
		}
	}
}

func encodeFrame(event string, v any) frame {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(apiError{Error: "encoding " + event + ": " + err.Error()})
		event = "failure"
	}
	return frame{event: event, data: b}
}

// detailFrame is the state of one ingestion's page: detail, gone, or failure.
func (s *Server) detailFrame(ctx context.Context, key types.NamespacedName) frame {
	s.detailComputes.Add(1)
	d, found, err := s.get(ctx, key)
	switch {
	case err != nil:
		return encodeFrame("failure", apiError{Error: err.Error()})
	case !found:
		return encodeFrame("gone", map[string]string{"key": key.String()})
	}
	return encodeFrame("detail", d)
}

// pump hands what changed to the open streams once per UpdateInterval until ctx ends.
func (s *Server) pump(ctx context.Context) {
	t := time.NewTicker(s.cfg.UpdateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.flush(ctx)
		}
	}
}

// flush computes, once, each changed ingestion's list row and the detail of each changed
// ingestion a page watches, and hands them to the streams that may see them.
func (s *Server) flush(ctx context.Context) {
	pending, subs := s.hub.takePending()
	if len(pending) == 0 || len(subs) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	watched := map[types.NamespacedName][]*sub{}
	var lists []*sub
	for _, sb := range subs {
		if sb.only != nil {
			watched[*sb.only] = append(watched[*sb.only], sb)
		} else {
			lists = append(lists, sb)
		}
	}
	type row struct {
		key  types.NamespacedName
		raw  json.RawMessage // nil: gone
		fail error
	}
	var rows []row
	if len(lists) > 0 {
		now := s.now()
		for key, c := range pending {
			if c&changeIngestion == 0 {
				continue
			}
			var obj v1alpha1.CsvIngestion
			if err := s.deps.Reader.Get(rctx, key, &obj); err != nil {
				if client.IgnoreNotFound(err) != nil {
					rows = append(rows, row{key: key, fail: err})
				} else {
					rows = append(rows, row{key: key})
				}
				continue
			}
			b, err := json.Marshal(summarize(&obj, now))
			if err != nil {
				rows = append(rows, row{key: key, fail: err})
				continue
			}
			rows = append(rows, row{key: key, raw: b})
		}
	}
	for _, sb := range lists {
		ch := sharedChanges{Upsert: []json.RawMessage{}, Delete: []string{}}
		var failed error
		for _, r := range rows {
			if sb.allowed != nil && !sb.allowed(r.key.Namespace) {
				continue
			}
			switch {
			case r.fail != nil:
				failed = r.fail
			case r.raw == nil:
				ch.Delete = append(ch.Delete, r.key.Namespace+"/"+r.key.Name)
			default:
				ch.Upsert = append(ch.Upsert, r.raw)
			}
		}
		if failed != nil {
			sb.push(encodeFrame("failure", apiError{Error: failed.Error()}))
		}
		if len(ch.Upsert)+len(ch.Delete) > 0 {
			sb.push(encodeFrame("changes", ch))
		}
	}
	for key, ss := range watched {
		if _, ok := pending[key]; !ok {
			continue
		}
		f := s.detailFrame(rctx, key)
		for _, sb := range ss {
			sb.set(f)
		}
	}
}
