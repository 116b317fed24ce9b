package openai

import (
	"fmt"
	"sync"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
)

// The fake uses tiktoken-go, the reference implementation, not internal/tokens: it bills every
// request with it (unless Options.CountTokens says otherwise), so end-to-end runs check the
// embedder's own counter against it, and it decodes token-array input, which internal/tokens
// does not offer.
var decoder = sync.OnceValues(func() (*tiktoken.Tiktoken, error) {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding(tokens.EncodingName)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", tokens.EncodingName, err)
	}
	return enc, nil
})

func decodeTokens(toks []int) (string, error) {
	enc, err := decoder()
	if err != nil {
		return "", err
	}
	return enc.Decode(toks), nil
}
