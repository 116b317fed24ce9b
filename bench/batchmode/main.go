// Command batchmode measures batch mode (spec.embedding.mode: batch) on the fakes and writes its
// section of docs/benchmarks.md: the generated legacy file planned by `embedder plan` and each
// chunk run by `embedder chunk` (the real binary, as the pods run it: submission, polling,
// collection, upsert) against MinIO, the OpenAI fake's Batch API and the Pinecone fake, with the
// peak RSS of each pod kind, the bytes uploaded to and downloaded from the Files API, the Batch
// API requests, and the cost of the billed tokens at the batch rate against the online price.
// It runs alone (`go run ./bench/batchmode -rows 1000000`, after `make build`) and replaces only
// its own section.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/bench/report"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const (
	beginMarker = "<!-- batch mode: written by go run ./bench/batchmode -->"
	endMarker   = "<!-- end of batch mode -->"
	bucket      = "csv-storage"
	openaiKey   = "sk-bench"
	pcKey       = "pc-bench"
	index       = "bench"
	dims        = 1536
	model       = "text-embedding-3-small"
)

// proc is one embedder process's figures.
type proc struct {
	kind     string
	wall     time.Duration
	peakMiB  float64
	anonMiB  float64
	upserted int64
}

func main() {
	rows := flag.Int("rows", 1000000, "rows of the generated legacy file")
	perChunk := flag.Int("rows-per-chunk", 250000, "spec.chunking.rowsPerChunk")
	out := flag.String("out", "docs/benchmarks.md", "report to update (empty: print only)")
	planOnly := flag.Bool("plan-only", false, "run only `embedder plan` and print its peak RSS (no report; with VECTORDB_HEAPPROFILE set, its peak heap profile is written there)")
	online := flag.Bool("online", false, "with -plan-only: plan the same file in online mode (the planner does not branch on the mode; this shows it)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	mode := v1alpha1.EmbeddingBatch
	if *online {
		if !*planOnly {
			fmt.Fprintln(os.Stderr, "bench batchmode: -online needs -plan-only")
			os.Exit(2)
		}
		mode = v1alpha1.EmbeddingOnline
	}
	md, err := measure(ctx, *rows, *perChunk, *planOnly, mode, start)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench batchmode:", err)
		os.Exit(1)
	}
	fmt.Print(md)
	if *out != "" && !*planOnly {
		if err := report.ReplaceSection(*out, beginMarker, endMarker, md); err != nil {
			fmt.Fprintln(os.Stderr, "bench batchmode:", err)
			os.Exit(1)
		}
	}
}

