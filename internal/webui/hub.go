package webui

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// What changed about an ingestion. The list page cares only about the ingestion itself; a detail
// page also about its Jobs (running chunks) and events.
type change uint8

const (
	changeIngestion change = 1 << iota
	changeJobs
	changeEvents
)

// maxDirty bounds what one subscriber remembers between two pushes: past it, the subscriber
// forgets the keys and asks for a full snapshot instead, so a slow client costs a bounded
// amount of memory however many ingestions change.
const maxDirty = 256

// hub fans changes out from the informer event handlers to the open streams. Publishing never
// blocks: each subscriber keeps only a set of changed keys and a one-slot wake-up channel; the
// stream reads the current state from the cache when it next sends, so many changes to one
// ingestion between two sends become one message.
type hub struct {
	mu   sync.Mutex
	subs map[*sub]struct{}
}

func newHub() *hub { return &hub{subs: map[*sub]struct{}{}} }

// sub is one open stream. only, when set, limits it to one ingestion (a detail page); mask says
// which kinds of change it wants.
type sub struct {
	only *types.NamespacedName
	// allowed says which namespaces the stream's key may see: changes elsewhere never reach it.
	allowed func(namespace string) bool
	mask    change
	wake    chan struct{}
	mu      sync.Mutex
	dirty   map[types.NamespacedName]struct{}
	resync  bool
}

func (h *hub) subscribe(only *types.NamespacedName, mask change, allowed func(string) bool) *sub {
	s := &sub{only: only, mask: mask, allowed: allowed, wake: make(chan struct{}, 1), dirty: map[types.NamespacedName]struct{}{}}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *hub) unsubscribe(s *sub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// subscribers is how many streams are open (tests check that closed ones are gone).
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// publish notes that key changed in the way c says.
func (h *hub) publish(key types.NamespacedName, c change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.mask&c == 0 || (s.only != nil && *s.only != key) || (s.allowed != nil && !s.allowed(key.Namespace)) {
			continue
		}
		s.mu.Lock()
		if !s.resync {
			s.dirty[key] = struct{}{}
			if len(s.dirty) > maxDirty {
				s.resync = true
				s.dirty = map[types.NamespacedName]struct{}{}
			}
		}
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default: // already woken; the pending send will carry this change too
		}
	}
}

// take returns and clears what changed since the last take.
func (s *sub) take() (keys []types.NamespacedName, resync bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resync = s.resync
	for k := range s.dirty {
		keys = append(keys, k)
	}
	s.dirty = map[types.NamespacedName]struct{}{}
	s.resync = false
	return keys, resync
}
