package openai

import (
	"fmt"
	"sync"

	tiktoken "github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
)

// Token-array input is embedded as its decoded text, which internal/tokens does not offer, so the
// decoder is loaded here, and only when such input first arrives.
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