func measure(ctx context.Context, rows, perChunk int, planOnly bool, mode string, start time.Time) (string, error) {
	dir, err := os.MkdirTemp("", "bench-batchmode-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	m, err := harness.NewMinIO(bucket)
	if err != nil {
		return "", err
	}
	defer m.Stop()
	// The fake bills with the real tokenizer, so the tokens are what OpenAI would bill.
	oa, err := fakeopenai.Start(fakeopenai.Options{APIKeys: []string{openaiKey}})
	if err != nil {
		return "", err
	}
	defer oa.Close()
	// The default enqueued-token cap is tier 1's; a backfill this size is run at a higher tier.
	oa.SetBatchLimits(fakeopenai.BatchLimits{MaxEnqueuedTokens: -1})
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{index: dims}, APIKeys: []string{pcKey}, DiscardValues: true})
	if err != nil {
		return "", err
	}
	defer pc.Close()

	fmt.Fprintf(os.Stderr, "bench batchmode: generating %d rows...\n", rows)
	var buf bytes.Buffer
	if _, err := csvgen.Write(&buf, csvgen.Options{Rows: rows, Seed: 239}); err != nil {
		return "", err
	}
	fileBytes := buf.Len()
	key := "bench/batch.csv"
	if err := upload(ctx, m, key, buf.Bytes()); err != nil {
		return "", err
	}
	buf = bytes.Buffer{}

	ing := worker.Ingestion{Name: "batch", Namespace: "bench", UID: "uid-bench-batch", TaskID: "bench-batch",
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: bucket, Key: key,
				S3Connection: v1alpha1.S3Connection{Region: "us-east-1", Endpoint: m.Endpoint}},
				CSV: v1alpha1.CSVFormat{Delimiter: ",", Compression: "auto", Encoding: "utf-8"}},
			Mapping: v1alpha1.MappingSpec{IDColumn: "id", IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy",
				Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}},
			Embedding: v1alpha1.EmbeddingSpec{Model: model, Dimensions: dims, BaseURL: oa.URL(), Mode: mode,
				RequestsPerMinute: 300, TokensPerMinute: 1000000, MaxInputsPerRequest: 2048,
				Batch: &v1alpha1.EmbeddingBatchSpec{MaxEnqueuedTokens: 1_000_000_000}},
			Target:     v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: index, Namespace: "batch", BatchSize: 100}},
			Chunking:   v1alpha1.ChunkingSpec{RowsPerChunk: int32(perChunk), Parallelism: 1, RetriesPerChunk: 3, MaxFailedRowsPercent: 1},
			DeadLetter: &v1alpha1.DeadLetterSpec{Bucket: bucket, KeyPrefix: "failed/"},
		}}
	ingJSON, err := ing.Encode()
	if err != nil {
		return "", err
	}
	env := []string{worker.EnvIngestion + "=" + ingJSON, worker.EnvOpenAIAPIKey + "=" + openaiKey, worker.EnvPineconeAPIKey + "=" + pcKey,
		"PINECONE_CONTROL_HOST=" + pc.ControlURL(), "AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"AWS_REGION=us-east-1", "TMPDIR=" + dir}

	fmt.Fprintln(os.Stderr, "bench batchmode: plan...")
	planProc, planOut, err := run(ctx, "plan", []string{"plan", "--stdout"}, env)
	if err != nil {
		return "", err
	}
	var plan worker.Plan
	if err := json.Unmarshal([]byte(planOut), &plan); err != nil {
		return "", fmt.Errorf("plan output: %w", err)
	}
	if planOnly {
		return fmt.Sprintf("%s plan of %d rows: peak RSS %.1f MiB, anon %.1f MiB, wall %s, %d chunks, %d estimated tokens\n",
			mode, rows, planProc.peakMiB, planProc.anonMiB, planProc.wall.Round(100*time.Millisecond), plan.Chunks(), plan.EstimatedTokens), nil
	}
	procs := []proc{planProc}
	var upserted int64
	for i := range plan.Chunks() {
		args, err := plan.Chunk(i)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(os.Stderr, "bench batchmode: chunk %d of %d (%d rows)...\n", i+1, plan.Chunks(), args.Rows)
		p, stdout, err := run(ctx, "chunk", args.Flags(), env)
		if err != nil {
			return "", err
		}
		var res worker.Result
		_ = json.Unmarshal([]byte(lastLine(stdout)), &res)
		p.upserted = res.VectorsUpserted
		upserted += res.VectorsUpserted
		procs = append(procs, p)
	}
	// Every batch-mode run ends with its cleanup Job (the controller runs it to cancel what
	// unfinished chunks left and delete the staged objects): measured too, reading the plan
	// ConfigMap from a stand-in API server.
	fmt.Fprintln(os.Stderr, "bench batchmode: cleanup...")
	kubeconfig, stopKube, err := planServer(ctx, ing, &plan, dir)
	if err != nil {
		return "", err
	}
	defer stopKube()
	cp, _, err := run(ctx, "cleanup", []string{"cleanup"}, append(env, "KUBECONFIG="+kubeconfig))
	if err != nil {
		return "", err
	}
	// It ends within milliseconds, before /proc is polled: its peak comes from GNU time, which
	// reads the child's maximum resident set size from wait4 (no anon figure then).
	if hwm, err := timedPeak(ctx, []string{"cleanup"}, append(env, "KUBECONFIG="+kubeconfig)); err == nil {
		cp.peakMiB, cp.anonMiB = max(cp.peakMiB, hwm), -1
	} else {
		fmt.Fprintln(os.Stderr, "bench batchmode: cleanup peak from /usr/bin/time:", err)
	}
	procs = append(procs, cp)
	st := oa.BatchStats()
	if upserted != int64(rows) || st.LinesEmbedded != int64(rows) {
		return "", fmt.Errorf("%d vectors upserted and %d lines embedded for %d rows", upserted, st.LinesEmbedded, rows)
	}
	return markdown(rows, perChunk, fileBytes, plan, procs, st, oa.Stats(), len(oa.FileIDs()), start), nil
}

