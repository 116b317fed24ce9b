// Command fakes runs the OpenAI embeddings fake and the Pinecone fake on loopback for the demo and
// benchmarks. It prints their URLs as one JSON line on stdout, runs until SIGINT or SIGTERM, then
// logs the fakes' counters to stderr.
//
//	fakes -index docs:1536 -openai-rpm 300 -openai-tpm 1000000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

// indexFlags collects repeated -index name:dimension[@host:port] values.
type indexFlags struct {
	dims  map[string]int
	addrs map[string]string
}

func (f *indexFlags) String() string { return "" }

func (f *indexFlags) Set(v string) error {
	spec, addr, _ := strings.Cut(v, "@")
	name, d, ok := strings.Cut(spec, ":")
	dim, err := strconv.Atoi(d)
	if !ok || name == "" || err != nil || dim <= 0 {
		return fmt.Errorf("want name:dimension[@host:port], got %q", v)
	}
	if _, dup := f.dims[name]; dup {
		return fmt.Errorf("index %q given twice", name)
	}
	f.dims[name] = dim
	if addr != "" {
		f.addrs[name] = addr
	}
	return nil
}

func splitKeys(s string) []string {
	var keys []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// output is the JSON line printed on start.
type output struct {
	OpenAI struct {
		BaseURL string `json:"baseURL"`
	} `json:"openai"`
	Pinecone struct {
		ControlURL string                   `json:"controlURL"`
		Indexes    map[string]indexEndpoint `json:"indexes"`
	} `json:"pinecone"`
}

type indexEndpoint struct {
	Host      string `json:"host"`
	Dimension int    `json:"dimension"`
}

func main() {
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, log)
	stop()
	if err != nil {
		log.Error(err, "fakes failed")
		os.Exit(1)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout io.Writer, log logr.Logger) error {
	fs := flag.NewFlagSet("fakes", flag.ContinueOnError)
	idx := &indexFlags{dims: map[string]int{}, addrs: map[string]string{}}
	fs.Var(idx, "index", "Pinecone index as name:dimension[@host:port]; repeatable, at least one")
	oaiAddr := fs.String("openai-addr", "127.0.0.1:0", "OpenAI fake listen address")
	oaiKeys := fs.String("openai-keys", "", "comma-separated accepted OpenAI keys (empty: any key); also read from $FAKE_OPENAI_KEYS")
	rpm := fs.Int("openai-rpm", 0, "requests per window enforced by the OpenAI fake (0: unlimited)")
	tpm := fs.Int("openai-tpm", 0, "tokens per window enforced by the OpenAI fake (0: unlimited)")
	window := fs.Duration("openai-window", time.Minute, "length of the OpenAI fake's sliding rate-limit window")
	oaiLatency := fs.Duration("openai-latency", 0, "latency added to every OpenAI response")
	pcAddr := fs.String("pinecone-addr", "127.0.0.1:0", "Pinecone control-plane listen address")
	pcKeys := fs.String("pinecone-keys", "", "comma-separated accepted Pinecone keys (empty: any key); also read from $FAKE_PINECONE_KEYS")
	pcLatency := fs.Duration("pinecone-latency", 0, "latency added to every Pinecone data-plane call")
	discard := fs.Bool("discard-values", false, "keep only vector ids and metadata in the Pinecone fake (large benchmarks)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse flags: %w", err)
	}
	if len(idx.dims) == 0 {
		return errors.New("give at least one -index name:dimension")
	}

	// Keys may come from the environment so that they stay out of the process list.
	oai, err := openai.Start(openai.Options{
		Addr:    *oaiAddr,
		APIKeys: append(splitKeys(*oaiKeys), splitKeys(os.Getenv("FAKE_OPENAI_KEYS"))...),
		RPM:     *rpm, TPM: *tpm, Window: *window, Latency: *oaiLatency,
	})
	if err != nil {
		return fmt.Errorf("start OpenAI fake: %w", err)
	}
	defer func() { _ = oai.Close() }()
	pc, err := pinecone.Start(pinecone.Options{
		Indexes:       idx.dims,
		DataAddrs:     idx.addrs,
		APIKeys:       append(splitKeys(*pcKeys), splitKeys(os.Getenv("FAKE_PINECONE_KEYS"))...),
		ControlAddr:   *pcAddr,
		Latency:       *pcLatency,
		DiscardValues: *discard,
	})
	if err != nil {
		return fmt.Errorf("start Pinecone fake: %w", err)
	}
	defer func() { _ = pc.Close() }()

	var out output
	out.OpenAI.BaseURL = oai.URL()
	out.Pinecone.ControlURL = pc.ControlURL()
	out.Pinecone.Indexes = map[string]indexEndpoint{}
	for _, name := range pc.IndexNames() {
		out.Pinecone.Indexes[name] = indexEndpoint{Host: pc.Index(name).Host(), Dimension: pc.Index(name).Dimension()}
	}
	line, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode URLs: %w", err)
	}
	if _, err := fmt.Fprintln(stdout, string(line)); err != nil {
		return fmt.Errorf("print URLs: %w", err)
	}

	<-ctx.Done()

	st, peak := oai.Stats(), oai.Peak()
	log.Info("openai fake stopped", "requests", st.Requests, "accepted", st.Accepted, "inputs", st.Inputs,
		"tokens", st.Tokens, "rateLimited", st.RateLimited, "peakRequests", peak.Requests, "peakTokens", peak.Tokens)
	for _, name := range pc.IndexNames() {
		i := pc.Index(name)
		is := i.Stats()
		log.Info("pinecone index stopped", "index", name, "vectors", i.Count(), "upsertCalls", is.UpsertCalls,
			"upsertedVectors", is.UpsertedVectors, "duplicateUpserts", is.DuplicateUpserts, "maxUpsertBatch", is.MaxUpsertBatch)
	}
	return nil
}
