// Package vectorspace is the planner's guard against mixing vector spaces in one index. Two
// embedding models can give vectors of the same dimension that have nothing in common
// (text-embedding-ada-002 and text-embedding-3-small both give 1,536), so a dimension check passes
// and a re-ingest with the wrong model silently degrades every search over the namespace. Before
// the first write, the guard fetches a few stored vectors whose ids the file also has, re-embeds
// the text they were made from with the configured model and dimensions, and compares: the same
// model gives (nearly) the same vector, another model an unrelated one. A file of new ids (a daily
// delta) has no such vectors, so the guard then lists what the namespace holds (under the id
// prefix, or anywhere in it when nothing is stored under the prefix), fetches those vectors and
// compares their stored text. Only an empty namespace has nothing to compare; one whose vectors
// cannot be compared (no stored text short enough) leaves the model unverified, which fails the
// plan unless spec.target.pinecone.allowMixedVectorSpaces is set.
package vectorspace

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
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
	// MaxListPages is how many list pages (of pinecone.MaxListLimit ids) are read per prefix
	// when the file's ids are not enough: stored vectors without a usable text are
	// skipped, so more than one page may be needed.
	MaxListPages = 3
	// fetchGroup is how many listed ids one fetch asks for: the guard stops once it has enough.
	fetchGroup = 25
	// FallbackTextField is where the stored text is looked for when the ingestion stores none:
	// the old service's key.
	FallbackTextField = "text"
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

// Index reads stored vectors (a *pinecone.Upserter).
type Index interface {
	Fetch(ctx context.Context, namespace string, ids []string) (map[string]pinecone.Stored, error)
	ListPage(ctx context.Context, namespace, prefix, token string) ([]string, string, error)
}