// memConfigMaps keeps the ConfigMap the planner's code writes.
type memConfigMaps struct{ cm *corev1.ConfigMap }

func (c *memConfigMaps) Get(context.Context, string, string) (*corev1.ConfigMap, error) {
	return c.cm, nil
}

func (c *memConfigMaps) Create(_ context.Context, cm *corev1.ConfigMap) error { c.cm = cm; return nil }

// planServer serves the plan ConfigMap (built by the planner's own code) at its API path, as
// the API server would to the cleanup pod, and writes a kubeconfig pointing at it.
func planServer(ctx context.Context, ing worker.Ingestion, plan *worker.Plan, dir string) (string, func(), error) {
	var cms memConfigMaps
	if err := planner.WritePlanConfigMap(ctx, &cms, ing, plan); err != nil {
		return "", nil, err
	}
	cm := cms.cm.DeepCopy()
	cm.APIVersion, cm.Kind = "v1", "ConfigMap"
	body, err := json.Marshal(cm)
	if err != nil {
		return "", nil, err
	}
	path := "/api/v1/namespaces/" + ing.Namespace + "/configmaps/" + cm.Name
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != path {
			http.Error(w, "not served here", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: %s\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\ncurrent-context: bench\nusers:\n- name: bench\n  user: {}\n", srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		srv.Close()
		return "", nil, err
	}
	return kubeconfig, srv.Close, nil
}

func upload(ctx context.Context, m *harness.MinIO, key string, body []byte) error {
	_, err := m.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	return err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// run executes bin/embedder with args and polls its peak RSS from /proc (getrusage's Maxrss of a
// child of a Go process reports the parent's).
func run(ctx context.Context, kind string, args, env []string) (proc, string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(harness.BinDir(), "embedder"), append(args, "--log-level", "error")...)
	cmd.Env = append(os.Environ(), env...)
	term := filepath.Join(os.TempDir(), fmt.Sprintf("bench-batch-term-%d", time.Now().UnixNano()))
	cmd.Env = append(cmd.Env, worker.EnvTerminationLog+"="+term)
	defer os.Remove(term)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return proc{}, "", err
	}
	p := proc{kind: kind}
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if hwm, anon, err := readMem(cmd.Process.Pid); err == nil {
				p.peakMiB, p.anonMiB = max(p.peakMiB, hwm), max(p.anonMiB, anon)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	<-polled
	p.wall = time.Since(t0)
	out := stdout.String()
	if kind == "chunk" {
		// The chunk's result is its termination message.
		if b, rerr := os.ReadFile(term); rerr == nil {
			out = string(b)
		}
	}
	if err != nil {
		return p, out, fmt.Errorf("embedder %s: %w\n%s", kind, err, tail(stderr.String(), 4000))
	}
	return p, out, nil
}

// timedPeak runs bin/embedder with args under /usr/bin/time and returns its peak RSS in MiB.
func timedPeak(ctx context.Context, args, env []string) (float64, error) {
	out := filepath.Join(os.TempDir(), fmt.Sprintf("bench-batch-time-%d", time.Now().UnixNano()))
	defer os.Remove(out)
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", out,
		filepath.Join(harness.BinDir(), "embedder")}, append(args, "--log-level", "error")...)...)
	term := out + ".term"
	defer os.Remove(term)
	cmd.Env = append(append(os.Environ(), env...), worker.EnvTerminationLog+"="+term)
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%w: %s", err, tail(string(b), 2000))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	kib, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return 0, fmt.Errorf("/usr/bin/time output %q: %w", b, err)
	}
	return kib / 1024, nil
}

