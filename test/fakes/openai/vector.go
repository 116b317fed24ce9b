package openai

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
)

// Vector is the embedding the fake returns for text at dims dimensions: a pseudo-random unit
// vector seeded by an FNV-1a hash of the text. Like the real text-embedding-3 models, a shorter
// vector is the longer one cut to length and renormalised, so the first values agree across
// dimensions.
func Vector(text string, dims int) []float32 {
	if dims <= 0 {
		return nil
	}
	v := make([]float32, dims)
	fillVector(v, text)
	return v
}

// ModelVector is the embedding the fake returns for text from model: each model has its own
// vector space, as real models do (text-embedding-ada-002 and text-embedding-3-small both give
// 1,536 dimensions whose values have nothing in common), so a vector-space check can tell them
// apart. It is still deterministic. text-embedding-3-small gives Vector(text, dims).
func ModelVector(model, text string, dims int) []float32 {
	if dims <= 0 {
		return nil
	}
	v := make([]float32, dims)
	fillModelVector(v, modelSalt(model), text)
	return v
}

// modelSalt separates the models' vector spaces; 0 (text-embedding-3-small, or no model) keeps
// the vectors the fake has always returned.
func modelSalt(model string) uint64 {
	if model == "" || model == "text-embedding-3-small" {
		return 0
	}
	h := uint64(14695981039346656037)
	for i := 0; i < len(model); i++ {
		h ^= uint64(model[i])
		h *= 1099511628211
	}
	return h
}

// fillVector writes Vector(text, len(dst)) into dst without allocating.
func fillVector(dst []float32, text string) { fillModelVector(dst, 0, text) }

// fillModelVector writes ModelVector into dst without allocating, given modelSalt(model).
func fillModelVector(dst []float32, salt uint64, text string) {
	// FNV-1a 64, inlined so hashing a string does not allocate.
	h := uint64(14695981039346656037) ^ salt
	for i := 0; i < len(text); i++ {
		h ^= uint64(text[i])
		h *= 1099511628211
	}
	state := h
	var sum float64
	for i := range dst {
		// splitmix64: cheap, well mixed, and stable across Go versions.
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		f := float64(z>>11)/(1<<52) - 1 // uniform in [-1, 1)
		dst[i] = float32(f)
		sum += float64(dst[i]) * float64(dst[i])
	}
	if sum == 0 {
		dst[0] = 1
		return
	}
	inv := 1 / math.Sqrt(sum)
	for i := range dst {
		dst[i] = float32(float64(dst[i]) * inv)
	}
}

// appendBase64 appends the JSON string of v as OpenAI's base64 encoding: little-endian float32
// bytes, standard base64 (go-openai decodes it the same way).
func appendBase64(buf []byte, v []float32, scratch []byte) ([]byte, []byte) {
	scratch = scratch[:0]
	for _, f := range v {
		scratch = binary.LittleEndian.AppendUint32(scratch, math.Float32bits(f))
	}
	buf = append(buf, '"')
	buf = base64.StdEncoding.AppendEncode(buf, scratch)
	buf = append(buf, '"')
	return buf, scratch
}

// appendFloats appends v as a JSON array of the shortest decimal forms that round-trip float32.
func appendFloats(buf []byte, v []float32) []byte {
	buf = append(buf, '[')
	for i, f := range v {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendFloat(buf, float64(f), 'g', -1, 32)
	}
	return append(buf, ']')
}
