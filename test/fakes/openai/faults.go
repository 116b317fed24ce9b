package openai

import (
	"net/http"
	"strconv"
	"strings"
)

// Misbehaviours a test can switch on, each the shape of something the real API (or a proxy in
// front of it) does, so every guard in the embedder has a test that fails without it. They live
// apart from the request path in server.go, which calls the three hooks below.

// DefaultRefusal is the 400 message RefuseInputs answers with when none is given: what the API
// says about an input it will not embed.
const DefaultRefusal = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."

// extras is the misbehaviour state, guarded by Server.mu.
type extras struct {
	refuse    func(text string) bool
	refuseMsg string
	refused   int64 // requests answered 400 by refuse
	reorder   bool
	floats    bool
	truncateN int
}

// RefuseInputs makes any request that holds an input for which refuse returns true fail with a
// 400 invalid_request_error carrying message (DefaultRefusal when empty), as the API refuses a
// whole request for one bad input. nil turns it off.
func (s *Server) RefuseInputs(refuse func(text string) bool, message string) {
	if message == "" {
		message = DefaultRefusal
	}
	s.mu.Lock()
	s.x.refuse, s.x.refuseMsg = refuse, message
	s.mu.Unlock()
}

// RefuseMarker refuses inputs that contain marker (see RefuseInputs).
func (s *Server) RefuseMarker(marker, message string) {
	s.RefuseInputs(func(text string) bool { return strings.Contains(text, marker) }, message)
}

// Refused is the number of requests answered 400 by RefuseInputs.
func (s *Server) Refused() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.x.refused
}

// SetReorder makes successful responses list the embeddings in reverse order (each still with
// its index), as the API does not promise input order.
func (s *Server) SetReorder(on bool) {
	s.mu.Lock()
	s.x.reorder = on
	s.mu.Unlock()
}

// SetFloatResponses makes successful responses carry JSON float arrays even when base64 was
// asked for, as some OpenAI-compatible servers do.
func (s *Server) SetFloatResponses(on bool) {
	s.mu.Lock()
	s.x.floats = on
	s.mu.Unlock()
}

// TruncateNext makes the next n successful responses stop after half their body, with the full
// Content-Length declared: the connection drops mid-body, as a proxy or a reset does.
func (s *Server) TruncateNext(n int) {
	s.mu.Lock()
	s.x.truncateN = n
	s.mu.Unlock()
}

// refusedInput is the hook after validation: the 400 for a refused input, or 0.
func (s *Server) refusedInput(texts []string) (int, []byte) {
	s.mu.Lock()
	refuse, msg := s.x.refuse, s.x.refuseMsg
	s.mu.Unlock()
	if refuse == nil {
		return 0, nil
	}
	for _, t := range texts {
		if refuse(t) {
			s.mu.Lock()
			s.x.refused++
			s.mu.Unlock()
			return http.StatusBadRequest, errBody(msg, "invalid_request_error", "", "")
		}
	}
	return 0, nil
}

// shape is the hook before encoding: whether to answer base64, and the order of the data.
func (s *Server) shape(b64 bool, n int) (bool, func(k int) int) {
	s.mu.Lock()
	floats, reorder := s.x.floats, s.x.reorder
	s.mu.Unlock()
	order := func(k int) int { return k }
	if reorder {
		order = func(k int) int { return n - 1 - k }
	}
	return b64 && !floats, order
}

// deliver is the hook that writes a successful body, cut short when TruncateNext asks.
func (s *Server) deliver(w http.ResponseWriter, r *http.Request, body []byte) {
	s.mu.Lock()
	cut := s.x.truncateN > 0
	if cut {
		s.x.truncateN--
	}
	s.mu.Unlock()
	if !cut {
		s.reply(w, r, http.StatusOK, body, nil)
		return
	}
	s.mu.Lock()
	s.stats.ByStatus[http.StatusOK]++
	s.mu.Unlock()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body[:len(body)/2])
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// http.ErrAbortHandler drops the connection without logging a stack.
	panic(http.ErrAbortHandler)
}
