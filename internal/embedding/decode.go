package embedding

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// go-openai decodes an embeddings response with encoding/json into one buffer holding the whole
// body (grown by doubling), then a string per vector, then the decoded bytes, then the floats:
// about six times the vectors' size per response, with three responses in flight. That transient
// garbage, not the live data, set the embedder's peak memory. So the response body of a
// successful embeddings call is decoded here as it streams, token by token, base64 straight into
// the float32 vectors, and go-openai receives an empty list (it still builds the request, sends
// it and parses every error response).

// decodedVector is one embedding of a response, in response order.
type decodedVector struct {
	index  int
	vector []float32
}

// decodedResponse is what decodeEmbeddings read.
type decodedResponse struct {
	data         []decodedVector
	promptTokens int
	totalTokens  int
}

// decodeEmbeddings reads an OpenAI embeddings response: a list whose data elements carry an
// index and an embedding given either as base64 of little-endian float32 (encoding_format
// base64) or as a JSON array of numbers. Unknown fields are skipped.
func decodeEmbeddings(r io.Reader) (*decodedResponse, error) {
	d := &respDecoder{dec: json.NewDecoder(r)}
	d.dec.UseNumber()
	out := &decodedResponse{}
	if err := d.object(func(key string) error {
		switch key {
		case "data":
			return d.array(func() error {
				v, err := d.embedding()
				if err == nil {
					out.data = append(out.data, v)
				}
				return err
			})
		case "usage":
			return d.object(func(key string) error {
				switch key {
				case "prompt_tokens":
					return d.integer(&out.promptTokens)
				case "total_tokens":
					return d.integer(&out.totalTokens)
				}
				return d.skip()
			})
		}
		return d.skip()
	}); err != nil {
		return nil, fmt.Errorf("decode embeddings response: %w", err)
	}
	return out, nil
}

type respDecoder struct {
	dec     *json.Decoder
	raw     json.RawMessage // the current raw value, reused
	scratch []byte          // base64-decoded bytes of one vector, reused
}

// object reads a JSON object, calling field for each key with the decoder before its value;
// field must consume the value.
func (d *respDecoder) object(field func(key string) error) error {
	if err := d.delim('{'); err != nil {
		return err
	}
	for d.dec.More() {
		t, err := d.dec.Token()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return fmt.Errorf("object key %v is not a string", t)
		}
		if err := field(key); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return d.delim('}')
}

// array reads a JSON array, calling elem before each element; elem must consume it.
func (d *respDecoder) array(elem func() error) error {
	if err := d.delim('['); err != nil {
		return err
	}
	for i := 0; d.dec.More(); i++ {
		if err := elem(); err != nil {
			return fmt.Errorf("[%d]: %w", i, err)
		}
	}
	return d.delim(']')
}

func (d *respDecoder) delim(want json.Delim) error {
	t, err := d.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if got, ok := t.(json.Delim); !ok || got != want {
		return fmt.Errorf("got %v where %q was expected", t, string(want))
	}
	return nil
}

// skip consumes one value of any shape.
func (d *respDecoder) skip() error {
	return d.dec.Decode(&d.raw)
}

func (d *respDecoder) integer(dst *int) error {
	t, err := d.dec.Token()
	if err != nil {
		return err
	}
	n, ok := t.(json.Number)
	if !ok {
		return fmt.Errorf("%v is not a number", t)
	}
	i, err := n.Int64()
	if err != nil {
		return err
	}
	*dst = int(i)
	return nil
}

// embedding reads one data element.
func (d *respDecoder) embedding() (decodedVector, error) {
	v := decodedVector{index: -1}
	err := d.object(func(key string) error {
		switch key {
		case "index":
			return d.integer(&v.index)
		case "embedding":
			var err error
			v.vector, err = d.vector()
			return err
		}
		return d.skip()
	})
	if err == nil && v.index < 0 {
		err = errors.New("embedding without an index")
	}
	if err == nil && v.vector == nil {
		err = fmt.Errorf("embedding %d has no vector", v.index)
	}
	return v, err
}

// vector reads a base64 string of little-endian float32s or an array of numbers. The raw value
// is read into a buffer reused across vectors, and base64 is decoded from it in place: no
// per-vector string.
func (d *respDecoder) vector() ([]float32, error) {
	if err := d.dec.Decode(&d.raw); err != nil {
		return nil, err
	}
	raw := d.raw
	switch {
	case len(raw) > 0 && raw[0] == '[':
		var vec []float32
		if err := json.Unmarshal(raw, &vec); err != nil {
			return nil, err
		}
		return vec, nil
	case len(raw) < 2 || raw[0] != '"':
		return nil, fmt.Errorf("got %.20s where a vector was expected", raw)
	}
	b64 := raw[1 : len(raw)-1]
	if bytes.IndexByte(b64, '\\') >= 0 {
		// An encoder that escapes "/" as "\/": unquote the rare slow way.
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		b64 = []byte(s)
	}
	n := base64.StdEncoding.DecodedLen(len(b64))
	if cap(d.scratch) < n {
		d.scratch = make([]byte, n)
	}
	n, err := base64.StdEncoding.Decode(d.scratch[:n], b64)
	if err != nil {
		return nil, fmt.Errorf("base64: %w", err)
	}
	if n%4 != 0 {
		return nil, fmt.Errorf("%d bytes is not a whole number of float32s", n)
	}
	vec := make([]float32, n/4)
	for i := range vec {
		vec[i] = math.Float32frombits(binary.LittleEndian.Uint32(d.scratch[4*i:]))
	}
	return vec, nil
}
