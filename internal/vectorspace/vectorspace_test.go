package vectorspace_test

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

const (
	ada   = "text-embedding-ada-002"
	small = "text-embedding-3-small"
	dims  = 1536
)

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		cos  []float64
		want string
	}{
		{nil, v1alpha1.VectorSpaceNothingToCompare},
		{[]float64{1, 0.9999, 0.995}, v1alpha1.VectorSpaceMatched},
		{[]float64{0.99}, v1alpha1.VectorSpaceMatched},
		{[]float64{1, 0.98}, v1alpha1.VectorSpaceMismatch},
		{[]float64{0.01, -0.02}, v1alpha1.VectorSpaceMismatch},
	} {
		if got := vectorspace.Decide(tc.cos, 0.99); got != tc.want {
			t.Errorf("Decide(%v) = %s, want %s", tc.cos, got, tc.want)
		}
	}
}

func TestSampleText(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name     string
		meta     map[string]any
		field    string
		fileText string
		want     string
		ok       bool
	}{
		{"short stored text", map[string]any{"text": "hello"}, "text", "other", "hello", true},
		{"no text field configured", map[string]any{"text": "hello"}, "", "", "", false},
		{"no stored text", map[string]any{"city": "Reno"}, "text", "hello", "", false},
		{"stored text not a string", map[string]any{"text": 3.0}, "text", "", "", false},
		{"blank stored text", map[string]any{"text": "  "}, "text", "x", "", false},
		{"cut text, file text continues it", map[string]any{"text": long}, "text", long + "yz", long + "yz", true},
		{"cut text, file text differs", map[string]any{"text": long}, "text", "changed", "", false},
		{"cut text, no file text", map[string]any{"text": long}, "text", "", "", false},
	} {
		got, ok := vectorspace.SampleText(tc.meta, tc.field, 1000, tc.fileText)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: got %q %v, want %q %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// A stored text shorter than textMaxChars may still be cut: the mapper trims the text to fit the
// metadata budget when the other fields are large. Such a text is not re-embedded as is (the
// vector was made from the whole text, so the same model would look like another), only the
// file's text that it begins. The metadata is the mapper's own record, not a hand-made map.
func TestSampleTextCutToTheMetadataBudget(t *testing.T) {
	spec := v1alpha1.MappingSpec{IDColumn: "id", TextColumn: "body", Sanitize: "none",
		Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}}
	m, err := mapping.New(spec, []string{"id", "body", "notes"}, mapping.Fixed{ProcessedAt: "2025-01-10T22:45:23Z"})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("word ", 150) + "end"
	for _, notes := range []int{mapping.MetadataBudget - 400, mapping.MetadataBudget - 2000} {
		rec, rerr := m.Map(1, []string{"1", text, strings.Repeat("n", notes)})
		if rerr != nil {
			t.Fatalf("notes of %d bytes: %v", notes, rerr)
		}
		meta := map[string]any{}
		for _, f := range rec.Metadata {
			meta[f.Key] = f.Value.Any()
		}
		stored, _ := meta["text"].(string)
		cut := stored != text
		if cut == (notes == mapping.MetadataBudget-2000) || !strings.HasPrefix(text, stored) || stored == "" {
			t.Fatalf("notes of %d bytes: the mapper stored %d of the text's %d bytes; the test needs it cut only with the larger notes", notes, len(stored), len(text))
		}
		if got, ok := vectorspace.SampleText(meta, "text", 1000, text); !ok || got != text {
			t.Errorf("notes of %d bytes (text cut: %v): with the file's text, got %d bytes %v, want the file's whole text", notes, cut, len(got), ok)
		}
		got, ok := vectorspace.SampleText(meta, "text", 1000, "")
		if cut && ok {
			t.Errorf("the text cut to fit the metadata budget (%d of %d bytes) is re-embedded as is", len(got), len(text))
		}
		if !cut && (!ok || got != text) {
			t.Errorf("an uncut text is not re-embedded: %d bytes %v", len(got), ok)
		}
	}
}

func TestCosine(t *testing.T) {
	a := fakeopenai.ModelVector(ada, "t", 8)
	if c := vectorspace.Cosine(a, a); math.Abs(c-1) > 1e-6 {
		t.Errorf("cosine of a vector with itself = %v", c)
	}
	if c := vectorspace.Cosine(a, a[:4]); c != -1 {
		t.Errorf("different lengths: %v", c)
	}
	if c := vectorspace.Cosine(nil, nil); c != -1 {
		t.Errorf("empty: %v", c)
	}
}

// env is the guard against the wire-level fakes: an OpenAI fake whose vectors depend on the model,
// and a Pinecone index whose namespace v2 holds vectors made with ada-002.
type env struct {
	openai *fakeopenai.Server
	index  *fakepinecone.Index
	up     *pinecone.Upserter
}

func newEnv(t *testing.T) *env {
	t.Helper()
	oa, err := fakeopenai.Start(fakeopenai.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = oa.Close() })
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"clickbid-prod": dims}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	up, err := pinecone.New(ctx, pinecone.Config{APIKey: "k", Index: "clickbid-prod", ControlHost: pc.ControlURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Close() })
	return &env{openai: oa, index: pc.Index("clickbid-prod"), up: up}
}

