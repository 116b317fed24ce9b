package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// listChanges is one push to the list page: rows to add or replace, and rows gone.
type listChanges struct {
	Upsert []Summary `json:"upsert"`
	Delete []string  `json:"delete"` // namespace/name
}

// handleStream is the Server-Sent Events stream of the list page, or with ?ingestion=ns/name of
// one ingestion's page. It sends the whole view first, then what changed, at most once per
// UpdateInterval; it ends when the client goes away or its key stops being accepted.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, k apikeys.Key) {
	var only *types.NamespacedName
	mask := changeIngestion
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
		mask = changeIngestion | changeJobs | changeEvents
	}
	rc := http.NewResponseController(w)
	// The shim's server has read and write timeouts for ordinary requests; a stream lives on,
	// and sets a write deadline per message instead.
	_ = rc.SetReadDeadline(time.Time{})
	ctx := r.Context()
	sub := s.hub.subscribe(only, mask, scope.Allows)
	defer s.hub.unsubscribe(sub)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx-style proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", event, err)
		}
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	full := func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if only != nil {
			return s.sendDetail(rctx, send, *only)
		}
		items, err := s.list(rctx, scope)
		if err != nil {
			return send("failure", apiError{Error: err.Error()})
		}
		return send("snapshot", map[string]any{"items": items})
	}
	if err := full(); err != nil {
		return
	}
	keep := time.NewTicker(s.cfg.KeepAlive)
	defer keep.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keep.C:
			// A key removed or rotated ends its open streams too, and so does a change of its
			// namespaces (the page reconnects with the new ones).
			if nk, err := s.session(ctx, r); err != nil || s.scopeOf(nk).String() != scope.String() {
				_ = send("signedout", apiError{Error: "the session ended: sign in again"})
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
			// Coalesce: whatever else changes before the interval is up goes in the same push.
			if wait := s.cfg.UpdateInterval - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			keys, resync := sub.take()
			var err error
			switch {
			case resync || (only != nil && len(keys) > 0):
				err = full()
			case len(keys) > 0:
				err = s.sendChanges(ctx, send, keys)
			}
			if err != nil {
				return
			}
			last = time.Now()
		}
	}
}

func (s *Server) sendDetail(ctx context.Context, send func(string, any) error, key types.NamespacedName) error {
	d, found, err := s.get(ctx, key)
	switch {
	case err != nil:
		return send("failure", apiError{Error: err.Error()})
	case !found:
		return send("gone", map[string]string{"key": key.String()})
	}
	return send("detail", d)
}

func (s *Server) sendChanges(ctx context.Context, send func(string, any) error, keys []types.NamespacedName) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ch := listChanges{Upsert: []Summary{}, Delete: []string{}}
	now := s.now()
	for _, k := range keys {
		var obj v1alpha1.CsvIngestion
		if err := s.deps.Reader.Get(rctx, k, &obj); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return send("failure", apiError{Error: err.Error()})
			}
			ch.Delete = append(ch.Delete, k.Namespace+"/"+k.Name)
			continue
		}
		ch.Upsert = append(ch.Upsert, summarize(&obj, now))
	}
	return send("changes", ch)
}
