package openai_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	goopenai "github.com/sashabaranov/go-openai"

	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

func bctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// batchLines builds n embedding lines "row-<i>" with input "text <i>".
func batchLines(n int, texts func(i int) string) goopenai.UploadBatchFileRequest {
	var req goopenai.UploadBatchFileRequest
	for i := range n {
		req.AddEmbedding(fmt.Sprintf("row-%d", i), goopenai.EmbeddingRequest{
			Input: []string{texts(i)}, Model: goopenai.SmallEmbedding3, EncodingFormat: goopenai.EmbeddingEncodingFormatBase64,
		})
	}
	return req
}

func text(i int) string { return fmt.Sprintf("text %d", i) }

func submit(t *testing.T, c *goopenai.Client, lines goopenai.UploadBatchFileRequest, meta map[string]any) goopenai.Batch {
	t.Helper()
	b, err := c.CreateBatchWithUploadFile(bctx(t), goopenai.CreateBatchWithUploadFileRequest{
		Endpoint: goopenai.BatchEndpointEmbeddings, Metadata: meta, UploadBatchFileRequest: lines,
	})
	if err != nil {
		t.Fatalf("create batch: %v", err)
	}
	return b.Batch
}

// poll retrieves the batch until it ends; the fake advances one step per retrieve.
func poll(t *testing.T, c *goopenai.Client, id string) goopenai.Batch {
	t.Helper()
	for range 100 {
		b, err := c.RetrieveBatch(bctx(t), id)
		if err != nil {
			t.Fatalf("retrieve %s: %v", id, err)
		}
		switch b.Status {
		case "completed", "failed", "expired", "cancelled":
			return b.Batch
		}
	}
	t.Fatalf("batch %s did not end in 100 polls", id)
	return goopenai.Batch{}
}

type outLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func readLines(t *testing.T, c *goopenai.Client, id *string) []outLine {
	t.Helper()
	if id == nil {
		return nil
	}
	raw, err := c.GetFileContent(bctx(t), *id)
	if err != nil {
		t.Fatalf("file content %s: %v", *id, err)
	}
	defer raw.Close()
	var out []outLine
	sc := bufio.NewScanner(raw)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", *id, err)
	}
	return out
}

func decodeVec(t *testing.T, body json.RawMessage) []float32 {
	t.Helper()
	var r struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || len(r.Data) != 1 {
		t.Fatalf("embedding body %s: %v", body, err)
	}
	raw, err := base64.StdEncoding.DecodeString(r.Data[0].Embedding)
	if err != nil {
		t.Fatalf("base64: %v", err)
	}
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v
}

