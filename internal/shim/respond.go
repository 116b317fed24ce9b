package shim

import (
	"encoding/json"
	"net/http"
)

// errorBody is FastAPI's error shape, which the old API's clients parse: {"detail": "..."}.
type errorBody struct {
	Detail string `json:"detail"`
}

// validationBody is FastAPI's 422 shape: {"detail": [{"loc": [...], "msg": ..., "type": ...}]}.
type validationBody struct {
	Detail []FieldError `json:"detail"`
}

// FieldError is one invalid input, named by loc: ["body", "batch_size"] or ["query", "limit"].
type FieldError struct {
	Loc  []string `json:"loc"`
	Msg  string   `json:"msg"`
	Type string   `json:"type"`
}

// Messages of the 401s, exactly as the old API wrote them (DESIGN §5).
const (
	detailKeyMissing = "API key is missing"
	detailKeyInvalid = "Invalid API key"
	// detailKeyReadOnly is new (the old API had no read-only keys): a 403, not a 401, since the
	// key is valid.
	detailKeyReadOnly = "This API key is read-only: it may read tasks but not create or cancel them"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types get here; a failure is a bug, reported without a body.
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, detail string) {
	writeJSON(w, code, errorBody{Detail: detail})
}

func writeInvalid(w http.ResponseWriter, errs []FieldError) {
	writeJSON(w, http.StatusUnprocessableEntity, validationBody{Detail: errs})
}
