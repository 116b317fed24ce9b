package embedding

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	openai "github.com/sashabaranov/go-openai"
)

// apiResponseBody renders an embeddings response the way the API does, with the data elements in
// the given index order and fields the decoder must skip.
func apiResponseBody(vecs [][]float32, order []int, escapeSlash bool) []byte {
	var b bytes.Buffer
	b.WriteString(`{"object":"list","data":[`)
	for i, idx := range order {
		if i > 0 {
			b.WriteString(",")
		}
		raw := make([]byte, 4*len(vecs[idx]))
		for j, f := range vecs[idx] {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(f))
		}
		s := base64.StdEncoding.EncodeToString(raw)
		if escapeSlash {
			s = strings.ReplaceAll(s, "/", `\/`)
		}
		fmt.Fprintf(&b, "{\n  \"object\": \"embedding\", \"extra\": {\"a\": [1, {\"b\": null}]}, \"index\": %d,\n  \"embedding\": \"%s\"}", idx, s)
	}
	b.WriteString(`], "model": "text-embedding-3-small", "usage": {"prompt_tokens": 17, "total_tokens": 19}}`)
	return b.Bytes()
}

func randomVectors(n, dim int, seed uint64) [][]float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	vecs := make([][]float32, n)
	for i := range vecs {
		vecs[i] = make([]float32, dim)
		for j := range vecs[i] {
			vecs[i][j] = float32(r.NormFloat64())
		}
	}
	// Values whose bits must survive exactly.
	vecs[0][0], vecs[0][1] = float32(math.Inf(-1)), math.SmallestNonzeroFloat32
	return vecs
}

func TestDecodeEmbeddingsMatchesGoOpenAI(t *testing.T) {
	vecs := randomVectors(40, 64, 7)
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(vecs))
	for _, escape := range []bool{false, true} {
		body := apiResponseBody(vecs, order, escape)
		got, err := decodeEmbeddings(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("escape=%v: %v", escape, err)
		}
		// go-openai's own decoding of the same body is the reference.
		var ref openai.EmbeddingResponseBase64
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatal(err)
		}
		want, err := ref.ToEmbeddingResponse()
		if err != nil {
			t.Fatal(err)
		}
		if got.promptTokens != 17 || got.totalTokens != 19 || len(got.data) != len(want.Data) {
			t.Fatalf("escape=%v: usage %d/%d, %d vectors; want 17/19, %d", escape, got.promptTokens, got.totalTokens, len(got.data), len(want.Data))
		}
		for i, d := range got.data {
			w := want.Data[i]
			if d.index != w.Index || len(d.vector) != len(w.Embedding) {
				t.Fatalf("escape=%v: element %d: index %d len %d, want %d len %d", escape, i, d.index, len(d.vector), w.Index, len(w.Embedding))
			}
			for j := range d.vector {
				if math.Float32bits(d.vector[j]) != math.Float32bits(w.Embedding[j]) {
					t.Fatalf("escape=%v: vector %d[%d] = %v, want %v", escape, d.index, j, d.vector[j], w.Embedding[j])
				}
			}
		}
	}
}

func TestDecodeEmbeddingsFloatArrays(t *testing.T) {
	body := `{"data":[{"index":1,"embedding":[0.5,-1e-3,2]},{"embedding":[3],"index":0}],"usage":{"prompt_tokens":4,"total_tokens":4}}`
	got, err := decodeEmbeddings(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.data) != 2 || got.data[0].index != 1 || fmt.Sprint(got.data[0].vector) != "[0.5 -0.001 2]" ||
		got.data[1].index != 0 || fmt.Sprint(got.data[1].vector) != "[3]" || got.totalTokens != 4 {
		t.Fatalf("got %+v", got)
	}
}

func TestDecodeEmbeddingsRejectsBadBodies(t *testing.T) {
	good := string(apiResponseBody(randomVectors(2, 8, 1), []int{0, 1}, false))
	for name, body := range map[string]string{
		"truncated":        good[:len(good)/2],
		"empty":            "",
		"not an object":    `[1,2]`,
		"bad base64":       `{"data":[{"index":0,"embedding":"@@@@"}]}`,
		"partial float":    `{"data":[{"index":0,"embedding":"AAAAAAA="}]}`, // 5 bytes
		"no index":         `{"data":[{"embedding":"AAAAAA=="}]}`,
		"no vector":        `{"data":[{"index":0}]}`,
		"vector of string": `{"data":[{"index":0,"embedding":["x"]}]}`,
		"vector is number": `{"data":[{"index":0,"embedding":5}]}`,
		"index is string":  `{"data":[{"index":"0","embedding":"AAAAAA=="}]}`,
	} {
		if got, err := decodeEmbeddings(strings.NewReader(body)); err == nil {
			t.Errorf("%s: decoded %+v, want an error", name, got)
		}
	}
}

// The point of the decoder: a response costs about its vectors, not six times them.
func TestDecodeEmbeddingsAllocatesAboutTheVectors(t *testing.T) {
	const n, dim = 256, 1536
	body := apiResponseBody(randomVectors(n, dim, 9), rand.New(rand.NewPCG(1, 2)).Perm(n), false)
	vectorBytes := uint64(n * dim * 4)
	measure := func(decode func() error) uint64 {
		if err := decode(); err != nil { // warm up
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := decode(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	ours := measure(func() error { _, err := decodeEmbeddings(bytes.NewReader(body)); return err })
	sdk := measure(func() error {
		var r openai.EmbeddingResponseBase64
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
			return err
		}
		_, err := r.ToEmbeddingResponse()
		return err
	})
	t.Logf("vectors %d KiB; allocated: streaming decoder %d KiB, go-openai %d KiB", vectorBytes>>10, ours>>10, sdk>>10)
	// The vectors themselves plus small change (keys, the index, the reused buffers), where
	// go-openai allocates over eight times the vectors.
	if ours > vectorBytes*3/2 {
		t.Errorf("the decoder allocated %d bytes for %d bytes of vectors; want at most 1.5×", ours, vectorBytes)
	}
}

func BenchmarkDecodeEmbeddings(b *testing.B) {
	body := apiResponseBody(randomVectors(256, 1536, 9), rand.New(rand.NewPCG(1, 2)).Perm(256), false)
	b.Run("streaming", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEmbeddings(bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go-openai", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var r openai.EmbeddingResponseBase64
			if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
				b.Fatal(err)
			}
			if _, err := r.ToEmbeddingResponse(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
