package embedding

import "github.com/vectordb-io/vectordb-operator/internal/tokens"

// defaultCounter is the cl100k_base tokenizer of OpenAI's embedding models. Loading it first
// turns a broken tokenizer table into New's error instead of a panic in Count.
func defaultCounter() (func(string, int) int, error) {
	if err := tokens.Load(); err != nil {
		return nil, err
	}
	return tokens.CountUpTo, nil
}
