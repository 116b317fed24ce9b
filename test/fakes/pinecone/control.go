package pinecone

import (
	"encoding/json"
	"net/http"
	"strings"
)

// indexModel is the subset of Pinecone's IndexModel that go-pinecone's DescribeIndex reads.
// A serverless spec must carry read_capacity with a mode: go-pinecone fails to decode without it.
type indexModel struct {
	Name               string            `json:"name"`
	Dimension          int               `json:"dimension"`
	Metric             string            `json:"metric"`
	Host               string            `json:"host"`
	VectorType         string            `json:"vector_type"`
	DeletionProtection string            `json:"deletion_protection"`
	Tags               map[string]string `json:"tags"`
	Spec               map[string]any    `json:"spec"`
	Status             struct {
		Ready bool   `json:"ready"`
		State string `json:"state"`
	} `json:"status"`
}

func (s *Server) model(idx *Index) indexModel {
	m := indexModel{
		Name:               idx.name,
		Dimension:          idx.dim,
		Metric:             "cosine",
		Host:               idx.Host(),
		VectorType:         "dense",
		DeletionProtection: "disabled",
		Tags:               map[string]string{},
		Spec: map[string]any{"serverless": map[string]any{
			"cloud":         "aws",
			"region":        "us-east-1",
			"read_capacity": map[string]any{"mode": "OnDemand", "status": map[string]any{"state": "Ready"}},
		}},
	}
	m.Status.Ready, m.Status.State = true, "Ready"
	return m
}

// serveControl answers GET /indexes and GET /indexes/{name}.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	s.sawAPIVersion(r.Header.Get("X-Pinecone-Api-Version"))
	if !s.keyOK(r.Header.Get("Api-Key")) {
		writeControlError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Invalid API Key")
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path != "/indexes" && !strings.HasPrefix(path, "/indexes/") {
		writeControlError(w, http.StatusNotFound, "NOT_FOUND", "Not found: "+r.URL.Path)
		return
	}
	if r.Method != http.MethodGet {
		writeControlError(w, http.StatusMethodNotAllowed, "UNIMPLEMENTED", "The fake supports only describing and listing indexes")
		return
	}
	if path == "/indexes" {
		list := struct {
			Indexes []indexModel `json:"indexes"`
		}{Indexes: []indexModel{}}
		for _, n := range s.names {
			list.Indexes = append(list.Indexes, s.model(s.indexes[n]))
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	name := strings.TrimPrefix(path, "/indexes/")
	idx := s.indexes[name]
	if idx == nil || strings.Contains(name, "/") {
		writeControlError(w, http.StatusNotFound, "NOT_FOUND", "Resource "+name+" not found")
		return
	}
	writeJSON(w, http.StatusOK, s.model(idx))
}

// writeControlError writes Pinecone's REST error body, which go-pinecone decodes into its
// PineconeError (it needs a non-zero status field).
func writeControlError(w http.ResponseWriter, status int, code, msg string) {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		Status int `json:"status"`
	}
	body.Error.Code, body.Error.Message, body.Status = code, msg, status
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client hung up; nothing to do
}
