package openai_test

import (
	"math"
	"slices"
	"testing"

	goopenai "github.com/sashabaranov/go-openai"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// Each model answers in its own vector space, deterministically; text-embedding-3-small keeps the
// vectors of Vector.
func TestModelVectorsDifferByModel(t *testing.T) {
	c, _ := client(start(t, fake.Options{}), key)
	got := map[string][]float32{}
	for _, model := range []goopenai.EmbeddingModel{goopenai.AdaEmbeddingV2, goopenai.SmallEmbedding3, goopenai.LargeEmbedding3} {
		for range 2 {
			res, err := embed(c, goopenai.EmbeddingRequestStrings{Input: []string{"same text"}, Model: model, Dimensions: 0})
			if err != nil {
				t.Fatalf("%s: %v", model, err)
			}
			v := res.Data[0].Embedding
			if want := fake.ModelVector(string(model), "same text", len(v)); !slices.Equal(v, want) {
				t.Fatalf("%s: the server's vector is not ModelVector", model)
			}
			if prev, ok := got[string(model)]; ok && !slices.Equal(prev, v) {
				t.Fatalf("%s: two requests gave different vectors", model)
			}
			got[string(model)] = v
		}
	}
	ada, small := got[string(goopenai.AdaEmbeddingV2)], got[string(goopenai.SmallEmbedding3)]
	if len(ada) != len(small) {
		t.Fatalf("ada-002 has %d dimensions, 3-small %d", len(ada), len(small))
	}
	if cos := cosine(ada, small); cos > 0.2 {
		t.Errorf("ada-002 and 3-small vectors of one text have cosine %.3f; they must be different spaces", cos)
	}
	if !slices.Equal(small, fake.Vector("same text", len(small))) {
		t.Error("text-embedding-3-small no longer gives Vector")
	}
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / (math.Sqrt(na) * math.Sqrt(nb))
}