func (e *env) seed(t *testing.T, model string, texts map[string]string) {
	t.Helper()
	var vecs []pinecone.Vector
	for id, text := range texts {
		vecs = append(vecs, pinecone.Vector{ID: id, Values: fakeopenai.ModelVector(model, text, dims), Metadata: meta(t, map[string]any{"text": text, "source": "s3_csv"})})
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if rejected, err := e.up.Upsert(ctx, "v2", vecs); err != nil || len(rejected) > 0 {
		t.Fatalf("pre-fill upsert: rejected %+v, err %v", rejected, err)
	}
}

func (e *env) embedder(t *testing.T, model string) *embedding.Embedder {
	t.Helper()
	emb, err := embedding.New(embedding.Config{APIKey: "k", BaseURL: e.openai.URL(), Model: model, ExpectedDimension: dims, Logger: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	return emb
}

func TestCheckAgainstTheFakes(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("Vintage clock and stand. ", 50) // 1,250 characters, stored cut to 1,000
	e.seed(t, ada, map[string]string{"239.1": "Lot 12: Vintage clock", "239.2": "Pickup on Main St.", "239.3": "Oak table"})
	// 239.4 holds the first 1,000 characters of a longer text, as the old service stored it.
	vec := fakeopenai.ModelVector(ada, long, dims)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if rejected, err := e.up.Upsert(ctx, "v2", []pinecone.Vector{{ID: "239.4", Values: vec, Metadata: meta(t, map[string]any{"text": long[:1000]})}}); err != nil || len(rejected) > 0 {
		t.Fatalf("pre-fill upsert: rejected %+v, err %v", rejected, err)
	}
	file := []vectorspace.Candidate{
		{ID: "239.9", Namespace: "v2", Text: "new row"},
		{ID: "239.4", Namespace: "v2", Text: long},
		{ID: "239.1", Namespace: "v2", Text: "Lot 12: Vintage clock (edited)"},
		{ID: "239.2", Namespace: "v2", Text: "Pickup on Main St."},
		{ID: "239.3", Namespace: "v2", Text: "Oak table"},
	}
	cfg := vectorspace.Config{Model: ada, TextField: "text", TextMaxChars: 1000}

	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, ada), e.up, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMatched || st.Compared != 3 || st.MinCosine != "1.0000" || st.Tokens <= 0 || st.Model != ada {
		t.Errorf("same model: %+v", st)
	}

	cfg.Model = small
	st, err = vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMismatch || st.Compared != 3 {
		t.Fatalf("other model: %+v", st)
	}
	if !strings.Contains(st.Message, small) || !strings.Contains(st.Message, "cosine similarity as low as "+st.MinCosine) ||
		!strings.Contains(st.Message, "allowMixedVectorSpaces") {
		t.Errorf("message does not name the model and what was measured: %s", st.Message)
	}
	if c, _ := strconv.ParseFloat(st.MinCosine, 64); c > 0.5 {
		t.Errorf("min cosine across models %s, want far below 0.99", st.MinCosine)
	}
	if n := e.index.UpsertCalls(); n != 2 {
		t.Errorf("the guard wrote: %d upsert calls, the test made 2", n)
	}

	// A namespace that holds nothing: nothing to compare, no tokens spent.
	before := e.openai.Stats()
	st, err = vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, []vectorspace.Candidate{{ID: "239.1", Namespace: "other", Text: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceNothingToCompare || st.Compared != 0 || st.Tokens != 0 || !strings.Contains(st.Message, "no vectors") {
		t.Errorf("empty namespace: %+v", st)
	}
	if after := e.openai.Stats(); after.Requests != before.Requests {
		t.Errorf("an empty namespace still called OpenAI: %+v → %+v", before, after)
	}
}

// A file of only new ids (a daily delta): none of its ids is stored, so the guard lists what the
// namespace holds and re-embeds that. The wrong model is a mismatch, the right one a match.
func TestCheckNewIDsListsTheNamespace(t *testing.T) {
	e := newEnv(t)
	e.seed(t, ada, map[string]string{"239.1": "Lot 12: Vintage clock", "239.2": "Pickup on Main St.", "239.3": "Oak table", "239.4": "Brass lamp"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var file []vectorspace.Candidate
	for i := range 50 {
		file = append(file, vectorspace.Candidate{ID: "239.new-" + strconv.Itoa(i), Namespace: "v2", Text: "new row " + strconv.Itoa(i)})
	}
	cfg := vectorspace.Config{Model: small, TextField: "text", TextMaxChars: 1000, IDPrefix: "239."}
	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMismatch || st.Compared != vectorspace.DefaultSamples || !strings.Contains(st.Message, "listed from the namespace") {
		t.Fatalf("new ids, other model: %+v", st)
	}
	if n := e.index.Stats().Calls["List"]; n != 1 {
		t.Errorf("%d list calls, want 1 (one page under the prefix holds enough)", n)
	}

	cfg.Model = ada
	st, err = vectorspace.Check(ctx, cfg, e.embedder(t, ada), e.up, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMatched || st.Compared != vectorspace.DefaultSamples || st.MinCosine != "1.0000" {
		t.Fatalf("new ids, same model: %+v", st)
	}
}

// Vectors under the id prefix are compared before others of the namespace: here other prefixes
// hold another model's vectors (another question's rows), which must not decide.
func TestCheckListsThePrefixFirst(t *testing.T) {
	e := newEnv(t)
	e.seed(t, small, map[string]string{"100.1": "other question 1", "100.2": "other question 2", "100.3": "other question 3"})
	e.seed(t, ada, map[string]string{"239.1": "Lot 12: Vintage clock", "239.2": "Pickup on Main St.", "239.3": "Oak table"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := []vectorspace.Candidate{{ID: "239.77", Namespace: "v2", Text: "new"}}
	cfg := vectorspace.Config{Model: ada, TextField: "text", TextMaxChars: 1000, IDPrefix: "239."}
	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, ada), e.up, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMatched || st.Compared != 3 {
		t.Fatalf("prefix first: %+v", st)
	}
	// With no vector under its prefix, the guard compares the namespace's others.
	cfg.IDPrefix = "555."
	st, err = vectorspace.Check(ctx, cfg, e.embedder(t, ada), e.up, []vectorspace.Candidate{{ID: "555.1", Namespace: "v2", Text: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceMismatch { // "100.*" sorts first: small's vectors
		t.Fatalf("namespace after an empty prefix: %+v", st)
	}
}

// A namespace that holds vectors none of which can be compared (no stored text, or text that
// may have been cut) is not "nothing to compare": the model is unverified, which fails the plan.
func TestCheckUnverifiable(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var vecs []pinecone.Vector
	for i := range 150 { // more than one list page
		md := map[string]any{"source": "s3_csv"}
		if i%2 == 0 {
			md["text"] = strings.Repeat("y", 1000) // as long as the cut: perhaps cut
		}
		vecs = append(vecs, pinecone.Vector{ID: "239." + strconv.Itoa(1000+i), Values: fakeopenai.ModelVector(ada, "t", dims), Metadata: meta(t, md)})
	}
	if rejected, err := e.up.Upsert(ctx, "v2", vecs); err != nil || len(rejected) > 0 {
		t.Fatalf("pre-fill upsert: rejected %+v, err %v", rejected, err)
	}
	before := e.openai.Stats()
	cfg := vectorspace.Config{Model: small, TextField: "text", TextMaxChars: 1000, IDPrefix: "239."}
	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, []vectorspace.Candidate{{ID: "239.1", Namespace: "v2", Text: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceUnverified || st.Compared != 0 || !strings.Contains(st.Message, "allowMixedVectorSpaces") ||
		!strings.Contains(st.Message, "150 more listed") {
		t.Fatalf("unverifiable: %+v", st)
	}
	if after := e.openai.Stats(); after.Requests != before.Requests {
		t.Errorf("nothing comparable, yet OpenAI was called: %+v → %+v", before, after)
	}
}

// Stored texts the embeddings call refuses (here longer than an input may be) compare nothing,
// but the namespace is not empty: the model is unverified, which fails the plan, instead of
// NothingToCompare, which lets it write.
func TestCheckRejectedSamplesAreUnverified(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("7 ", 9000) // about 9,000 tokens: over the per-input limit
	e.seed(t, ada, map[string]string{"239.1": long + "a", "239.2": long + "b", "239.3": long + "c"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := vectorspace.Config{Model: small, TextField: "text", TextMaxChars: 40000, IDPrefix: "239."}
	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, []vectorspace.Candidate{{ID: "239.9", Namespace: "v2", Text: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceUnverified || st.Compared != 0 || !strings.Contains(st.Message, "allowMixedVectorSpaces") {
		t.Fatalf("every stored text refused by the embeddings call: %+v", st)
	}
}

func meta(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An index that returns no vector values (the test stack's fake, which discards them to save
// memory; Pinecone always returns them) has nothing to compare with: NothingToCompare, saying
// why, not Unverified, which would fail every later ingestion into a shared test index.
func TestCheckIndexWithoutValues(t *testing.T) {
	e := newEnv(t)
	e.index.SetDiscardValues(true)
	e.seed(t, ada, map[string]string{"239.1": "Lot 12: Vintage clock", "239.2": "Oak table"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := vectorspace.Config{Model: small, TextField: "text", TextMaxChars: 1000, IDPrefix: "239."}
	st, err := vectorspace.Check(ctx, cfg, e.embedder(t, small), e.up, []vectorspace.Candidate{{ID: "239.1", Namespace: "v2", Text: "x"}, {ID: "239.9", Namespace: "v2", Text: "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != v1alpha1.VectorSpaceNothingToCompare || !strings.Contains(st.Message, "none of their values") {
		t.Fatalf("index without values: %+v", st)
	}
}
