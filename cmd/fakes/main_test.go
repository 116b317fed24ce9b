package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	pc "github.com/pinecone-io/go-pinecone/v5/pinecone"
	goopenai "github.com/sashabaranov/go-openai"
)

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-index", "docs"},
		{"-index", "docs:0"},
		{"-index", "docs:8", "-index", "docs:16"},
		{"-index", "docs:8", "-openai-rpm", "-1"},
	} {
		if err := run(context.Background(), args, io.Discard, logr.Discard()); err == nil {
			t.Errorf("%q: want an error", args)
		}
	}
}

func TestServesAndPrintsURLs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-index", "docs:8", "-index", "big:1536", "-openai-keys", "sk-a", "-pinecone-keys", "pc-a", "-openai-rpm", "100"}, w, logr.Discard())
		_ = w.Close()
	}()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("read URLs: %v (run: %v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	var out output
	if err := json.Unmarshal([]byte(line), &out); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}

	cfg := goopenai.DefaultConfig("sk-a")
	cfg.BaseURL = out.OpenAI.BaseURL
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	res, err := goopenai.NewClientWithConfig(cfg).CreateEmbeddings(rctx, goopenai.EmbeddingRequestStrings{
		Input: []string{"hello"}, Model: goopenai.SmallEmbedding3, EncodingFormat: goopenai.EmbeddingEncodingFormatBase64,
	})
	if err != nil || len(res.Data) != 1 || len(res.Data[0].Embedding) != 1536 {
		t.Fatalf("embeddings via %s: %v", out.OpenAI.BaseURL, err)
	}

	client, err := pc.NewClient(pc.NewClientParams{ApiKey: "pc-a", Host: out.Pinecone.ControlURL})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := client.DescribeIndex(rctx, "big")
	if err != nil || *desc.Dimension != 1536 || desc.Host != out.Pinecone.Indexes["big"].Host || !strings.HasPrefix(desc.Host, "http://") {
		t.Fatalf("describe: %+v %v (printed %+v)", desc, err, out.Pinecone)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
