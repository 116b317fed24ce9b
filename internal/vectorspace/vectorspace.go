// Package vectorspace is the planner's guard against mixing vector spaces in one index. Two
// embedding models can give vectors of the same dimension that have nothing in common
// (text-embedding-ada-002 and text-embedding-3-small both give 1,536), so a dimension check passes
// and a re-ingest with the wrong model silently degrades every search over the namespace. Before
// the first write, the guard fetches a few stored vectors whose ids the file also has, re-embeds
// the text they were made from with the configured model and dimensions, and compares: the same
// model gives (nearly) the same vector, another model an unrelated one.
package vectorspace

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
)

// Defaults of Config.
const (
	// DefaultThreshold: the same model re-embedding the same text agrees to ~1.0 (OpenAI's
	// vectors vary in the last digits between calls); two models' vectors of one text are far
	// below (unrelated directions in 1,536 dimensions have cosine ≈ 0).
	DefaultThreshold = 0.99
	// DefaultSamples is how many stored vectors are re-embedded: a few hundred tokens.
	DefaultSamples = 3
	// MaxCandidates is how many of the file's ids are looked up.
	MaxCandidates = 100
)

// Candidate is a row of the file: its vector id, namespace and the text it would embed.
type Candidate struct {
	ID        string
	Namespace string
	Text      string
}

// Embedder embeds texts (an *embedding.Embedder).
type Embedder interface {
	Embed(ctx context.Context, inputs []embedding.Input) ([]embedding.Output, []embedding.InputError, error)
	Stats() embedding.Stats
}

// Fetcher reads stored vectors (a *pinecone.Upserter).
type Fetcher interface {
	Fetch(ctx context.Context, namespace string, ids []string) (map[string]pinecone.Stored, error)
}

// Config says what to compare.
type Config struct {
	// Model and Dimensions are spec.embedding's, named in the outcome.
	Model      string
	Dimensions int
	// TextField and TextMaxChars are spec.mapping.metadata's: where the stored text is, and the
	// length it was cut to (a text of that length may be cut, so it is not re-embedded as is).
	TextField    string
	TextMaxChars int
	// Threshold: a cosine below it is a mismatch; 0 means DefaultThreshold.
	Threshold float64
	// Samples to compare; 0 means DefaultSamples.
	Samples int
}

// sample is one stored vector and the text it was made from.
type sample struct {
	id     string
	text   string
	stored []float32
}

