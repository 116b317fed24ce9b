package embedding

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

// Each test here turns on one misbehaviour of the strict fake and fails if the guard that
// handles it is removed.

func TestDecoderMatchesByIndexWhenFakeReorders(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.SetReorder(true)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	inputs := texts(20)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, inputs, outs, 1536)
}

func TestFloatArraysAnsweredForBase64(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.SetFloatResponses(true)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	inputs := texts(10)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	// Float text rounds to float32 exactly as the base64 path does: the vectors must agree.
	checkOutputs(t, inputs, outs, 1536)
}

func TestTruncatedBodyIsRetried(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.TruncateNext(2)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536, BaseBackoff: time.Millisecond})
	inputs := texts(10)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	checkOutputs(t, inputs, outs, 1536)
	if st := e.Stats(); st.Retries != 2 {
		t.Errorf("retries = %d, want 2 (one per truncated body)", st.Retries)
	}
}

func TestRefusedInputsAreIsolated(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	const msg = "Input refused by the content filter."
	srv.RefuseMarker("<<bad>>", msg)
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	inputs := texts(64)
	bad := map[int64]bool{}
	for _, i := range []int{3, 40, 41} {
		inputs[i].Text += " <<bad>>"
		bad[inputs[i].ID] = true
	}
	outs, refused, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed: %v (a refused input must not fail the batch)", err)
	}
	if len(refused) != len(bad) {
		t.Fatalf("refused %v, want the %d marked inputs", refused, len(bad))
	}
	for _, r := range refused {
		if !bad[r.ID] || r.Reason != ReasonRefused || r.Detail != msg {
			t.Errorf("refused %+v, want a marked input with reason %s and the API's message", r, ReasonRefused)
		}
	}
	var good []Input
	for _, in := range inputs {
		if !bad[in.ID] {
			good = append(good, in)
		}
	}
	checkOutputs(t, good, outs, 1536)
	// Bisection: about 2·log2(64) requests per refused input, not one per input.
	if n := srv.Stats().Requests; n > 40 {
		t.Errorf("%d requests to isolate 3 inputs of 64", n)
	}
}

func TestEveryInputRefusedIsAboutTheRequest(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{})
	srv.RefuseInputs(func(string) bool { return true }, "")
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	_, _, err := e.Embed(context.Background(), texts(8))
	var perm *PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), fakeopenai.DefaultRefusal) {
		t.Fatalf("err = %v, want a PermanentError with the API's message", err)
	}
}

func TestRequestTooLargeIsSplitNotWaited(t *testing.T) {
	// A TPM limit smaller than the batches the embedder packs (it was told no budget): the fake
	// answers "Request too large" without Retry-After; waiting would never help.
	srv := startFake(t, fakeopenai.Options{TPM: 400, Window: 50 * time.Millisecond})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536, MaxRetryTime: time.Minute})
	inputs := texts(40) // about 16 tokens each: 640 tokens in one batch
	outs, refused, err := e.Embed(context.Background(), inputs)
	if err != nil || len(refused) != 0 {
		t.Fatalf("Embed: %v, refused %v", err, refused)
	}
	checkOutputs(t, inputs, outs, 1536)
	if st := srv.Stats(); st.ByStatus[429] == 0 {
		t.Fatalf("the fake never refused a request as too large: %+v", st)
	}
}

func TestOverlongText(t *testing.T) {
	long := strings.Repeat("lorem ipsum dolor sit amet ", 4000) // ~20,000 tokens
	srv := startFake(t, fakeopenai.Options{})

	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	in := append(texts(3), Input{ID: 7, Text: long})
	outs, rejected, err := e.Embed(context.Background(), in)
	if err != nil || len(outs) != 3 || len(rejected) != 1 || rejected[0].ID != 7 || rejected[0].Reason != ReasonTooManyTokens {
		t.Fatalf("fail mode: outs %d, rejected %+v, err %v; want the long text failed with %s", len(outs), rejected, err, ReasonTooManyTokens)
	}

	e = newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536, Overlong: OverlongTruncate})
	outs, rejected, err = e.Embed(context.Background(), in)
	if err != nil || len(rejected) != 0 || len(outs) != 4 {
		t.Fatalf("truncate mode: outs %d, rejected %+v, err %v", len(outs), rejected, err)
	}
	cut := tokens.Truncate(long, InputTokenLimit)
	if n := tokens.Count(cut); n > InputTokenLimit || n < InputTokenLimit-3 {
		t.Fatalf("truncated text has %d tokens", n)
	}
	checkOutputs(t, []Input{in[0], in[1], in[2], {ID: 7, Text: cut}}, outs, 1536)
}

func TestDimensionsNotSentForAda(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{}) // answers `dimensions` for ada-002 with a 400
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), Model: "text-embedding-ada-002", Dimensions: 1536})
	inputs := texts(3)
	outs, _, err := e.Embed(context.Background(), inputs)
	if err != nil {
		t.Fatalf("Embed with ada-002: %v", err)
	}
	checkOutputs(t, inputs, outs, 1536)
	if !AcceptsDimensions("text-embedding-3-large") || AcceptsDimensions("text-embedding-ada-002") {
		t.Error("AcceptsDimensions is wrong about OpenAI's models")
	}
}

func TestOneInputOverTheTokenBudgetIsFatal(t *testing.T) {
	srv := startFake(t, fakeopenai.Options{TPM: 5, Window: 50 * time.Millisecond})
	e := newTestEmbedder(t, Config{APIKey: testKey, BaseURL: srv.URL(), ExpectedDimension: 1536})
	_, _, err := e.Embed(context.Background(), texts(2))
	var perm *PermanentError
	if !errors.As(err, &perm) || perm.Reason != worker.ReasonQuotaExceeded {
		t.Fatalf("err = %v, want a PermanentError %s", err, worker.ReasonQuotaExceeded)
	}
}

// TestInputTokenMargin: a text between the margin and the API's limit is over-long here, and a
// text at the margin goes through the real tokenizer's count.
func TestInputTokenMargin(t *testing.T) {
	e := newTestEmbedder(t, Config{})
	b := e.NewBatcher()
	long := "lorem" + strings.Repeat(" lorem", 9000)
	at := tokens.Truncate(long, InputTokenLimit)
	over := tokens.Truncate(long, InputTokenLimit+30) // still under 8,191
	if tokens.Count(at) != InputTokenLimit || tokens.Count(over) != InputTokenLimit+30 {
		t.Fatalf("texts have %d and %d tokens", tokens.Count(at), tokens.Count(over))
	}
	if _, bad := b.Add(Input{ID: 1, Text: at}); bad != nil {
		t.Fatalf("a text of %d tokens rejected: %+v", InputTokenLimit, bad)
	}
	if _, bad := b.Add(Input{ID: 2, Text: over}); bad == nil || bad.Reason != ReasonTooManyTokens {
		t.Fatalf("a text of %d tokens accepted, want %s within the margin", tokens.Count(over), ReasonTooManyTokens)
	}
}