func TestBatchRunsEveryLineOnceOutOfOrder(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	const n = 40
	b := submit(t, c, batchLines(n, text), map[string]any{"ingestion": "uid-1", "batch": "0"})
	if b.Status != "validating" || b.Metadata["ingestion"] != "uid-1" {
		t.Fatalf("created batch: status %q metadata %v", b.Status, b.Metadata)
	}
	end := poll(t, c, b.ID)
	if end.Status != "completed" || end.RequestCounts.Total != n || end.RequestCounts.Completed != n || end.ErrorFileID != nil {
		t.Fatalf("ended batch: %+v", end)
	}
	lines := readLines(t, c, end.OutputFileID)
	if len(lines) != n {
		t.Fatalf("output has %d lines, want %d", len(lines), n)
	}
	seen := map[string]bool{}
	inOrder := true
	for i, l := range lines {
		var row int
		if _, err := fmt.Sscanf(l.CustomID, "row-%d", &row); err != nil || seen[l.CustomID] {
			t.Fatalf("custom_id %q bad or repeated", l.CustomID)
		}
		seen[l.CustomID] = true
		inOrder = inOrder && row == i
		if l.Response == nil || l.Response.StatusCode != http.StatusOK || l.Error != nil {
			t.Fatalf("line %s: %+v", l.CustomID, l)
		}
		got, want := decodeVec(t, l.Response.Body), fake.Vector(text(row), 1536)
		for k := range want {
			if got[k] != want[k] {
				t.Fatalf("line %s value %d: %v, want %v", l.CustomID, k, got[k], want[k])
			}
		}
	}
	if inOrder {
		t.Error("output lines came back in input order; the API promises no order and the fake must not either")
	}
	st := s.BatchStats()
	if st.BatchesCreated != 1 || st.FilesUploaded != 1 || st.Requests < 4 || st.LinesEmbedded != n || st.Inputs != n || st.Tokens == 0 || st.BytesUploaded == 0 || st.BytesDownloaded == 0 {
		t.Fatalf("stats %+v", st)
	}
	if s.Stats().Requests != 0 {
		t.Errorf("batch lines counted as online requests: %+v", s.Stats())
	}
	for _, id := range []string{b.InputFileID, *end.OutputFileID} {
		if err := c.DeleteFile(bctx(t), id); err != nil {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	if got := s.BatchStats().FilesDeleted; got != 2 {
		t.Errorf("FilesDeleted = %d, want 2", got)
	}
	if _, err := c.GetFileContent(bctx(t), b.InputFileID); apiError(t, err).HTTPStatusCode != http.StatusNotFound {
		t.Errorf("deleted file still served: %v", err)
	}
}

func TestBatchLimitsFailTheBatch(t *testing.T) {
	// One token per word keeps the enqueued-token arithmetic below obvious.
	s := start(t, fake.Options{CountTokens: func(s string) int { return len(strings.Fields(s)) }})
	c, _ := client(s, key)
	s.SetBatchLimits(fake.BatchLimits{MaxRequests: 5, MaxInputs: 8, MaxFileBytes: 4 << 10, MaxEnqueuedTokens: 30})

	cases := []struct {
		name  string
		lines goopenai.UploadBatchFileRequest
		code  string
	}{
		{"requests", batchLines(6, text), "too_many_requests"},
		{"inputs", func() goopenai.UploadBatchFileRequest {
			var r goopenai.UploadBatchFileRequest
			for i := range 3 {
				r.AddEmbedding(fmt.Sprint(i), goopenai.EmbeddingRequest{Input: []string{"a", "b", "c"}, Model: goopenai.SmallEmbedding3})
			}
			return r
		}(), "too_many_inputs"},
		{"tokens", batchLines(4, func(i int) string { return strings.Repeat("word ", 10) }), "token_limit_exceeded"},
		{"duplicate", batchLines(2, text), ""},
	}
	cases[3].lines.Lines = append(cases[3].lines.Lines, cases[3].lines.Lines[0])
	cases[3].code = "duplicate_custom_id"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			end := poll(t, c, submit(t, c, tc.lines, nil).ID)
			if end.Status != "failed" || end.Errors == nil || len(end.Errors.Data) != 1 || end.Errors.Data[0].Code != tc.code {
				t.Fatalf("want failed with %s, got %+v", tc.code, end)
			}
			if tc.code == "duplicate_custom_id" && (end.Errors.Data[0].Line == nil || *end.Errors.Data[0].Line != 3) {
				t.Fatalf("the duplicate is line 3: %+v", end.Errors.Data[0])
			}
			if end.OutputFileID != nil || end.Errors.Data[0].Message == "" {
				t.Fatalf("failed batch: %+v", end)
			}
		})
	}
	if got := s.BatchStats().LinesEmbedded; got != 0 {
		t.Errorf("failed batches embedded %d lines", got)
	}

	// Bytes: the upload itself is refused.
	big := batchLines(1, func(int) string { return strings.Repeat("x", 5<<10) })
	_, err := c.UploadBatchFile(bctx(t), big)
	if e := apiError(t, err); e.HTTPStatusCode != http.StatusBadRequest || !strings.Contains(e.Message, "4096") {
		t.Fatalf("oversized file: %v", err)
	}

	// Enqueued tokens count the other open batches of the model.
	s.SetBatchLimits(fake.BatchLimits{MaxEnqueuedTokens: 8})
	first := submit(t, c, batchLines(2, text), nil) // 4 tokens
	s.HoldBatches(true)
	s.StepBatch(first.ID, 1)                         // validated, in progress with one line done
	second := submit(t, c, batchLines(3, text), nil) // 6 more: over 8
	s.StepBatch(second.ID, 0)
	if st := s.BatchStatus(second.ID); st != "failed" {
		t.Fatalf("second batch over the enqueued cap: %s", st)
	}
	s.FinishBatch(first.ID)
	third := submit(t, c, batchLines(3, text), nil)
	s.HoldBatches(false)
	if end := poll(t, c, third.ID); end.Status != "completed" {
		t.Fatalf("after the first finished, the cap has room again: %+v %+v", end, end.Errors)
	}
}