// Check runs the guard over the file's candidates (at most MaxCandidates are looked up). Errors
// are those of the fetch or the embeddings call; the outcome is in the returned status, with
// Result Mismatch when a compared vector is below the threshold.
func Check(ctx context.Context, cfg Config, emb Embedder, fetch Fetcher, cands []Candidate) (*v1alpha1.VectorSpaceStatus, error) {
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.Samples <= 0 {
		cfg.Samples = DefaultSamples
	}
	if len(cands) > MaxCandidates {
		cands = cands[:MaxCandidates]
	}
	st := &v1alpha1.VectorSpaceStatus{Model: cfg.Model}

	// Group by namespace, keeping the file's order, so each namespace is one Fetch.
	var order []string
	byNS := map[string][]Candidate{}
	for _, c := range cands {
		if _, ok := byNS[c.Namespace]; !ok {
			order = append(order, c.Namespace)
		}
		byNS[c.Namespace] = append(byNS[c.Namespace], c)
	}
	var samples []sample
	found := 0
	for _, ns := range order {
		group := byNS[ns]
		ids := make([]string, 0, len(group))
		seen := map[string]bool{}
		for _, c := range group {
			if !seen[c.ID] {
				seen[c.ID] = true
				ids = append(ids, c.ID)
			}
		}
		got, err := fetch.Fetch(ctx, ns, ids)
		if err != nil {
			return nil, fmt.Errorf("vector-space guard: %w", err)
		}
		found += len(got)
		for _, c := range group {
			v, ok := got[c.ID]
			if !ok || len(samples) == cfg.Samples {
				continue
			}
			delete(got, c.ID) // a repeated id is compared once
			if text, ok := SampleText(v.Metadata, cfg.TextField, cfg.TextMaxChars, c.Text); ok && len(v.Values) > 0 {
				samples = append(samples, sample{id: c.ID, text: text, stored: v.Values})
			}
		}
	}
	if len(samples) == 0 {
		st.Result = v1alpha1.VectorSpaceNothingToCompare
		if found == 0 {
			st.Message = fmt.Sprintf("none of the file's first %d ids is in the index: nothing to compare", len(cands))
		} else {
			st.Message = fmt.Sprintf("%d of the file's first %d ids are in the index, but none holds its text in metadata %q, so nothing was compared",
				found, len(cands), cfg.TextField)
		}
		return st, nil
	}

	inputs := make([]embedding.Input, len(samples))
	for i, s := range samples {
		inputs[i] = embedding.Input{ID: int64(i), Text: s.text}
	}
	before := emb.Stats().Tokens
	outs, rejected, err := emb.Embed(ctx, inputs)
	st.Tokens = emb.Stats().Tokens - before
	if err != nil {
		return nil, fmt.Errorf("vector-space guard: re-embed %d stored texts with %s: %w", len(samples), cfg.Model, err)
	}
	cos := make([]float64, 0, len(outs))
	worstID := ""
	for _, o := range outs {
		c := Cosine(samples[o.ID].stored, o.Vector)
		if len(cos) == 0 || c < minOf(cos) {
			worstID = samples[o.ID].id
		}
		cos = append(cos, c)
	}
	if len(cos) == 0 {
		st.Result = v1alpha1.VectorSpaceNothingToCompare
		st.Message = fmt.Sprintf("the %d stored texts found could not be re-embedded (%d rejected), so nothing was compared", len(samples), len(rejected))
		return st, nil
	}
	st.Compared = int32(len(cos))
	low := minOf(cos)
	st.MinCosine = strconv.FormatFloat(low, 'f', 4, 64)
	st.Result = Decide(cos, cfg.Threshold)
	dims := "its default dimensions"
	if cfg.Dimensions > 0 {
		dims = strconv.Itoa(cfg.Dimensions) + " dimensions"
	}
	if st.Result == v1alpha1.VectorSpaceMismatch {
		st.Message = fmt.Sprintf("the namespace holds vectors of another model: re-embedding the stored text of %d of them with %s at %s gives cosine similarity as low as %s (vector %q), below %g. "+
			"Set spec.embedding.model (and dimensions) to the model the index was filled with (the old service used text-embedding-ada-002), "+
			"or set spec.target.pinecone.allowMixedVectorSpaces: true to write anyway",
			st.Compared, cfg.Model, dims, st.MinCosine, worstID, cfg.Threshold)
	} else {
		st.Message = fmt.Sprintf("re-embedding the stored text of %d vectors with %s at %s gives cosine similarity of at least %s (threshold %g)",
			st.Compared, cfg.Model, dims, st.MinCosine, cfg.Threshold)
	}
	return st, nil
}

// SampleText returns the text to re-embed for a stored vector: its stored text when that is not
// possibly cut (shorter than maxChars characters); when it is as long as the cut, the file's text
// for the same id if the stored text is its beginning (the full text is what was embedded). A
// vector without stored text is not compared: the file's row may have changed since.
func SampleText(meta map[string]any, field string, maxChars int, fileText string) (string, bool) {
	if field == "" {
		return "", false
	}
	s, _ := meta[field].(string)
	if strings.TrimSpace(s) == "" {
		return "", false
	}
	if maxChars <= 0 || utf8.RuneCountInString(s) < maxChars {
		return s, true
	}
	if fileText != "" && strings.HasPrefix(fileText, s) {
		return fileText, true
	}
	return "", false
}

// Decide is the verdict on the measured cosines: Mismatch when any is below threshold.
func Decide(cosines []float64, threshold float64) string {
	if len(cosines) == 0 {
		return v1alpha1.VectorSpaceNothingToCompare
	}
	if minOf(cosines) < threshold {
		return v1alpha1.VectorSpaceMismatch
	}
	return v1alpha1.VectorSpaceMatched
}

// Cosine similarity of a and b; vectors of different lengths (another dimension) or of zero
// length are as unlike as can be: -1.
func Cosine(a, b []float32) float64 {
	if len(a) != len(b) || len(a) == 0 {
		return -1
	}
	var dot, na, nb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		dot += x * y
		na += x * x
		nb += y * y
	}
	if na == 0 || nb == 0 {
		return -1
	}
	return dot / (math.Sqrt(na) * math.Sqrt(nb))
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}
