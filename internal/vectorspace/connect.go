package vectorspace

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Keys are what the guard connects with (the planner pod gets them by secretKeyRef).
type Keys struct {
	OpenAI   string
	Pinecone string
	// PineconeControlHost is the control-plane base URL; empty means Pinecone's.
	PineconeControlHost string
	// Lease, when set, takes a rate lease for the guard's embedder before its request and
	// releases it when the guard is done (chunkrun.Lease): the guard's request draws from the
	// key's budget like a chunk pod's.
	Lease func(ctx context.Context, emb *embedding.Embedder) (stop func())
}

// ConfigFor is the guard's configuration for an ingestion spec: its model, dimensions, stored text
// field and cut, and id prefix.
func ConfigFor(spec v1alpha1.CsvIngestionSpec) Config {
	md := spec.Mapping.Metadata
	cfg := Config{
		Model: spec.Embedding.Model, Dimensions: int(spec.Embedding.Dimensions),
		TextField: md.TextField, TextMaxChars: int(md.TextMaxChars), IDPrefix: spec.Mapping.IDPrefix,
	}
	if cfg.TextMaxChars == 0 {
		cfg.TextMaxChars = mapping.DefaultTextMaxChars
	}
	return cfg
}

// ForIngestion returns the guard for the planner (planner.Guard): it connects to the ingestion's
// Pinecone index and OpenAI endpoint only when the file has candidate rows, then runs Check with
// the ingestion's model, dimensions and text field.
func ForIngestion(ing worker.Ingestion, keys Keys, hc *http.Client, log logr.Logger) func(ctx context.Context, cands []Candidate) (*v1alpha1.VectorSpaceStatus, error) {
	return func(ctx context.Context, cands []Candidate) (*v1alpha1.VectorSpaceStatus, error) {
		spec := ing.Spec
		cfg := ConfigFor(spec)
		if len(cands) == 0 {
			return &v1alpha1.VectorSpaceStatus{Result: v1alpha1.VectorSpaceNothingToCompare, Model: cfg.Model,
				Message: "the file has no row with an id and a text: nothing to compare"}, nil
		}
		if keys.Pinecone == "" {
			return nil, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("vector-space guard: no Pinecone API key (%s is empty)", worker.EnvPineconeAPIKey))
		}
		if keys.OpenAI == "" {
			return nil, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("vector-space guard: no OpenAI API key (%s is empty)", worker.EnvOpenAIAPIKey))
		}
		t := spec.Target.Pinecone
		up, err := pinecone.New(ctx, pinecone.Config{
			APIKey: keys.Pinecone, Index: t.Index, Host: t.Host, ControlHost: keys.PineconeControlHost, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("vector-space guard: connect to Pinecone index %q: %w", t.Index, err)
		}
		defer func() { _ = up.Close() }()
		emb, err := embedding.New(embedding.Config{
			APIKey: keys.OpenAI, BaseURL: spec.Embedding.BaseURL, Model: cfg.Model, Dimensions: cfg.Dimensions,
			ExpectedDimension: up.Dimension(), RequestsPerMinute: float64(spec.Embedding.RequestsPerMinute),
			TokensPerMinute: float64(spec.Embedding.TokensPerMinute), MaxInFlight: 1, HTTPClient: hc, Logger: log,
		})
		if err != nil {
			return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("vector-space guard: %w", err))
		}
		if keys.Lease != nil {
			defer keys.Lease(ctx, emb)()
		}
		return Check(ctx, cfg, emb, up, cands)
	}
}
