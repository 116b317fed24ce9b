package openai_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// BenchmarkEmbeddings measures the fake's own cost per request of 100 inputs at 1536 dimensions,
// served in-process, with a word-count tokenizer so that the tokenizer's cost is left out.
func BenchmarkEmbeddings(b *testing.B) {
	for _, format := range []string{"base64", "float"} {
		b.Run(format, func(b *testing.B) {
			s, err := fake.Start(fake.Options{CountTokens: func(s string) int { return len(strings.Fields(s)) }})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			inputs := make([]string, 100)
			for i := range inputs {
				inputs[i] = fmt.Sprintf("row %d: some realistic text about a product and its description", i)
			}
			body, _ := json.Marshal(map[string]any{"model": "text-embedding-3-small", "input": inputs, "encoding_format": format})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest(http.MethodPost, "/v1/embeddings", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer k")
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
