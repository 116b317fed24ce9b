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

// maxQueued bounds the pushes one list stream keeps between two writes: past it, the stream
// forgets them and sends a full snapshot instead, so a slow client costs a bounded amount of
// memory however many ingestions change.
const maxQueued = 64

// hub fans changes out from the informer event handlers to the open streams. Publishing never
// blocks: it only notes which ingestions changed. Once per update interval the server's pump
// takes what changed, computes each changed ingestion's list row and each watched ingestion's
// detail once, and hands the same encoded frames to every stream that wants them (sub.push,
// sub.set); each stream writes what it was handed when it next wakes. The cost of an update is
// therefore per changed ingestion, not per open page.
type hub struct {
	mu      sync.Mutex
	subs    map[*sub]struct{}
	pending map[types.NamespacedName]change
}

func newHub() *hub {
	return &hub{subs: map[*sub]struct{}{}, pending: map[types.NamespacedName]change{}}
}

// frame is one encoded Server-Sent Event.
type frame struct {
	event string
	data  []byte
}

// sub is one open stream. only, when set, limits it to one ingestion (a detail page); allowed
// says which namespaces its key may see.
type sub struct {
	only    *types.NamespacedName
	allowed func(namespace string) bool
	wake    chan struct{}

	mu     sync.Mutex
	queue  []frame // list pushes not yet written
	latest *frame  // a detail page's newest state (only the last matters)
	resync bool    // the queue overflowed: send a full snapshot
}

func (h *hub) subscribe(only *types.NamespacedName, allowed func(string) bool) *sub {
	s := &sub{only: only, allowed: allowed, wake: make(chan struct{}, 1)}
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
	if len(h.subs) == 0 {
		return // nobody to tell; a stream opened later starts from a snapshot
	}
	h.pending[key] |= c
}

// takePending returns what changed since the last call, and the streams open now.
func (h *hub) takePending() (map[types.NamespacedName]change, []*sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) == 0 {
		return nil, nil
	}
	p := h.pending
	h.pending = map[types.NamespacedName]change{}
	subs := make([]*sub, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	return p, subs
}

// push queues a list frame for s.
func (s *sub) push(f frame) {
	s.mu.Lock()
	if !s.resync {
		s.queue = append(s.queue, f)
		if len(s.queue) > maxQueued {
			s.queue, s.resync = nil, true
		}
	}
	s.mu.Unlock()
	s.notify()
}

// set replaces a detail stream's pending state.
func (s *sub) set(f frame) {
	s.mu.Lock()
	s.latest = &f
	s.mu.Unlock()
	s.notify()
}

func (s *sub) notify() {
	select {
	case s.wake <- struct{}{}:
	default: // already woken; it will take this too
	}
}

// take returns and clears what was handed to s.
func (s *sub) take() (frames []frame, resync bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	frames, resync = s.queue, s.resync
	if s.latest != nil {
		frames = append(frames, *s.latest)
	}
	s.queue, s.latest, s.resync = nil, nil, false
	return frames, resync
}
