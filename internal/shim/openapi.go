package shim

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"strings"
)

// openAPIDoc describes every endpoint; a test checks it against the routes and response types.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPIFor is the document with only the paths this server serves (the task API may be off).
func openAPIFor(routes []route) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		return nil, err
	}
	paths, _ := doc["paths"].(map[string]any)
	served := map[string]map[string]bool{}
	for _, rt := range routes {
		if served[rt.path] == nil {
			served[rt.path] = map[string]bool{}
		}
		served[rt.path][strings.ToLower(rt.method)] = true
	}
	for p, ops := range paths {
		m, _ := ops.(map[string]any)
		for method := range m {
			if !served[p][method] {
				delete(m, method)
			}
		}
		if len(m) == 0 {
			delete(paths, p)
		}
	}
	return json.Marshal(doc)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.openapi)
}