func readMem(pid int) (hwm, anon float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		kb, perr := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch {
		case perr != nil:
		case k == "VmHWM":
			hwm, found = kb/1024, true
		case k == "RssAnon":
			anon = kb / 1024
		}
	}
	if !found {
		return 0, 0, errors.New("no VmHWM")
	}
	return hwm, anon, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func markdown(rows, perChunk, fileBytes int, plan worker.Plan, procs []proc, st fakeopenai.BatchStats, online fakeopenai.Stats, filesLeft int, start time.Time) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	load, _ := os.ReadFile("/proc/loadavg")
	w(beginMarker)
	w("## Batch mode (OpenAI Batch API)")
	w("")
	w("`go run ./bench/batchmode -rows %d -rows-per-chunk %d` (after `make build`), %s, %d CPUs, load average %s at the end; %s. The generated legacy file (test/csvgen, %d rows, %.1f MB, legacy mapping, %d dimensions) planned by `embedder plan` and each of its %d chunks run by `embedder chunk` one after the other, as the pods run them: submission (batch files written to TMPDIR and uploaded as streamed multipart), polling, collection of the output files into the row-indexed spool, and the upsert pass. MinIO for S3, the OpenAI fake's Files and Batches API (billing with the real tokenizer; a batch completes as it is polled), the Pinecone fake (values discarded).",
		rows, perChunk, time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "),
		time.Since(start).Round(time.Second), rows, float64(fileBytes)/1e6, dims, plan.Chunks())
	w("")
	w("| pod kind | runs | **peak RSS** (target ≤ 64 MiB) | anon | longest wall time | vectors upserted |")
	w("|---|---|---|---|---|---|")
	for _, kind := range []string{"plan", "chunk", "cleanup"} {
		var n int
		var peak, anon float64
		var wall time.Duration
		var ups int64
		var noAnon bool
		for _, p := range procs {
			if p.kind != kind {
				continue
			}
			n++
			peak, anon, wall = max(peak, p.peakMiB), max(anon, p.anonMiB), max(wall, p.wall)
			noAnon = noAnon || p.anonMiB < 0
			ups += p.upserted
		}
		anonCell := fmt.Sprintf("%.1f MiB", anon)
		if noAnon {
			anonCell = "— (peak from /usr/bin/time)"
		}
		w("| %s | %d | **%.1f MiB** | %s | %s | %d |", kind, n, peak, anonCell, wall.Round(100*time.Millisecond), ups)
	}
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| batches created | %d |", st.BatchesCreated)
	w("| Files and Batches API requests | %d |", st.Requests)
	w("| embeddings requests (online endpoint) | %d |", online.Requests)
	w("| lines embedded | %d |", st.LinesEmbedded)
	w("| bytes uploaded (batch files) | %.1f MB (%.0f bytes a row) |", float64(st.BytesUploaded)/1e6, float64(st.BytesUploaded)/float64(rows))
	w("| bytes downloaded (output files, base64 vectors) | %.1f MB (%.0f bytes a row) |", float64(st.BytesDownloaded)/1e6, float64(st.BytesDownloaded)/float64(rows))
	w("| files left at OpenAI | %d (%d deleted: every chunk deletes its input and output files) |", filesLeft, st.FilesDeleted)
	w("| tokens billed | %d |", st.Tokens)
	w("| **cost at the batch rate** | **%s USD** |", tokens.BatchCostUSD(model, st.Tokens))
	w("| cost of the same tokens online | %s USD (saved: %s USD) |", tokens.CostUSD(model, st.Tokens), tokens.BatchSavingUSD(model, st.Tokens))
	w("| plan's estimate | %d tokens |", plan.EstimatedTokens)
	w(endMarker)
	return b.String()
}