func TestBatchErrorLinesAndExpiry(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	s.RefuseMarker("BAD", "Input contains disallowed content.")
	const n = 20
	texts := func(i int) string {
		if i%7 == 3 {
			return "BAD " + text(i)
		}
		return text(i)
	}
	s.ExpireNextBatch(10)
	end := poll(t, c, submit(t, c, batchLines(n, texts), nil).ID)
	if end.Status != "expired" || end.ExpiredAt == nil {
		t.Fatalf("want expired: %+v", end)
	}
	out, errs := readLines(t, c, end.OutputFileID), readLines(t, c, end.ErrorFileID)
	var refused, expired int
	seen := map[string]bool{}
	for _, l := range out {
		seen[l.CustomID] = true
	}
	for _, l := range errs {
		if seen[l.CustomID] {
			t.Fatalf("%s in both files", l.CustomID)
		}
		seen[l.CustomID] = true
		switch {
		case l.Error != nil && l.Error.Code == "batch_expired" && l.Response == nil:
			expired++
		case l.Response != nil && l.Response.StatusCode == http.StatusBadRequest && strings.Contains(string(l.Response.Body), "disallowed content"):
			var row int
			_, _ = fmt.Sscanf(l.CustomID, "row-%d", &row)
			if row%7 != 3 {
				t.Errorf("%s refused but holds no marker", l.CustomID)
			}
			refused++
		default:
			t.Fatalf("unexpected error line %+v", l)
		}
	}
	if len(seen) != n || expired != n-10 || len(out)+refused != 10 {
		t.Fatalf("%d lines reported, %d ok, %d refused, %d expired", len(seen), len(out), refused, expired)
	}
	if end.RequestCounts.Completed != len(out) || end.RequestCounts.Failed != n-len(out) {
		t.Errorf("request_counts %+v", end.RequestCounts)
	}
	if st := s.BatchStats(); st.LinesExpired != int64(expired) || st.LinesEmbedded != int64(len(out)) || st.LinesFailed != int64(refused) {
		t.Errorf("stats %+v", st)
	}
}

func TestBatchCancelAndList(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	s.HoldBatches(true)
	var ids []string
	for i := range 3 {
		ids = append(ids, submit(t, c, batchLines(4, text), map[string]any{"batch": fmt.Sprint(i)}).ID)
	}
	s.StepBatch(ids[0], 0)
	s.StepBatch(ids[0], 2) // two lines done
	b, err := c.CancelBatch(bctx(t), ids[0])
	if err != nil || b.Status != "cancelling" {
		t.Fatalf("cancel: %v %+v", err, b)
	}
	s.HoldBatches(false)
	end := poll(t, c, ids[0])
	if end.Status != "cancelled" || end.CancelledAt == nil || len(readLines(t, c, end.OutputFileID)) != 2 {
		t.Fatalf("cancelled batch keeps its executed lines: %+v", end)
	}
	if _, err := c.CancelBatch(bctx(t), ids[0]); apiError(t, err).HTTPStatusCode != http.StatusConflict {
		t.Fatalf("cancel of a cancelled batch: %v", err)
	}
	if _, err := c.RetrieveBatch(bctx(t), "batch_nope"); apiError(t, err).HTTPStatusCode != http.StatusNotFound {
		t.Fatalf("unknown batch: %v", err)
	}

	limit := 2
	page, err := c.ListBatch(bctx(t), nil, &limit)
	if err != nil || len(page.Data) != 2 || !page.HasMore || page.Data[0].ID != ids[2] || page.Data[1].ID != ids[1] {
		t.Fatalf("first page: %v %+v", err, page)
	}
	rest, err := c.ListBatch(bctx(t), &page.LastID, &limit)
	if err != nil || len(rest.Data) != 1 || rest.HasMore || rest.Data[0].ID != ids[0] || rest.Data[0].Metadata["batch"] != "0" {
		t.Fatalf("second page: %v %+v", err, rest)
	}
	if got := s.BatchStats().BatchesCanceled; got != 1 {
		t.Errorf("BatchesCanceled = %d", got)
	}
}

func TestBatchCreateRefusesBadRequests(t *testing.T) {
	s := start(t, fake.Options{})
	c, _ := client(s, key)
	f, err := c.UploadBatchFile(bctx(t), batchLines(1, text))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []goopenai.CreateBatchRequest{
		{InputFileID: "file-missing", Endpoint: goopenai.BatchEndpointEmbeddings},
		{InputFileID: f.ID, Endpoint: goopenai.BatchEndpointChatCompletions},
		{InputFileID: f.ID, Endpoint: goopenai.BatchEndpointEmbeddings, CompletionWindow: "1h"},
	} {
		if _, err := c.CreateBatch(bctx(t), req); apiError(t, err).HTTPStatusCode/100 != 4 {
			t.Errorf("%+v accepted: %v", req, err)
		}
	}
	bad, _ := client(s, "sk-wrong")
	if _, err := bad.ListBatch(bctx(t), nil, nil); apiError(t, err).HTTPStatusCode != http.StatusUnauthorized {
		t.Errorf("wrong key: %v", err)
	}
	if got := s.BatchStats().BatchesCreated; got != 0 {
		t.Errorf("refused creates counted: %d", got)
	}
}
