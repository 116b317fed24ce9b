package embedding

import (
	"bytes"
	"fmt"
)

// DecodeResponse reads one embeddings response body, as a Batch API output line carries it, with
// the streaming decoder the online path uses, and returns its vectors ordered by their index
// field (every index exactly once) and the prompt tokens billed.
func DecodeResponse(body []byte) ([][]float32, int, error) {
	dec, err := decodeEmbeddings(bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	out := make([][]float32, len(dec.data))
	for _, d := range dec.data {
		if d.index < 0 || d.index >= len(out) || out[d.index] != nil {
			return nil, 0, fmt.Errorf("embeddings response has index %d out of range or repeated", d.index)
		}
		out[d.index] = d.vector
	}
	return out, dec.promptTokens, nil
}
