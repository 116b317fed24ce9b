package embedding

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const benchDims = 1536

// responseBody is an embeddings response of n vectors, base64 or float, as the API sends it.
func responseBody(n int, b64 bool) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"object":"list","data":[`)
	raw := make([]byte, 0, benchDims*4)
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		v := fakeopenai.Vector(fmt.Sprint("text ", i), benchDims)
		fmt.Fprintf(&buf, `{"object":"embedding","index":%d,"embedding":`, i)
		if b64 {
			raw = raw[:0]
			for _, f := range v {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
			}
			buf.WriteByte('"')
			buf.WriteString(base64.StdEncoding.EncodeToString(raw))
			buf.WriteByte('"')
		} else {
			buf.WriteByte('[')
			for j, f := range v {
				if j > 0 {
					buf.WriteByte(',')
				}
				buf.WriteString(strconv.FormatFloat(float64(f), 'g', -1, 32))
			}
			buf.WriteByte(']')
		}
		buf.WriteByte('}')
	}
	buf.WriteString(`],"model":"text-embedding-3-small","usage":{"prompt_tokens":1,"total_tokens":1}}`)
	return buf.Bytes()
}

// cpuTime is the process's user+system CPU time: on a shared, loaded machine it measures the
// work better than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perVector reports wall and CPU nanoseconds per vector.
func perVector(b *testing.B, cpu0 time.Duration, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/vector")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*n), "cpu-ns/vector")
}

// BenchmarkDecodeBase64 is go-openai's path for encoding_format=base64: JSON decode into
// EmbeddingResponseBase64, then ToEmbeddingResponse. Reported per 1536-dim vector.
func BenchmarkDecodeBase64(b *testing.B) {
	const n = 256
	body := responseBody(n, true)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		var r openai.EmbeddingResponseBase64
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil {
			b.Fatal(err)
		}
		res, err := r.ToEmbeddingResponse()
		if err != nil || len(res.Data) != n {
			b.Fatal(err)
		}
	}
	perVector(b, cpu0, n)
}

// BenchmarkDecodeFloat is the float path, for comparison.
func BenchmarkDecodeFloat(b *testing.B) {
	const n = 256
	body := responseBody(n, false)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		var r openai.EmbeddingResponse
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&r); err != nil || len(r.Data) != n {
			b.Fatal(err)
		}
	}
	perVector(b, cpu0, n)
}

// BenchmarkDecodeFloor is the least any decoder must do per vector: base64 to bytes to
// float32, without JSON. The gap to BenchmarkDecodeBase64 is go-openai's JSON overhead.
func BenchmarkDecodeFloor(b *testing.B) {
	v := fakeopenai.Vector("text", benchDims)
	raw := make([]byte, 0, benchDims*4)
	for _, f := range v {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
	}
	enc := []byte(base64.StdEncoding.EncodeToString(raw))
	buf := make([]byte, len(raw))
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := base64.StdEncoding.Decode(buf, enc); err != nil {
			b.Fatal(err)
		}
		out := make([]float32, benchDims)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[i*4:]))
		}
	}
	perVector(b, cpu0, 1)
}

// BenchmarkEmbedBatch is one full request of 512 inputs through go-openai to the instant fake
// (client and fake share the CPU). Reported per input.
func BenchmarkEmbedBatch(b *testing.B) {
	srv, err := fakeopenai.Start(fakeopenai.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	e, err := New(Config{APIKey: "sk-bench", BaseURL: srv.URL(), Model: "text-embedding-3-small", ExpectedDimension: benchDims})
	if err != nil {
		b.Fatal(err)
	}
	batches, _ := e.Split(texts(512))
	if len(batches) != 1 {
		b.Fatalf("%d batches", len(batches))
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, _, err := e.EmbedBatch(context.Background(), batches[0]); err != nil {
			b.Fatal(err)
		}
	}
	perVector(b, cpu0, 512) // client and fake together
}