// Config says what to compare.
type Config struct {
	// Model and Dimensions are spec.embedding's, named in the outcome.
	Model      string
	Dimensions int
	// TextField and TextMaxChars are spec.mapping.metadata's: where the stored text is (empty:
	// FallbackTextField), and the length it was cut to (a text of that length may be cut, so it
	// is not re-embedded as is).
	TextField    string
	TextMaxChars int
	// IDPrefix is spec.mapping.idPrefix: stored vectors under it are listed first.
	IDPrefix string
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

// Check runs the guard over the file's candidates (at most MaxCandidates are looked up) and,
// when fewer than cfg.Samples of them are stored with their text, over vectors listed from their
// namespaces. Errors are those of Pinecone or the embeddings call; the outcome is in the returned
// status: Mismatch when a compared vector is below the threshold, NothingToCompare only when the
// namespaces are empty, Unverified when they hold vectors none of which could be compared.
func Check(ctx context.Context, cfg Config, emb Embedder, idx Index, cands []Candidate) (*v1alpha1.VectorSpaceStatus, error) {
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.Samples <= 0 {
		cfg.Samples = DefaultSamples
	}
	if cfg.TextField == "" {
		cfg.TextField = FallbackTextField
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
	found, withValues := 0, 0            // stored vectors seen, and those the index returned values for
	seen := map[string]map[string]bool{} // per namespace: ids fetched already
	for _, ns := range order {
		group := byNS[ns]
		ids := make([]string, 0, len(group))
		seen[ns] = map[string]bool{}
		for _, c := range group {
			if !seen[ns][c.ID] {
				seen[ns][c.ID] = true
				ids = append(ids, c.ID)
			}
		}
		got, err := idx.Fetch(ctx, ns, ids)
		if err != nil {
			return nil, fmt.Errorf("vector-space guard: %w", err)
		}
		found += len(got)
		for _, v := range got {
			if len(v.Values) > 0 {
				withValues++
			}
		}
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
	fromFile := len(samples)

	// Not enough of the file's ids are stored (new rows): compare what the namespaces hold.
	listed := 0
	for _, ns := range order {
		if len(samples) >= cfg.Samples {
			break
		}
		n, err := sampleListed(ctx, cfg, idx, ns, seen[ns], &samples, &withValues)
		if err != nil {
			return nil, err
		}
		listed += n
	}

	if len(samples) == 0 {
		if found == 0 && listed == 0 {
			st.Result = v1alpha1.VectorSpaceNothingToCompare
			st.Message = fmt.Sprintf("namespace %s holds no vectors: nothing to compare", nsList(order))
			return st, nil
		}
		if withValues == 0 {
			// Pinecone always returns a stored vector's values; an index that returns none (a
			// test fake that discards them to save memory) has nothing to compare with, which
			// says nothing about the model that filled it.
			st.Result = v1alpha1.VectorSpaceNothingToCompare
			st.Message = fmt.Sprintf("namespace %s holds vectors (%d of the file's first %d ids, %d more listed), but the index returned none of their values: nothing to compare",
				nsList(order), found, len(cands), listed)
			return st, nil
		}
		st.Result = v1alpha1.VectorSpaceUnverified
		st.Message = fmt.Sprintf("namespace %s holds vectors (%d of the file's first %d ids, %d more listed), but none has its text in metadata %q shorter than %d characters to re-embed, "+
			"so the model they were made with is unknown. Make sure spec.embedding.model is the model the index was filled with (the old service used text-embedding-ada-002), "+
			"then set spec.target.pinecone.allowMixedVectorSpaces: true to write anyway",
			nsList(order), found, len(cands), listed, cfg.TextField, cfg.TextMaxChars)
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
		// The namespace holds vectors: only an empty one has nothing to compare.
		why := ""
		if len(rejected) > 0 {
			why = ": " + rejected[0].Reason + ", " + rejected[0].Detail
		}
		st.Result = v1alpha1.VectorSpaceUnverified
		st.Message = fmt.Sprintf("namespace %s holds vectors, but the embeddings API refused the %d stored texts found (%d rejected%s), so the model they were made with is unknown. "+
			"Make sure spec.embedding.model is the model the index was filled with (the old service used text-embedding-ada-002), "+
			"then set spec.target.pinecone.allowMixedVectorSpaces: true to write anyway",
			nsList(order), len(samples), len(rejected), why)
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
	if fromFile < len(samples) {
		st.Message += fmt.Sprintf(" (%d of the %d vectors re-embedded were listed from the namespace: the file's ids are not stored yet)", len(samples)-fromFile, len(samples))
	}
	return st, nil
}

// sampleListed lists ids of namespace ns under cfg.IDPrefix or, when nothing is stored under it,
// anywhere in the namespace (the vectors this ingestion's will sit with are those under its
// prefix), fetches those not seen yet and adds the ones with a usable stored text to samples
// until there are cfg.Samples. It returns how many ids it listed that were not seen before, and
// counts in withValues the fetched vectors the index returned values for.
func sampleListed(ctx context.Context, cfg Config, idx Index, ns string, seen map[string]bool, samples *[]sample, withValues *int) (int, error) {
	prefixes := []string{""}
	if cfg.IDPrefix != "" {
		prefixes = []string{cfg.IDPrefix, ""}
	}
	listed := 0
	for _, prefix := range prefixes {
		stored, err := sampleListedPrefix(ctx, cfg, idx, ns, prefix, seen, samples, withValues, &listed)
		if err != nil || stored || len(*samples) >= cfg.Samples {
			return listed, err
		}
	}
	return listed, nil
}

// sampleListedPrefix is sampleListed for one prefix, up to MaxListPages pages; it says whether
// anything is stored under the prefix.
func sampleListedPrefix(ctx context.Context, cfg Config, idx Index, ns, prefix string, seen map[string]bool, samples *[]sample, withValues, listed *int) (bool, error) {
	stored := false
	token := ""
	for range MaxListPages {
		ids, next, err := idx.ListPage(ctx, ns, prefix, token)
		if err != nil {
			return stored, fmt.Errorf("vector-space guard: %w", err)
		}
		stored = stored || len(ids) > 0
		var fresh []string
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				fresh = append(fresh, id)
			}
		}
		*listed += len(fresh)
		for start := 0; start < len(fresh) && len(*samples) < cfg.Samples; start += fetchGroup {
			part := fresh[start:min(start+fetchGroup, len(fresh))]
			got, err := idx.Fetch(ctx, ns, part)
			if err != nil {
				return stored, fmt.Errorf("vector-space guard: %w", err)
			}
			for _, id := range part {
				v, ok := got[id]
				if ok && len(v.Values) > 0 {
					*withValues++
				}
				if !ok || len(*samples) == cfg.Samples {
					continue
				}
				if text, ok := SampleText(v.Metadata, cfg.TextField, cfg.TextMaxChars, ""); ok && len(v.Values) > 0 {
					*samples = append(*samples, sample{id: id, text: text, stored: v.Values})
				}
			}
		}
		if len(*samples) >= cfg.Samples || next == "" {
			return stored, nil
		}
		token = next
	}
	return stored, nil
}

func nsList(order []string) string {
	q := make([]string, len(order))
	for i, ns := range order {
		q[i] = strconv.Quote(ns)
	}
	return strings.Join(q, ", ")
}

// SampleText returns the text to re-embed for a stored vector: its stored text when that is not
// possibly cut (shorter than maxChars characters, in metadata with room left in the budget);
// when it may be cut, the file's text for the same id if the stored text is its beginning (the
// full text is what was embedded). A vector without stored text is not compared: the file's row
// may have changed since.
func SampleText(meta map[string]any, field string, maxChars int, fileText string) (string, bool) {
	if field == "" {
		return "", false
	}
	s, _ := meta[field].(string)
	if strings.TrimSpace(s) == "" {
		return "", false
	}
	if (maxChars <= 0 || utf8.RuneCountInString(s) < maxChars) && !metadataFull(meta) {
		return s, true
	}
	if fileText != "" && strings.HasPrefix(fileText, s) {
		return fileText, true
	}
	return "", false
}

// metadataFull says whether meta fills the metadata budget the mapper fits records into, as the
// mapper measures it, but for less than a character's JSON size (6 bytes, with a margin): the
// mapper may have cut its text to fit, however short the text is.
func metadataFull(meta map[string]any) bool {
	n := 2 // the braces
	for k, v := range meta {
		f := mapping.Field{Key: k}
		switch x := v.(type) {
		case string:
			f.Value = mapping.Value{Kind: mapping.KindString, Str: x}
		case float64:
			f.Value = mapping.Value{Kind: mapping.KindNumber, Num: x}
		case bool:
			f.Value = mapping.Value{Kind: mapping.KindBool, Bool: x}
		default: // another writer's value (a list, null): its JSON size
			b, _ := json.Marshal(x)
			n += len(b) + len(k) + 4
			continue
		}
		n += mapping.FieldBytes(f)
	}
	return n+16 > mapping.MetadataBudget
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
