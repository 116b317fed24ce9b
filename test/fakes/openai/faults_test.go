package openai_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

func post(t *testing.T, s *fake.Server, body string) (int, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/embeddings", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

type listResp struct {
	Data []struct {
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
}

func TestFakeMisbehaviours(t *testing.T) {
	s := start(t, fake.Options{})
	const req = `{"model":"text-embedding-3-small","input":["a","b","c"],"encoding_format":"base64","dimensions":4}`

	s.SetReorder(true)
	s.SetFloatResponses(true)
	code, body, err := post(t, s, req)
	if err != nil || code != 200 {
		t.Fatalf("status %d, err %v", code, err)
	}
	var got listResp
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 3 || got.Data[0].Index != 2 || got.Data[2].Index != 0 {
		t.Fatalf("reorder: indexes %+v, want 2,1,0", got.Data)
	}
	if got.Data[0].Embedding[0] != '[' {
		t.Fatalf("float responses: embedding %s is not an array", got.Data[0].Embedding)
	}
	s.SetReorder(false)
	s.SetFloatResponses(false)

	s.RefuseMarker("b", "no b here")
	code, body, _ = post(t, s, req)
	if code != 400 || !bytes.Contains(body, []byte(`"message":"no b here"`)) || !bytes.Contains(body, []byte("invalid_request_error")) {
		t.Fatalf("refused: status %d body %s", code, body)
	}
	if code, _, _ = post(t, s, `{"model":"text-embedding-3-small","input":["a","c"]}`); code != 200 {
		t.Fatalf("unmarked inputs: status %d", code)
	}
	if s.Refused() != 1 {
		t.Fatalf("Refused() = %d, want 1", s.Refused())
	}
	s.RefuseInputs(nil, "")

	s.TruncateNext(1)
	if _, _, err := post(t, s, req); err == nil {
		t.Fatal("truncated response read without error")
	}
	if code, _, err = post(t, s, req); err != nil || code != 200 {
		t.Fatalf("after the truncated one: status %d, err %v", code, err)
	}
}
