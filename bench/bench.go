package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/profiling"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// Config sizes a benchmark run. DefaultConfig is `make bench`; the test uses a tiny one.
type Config struct {
	Dimensions int
	RPM        int
	// EfficiencyRows and FloorTarget: the TPM cap is chosen so that the file's tokens take
	// FloorTarget at that cap (the floor must dominate pod start and planning).
	EfficiencyRows int
	FloorTarget    time.Duration
	RowsPerChunk   int32
	Parallelism    int32
	// OldFor bounds the old-pattern run (one input per request); it is extrapolated.
	OldFor time.Duration
	// PipelineRows run through one embedder with instant fakes.
	PipelineRows int
	// MemRows are the embedder peak-RSS runs; the largest file is also the planner's.
	MemRows []int
	// MemTimeout bounds each memory run.
	MemTimeout time.Duration
	// ManagerChunks and ManagerParallelism shape the manager run; ManagerTimeout bounds it.
	ManagerChunks      int
	ManagerParallelism int32
	ManagerTimeout     time.Duration
	// ManagerProfileDir, when set, receives CPU profiles of the manager over each pass-cost
	// window (manager-start.pprof, manager-end.pprof): what a pass spends its time on.
	ManagerProfileDir string
	TmpDir            string
	// GzipRows is the size of the gzip-reads file (0: that phase is left out).
	GzipRows int
	// Fleet phase: ingestions of FleetRows rows on one key, created at FleetStarts after the first,
	// under a TPM cap chosen so that their tokens take FleetFloor; run before (leases off) and
	// after (leases renewed every FleetRenew). No rows: the phase is left out.
	FleetRows         []int
	FleetStarts       []time.Duration
	FleetFloor        time.Duration
	FleetRowsPerChunk int32
	FleetParallelism  int32
	FleetRenew        time.Duration
	// Skip names phases to leave out (efficiency, old, manager, pipeline, gzip, fleet), for iterating.
	Skip     map[string]bool
	Log      logr.Logger
	Progress io.Writer
}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{Dimensions: 1536, RPM: 300, EfficiencyRows: 100000, FloorTarget: 5 * time.Minute,
		RowsPerChunk: 25000, Parallelism: 4, OldFor: 90 * time.Second, PipelineRows: 50000,
		MemRows: []int{10000, 1000000}, MemTimeout: 15 * time.Minute,
		ManagerChunks: 10000, ManagerParallelism: 100, ManagerTimeout: 45 * time.Minute,
		GzipRows: GzipReadsRows,
		// ≈ 5 min of fleet at the floor (issue #26): pod start-up and the fake's 60 s window stay
		// small beside it; each mode takes about that long.
		FleetRows: []int{8000, 6000, 4000, 2000}, FleetStarts: []time.Duration{0, 0, 10 * time.Second, 20 * time.Second},
		FleetFloor: 5 * time.Minute, FleetRowsPerChunk: 2000, FleetParallelism: 2, FleetRenew: 3 * time.Second}
}

// Report holds every figure.
type Report struct {
	// Ran names the phases that ran (efficiency, old, pipeline, gzip, manager): the report
	// renders only their sections, never empty tables for skipped ones.
	Ran        map[string]bool
	Efficiency Efficiency
	Old        Old
	Pipeline   Pipeline
	Planner    Planner
	Memory     []Memory
	Outlier    Outlier
	Manager    Manager
	GzipReads  GzipReads
	Fleet      Fleet
}

// Efficiency is the capped whole-cluster run.
type Efficiency struct {
	Rows, FileBytes, FileTokens, TPM, RPM int64
	Floor, Wall                           time.Duration
	Ratio                                 float64
	Phase                                 string
	Vectors, Missing, Unexpected          int64
	DuplicateUpserts                      int64
	FailedAttempts                        int64 // chunk pods that failed (and were retried)
	Requests, RateLimited                 int64
	PeakRPM, PeakTPM                      int
	RowsPerChunk, Parallelism             int32
}

// Old is the one-input-per-request run, bounded and extrapolated.
type Old struct {
	Ran                 time.Duration
	RowsDone            int64
	SteadyRowsPerSecond float64
	Floor               time.Duration
	Extrapolated        time.Duration
	RatioToNew          float64
}

// Pipeline is one embedder against instant fakes.
type Pipeline struct {
	Rows                int64
	Wall, CPU           time.Duration
	RowsPerSecond       float64
	RowsPerCPUSecond    float64
	MaxRSSMiB           float64
	ProfileTop          string
	VectorsUpserted     int64
	PlanMillis, RunMill int64
}

// Planner is csvplan's scan speed.
type Planner struct {
	Bytes   int64
	Rows    int64
	Elapsed time.Duration
	MBps    float64
	Source  string
}

// Memory is one embedder's peak RSS on a file.
type Memory struct {
	Rows            int
	FileBytes       int64
	MaxRSSMiB       float64
	MaxAnonMiB      float64 // the process's own memory (RssAnon)
	MaxFileMiB      float64 // mapped pages of the binary and libraries (RssFile), shared and reclaimable
	PlanMillis      int64
	Wall            time.Duration
	VectorsUpserted int64
	Finished        bool
}

// Manager is the manager's cost with many chunks.
type Manager struct {
	Chunks, Finished       int
	Wall                   time.Duration
	PeakRSSMiB             float64
	APIRequests            float64
	APIRequestsPerChunk    float64
	APIWritesPerChunk      float64
	Phase                  string
	ByVerb                 map[string]float64
	ParallelismUsed        int32
	FinishedWithinDeadline bool
	// PassCost compares the CPU of a reconcile pass near the start and near the end.
	PassCost PassCost
}

func (c Config) logf(format string, a ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
}

// Run measures everything with one local stack.
func Run(ctx context.Context, c Config) (*Report, error) {
	if c.TmpDir == "" {
		c.TmpDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(c.TmpDir, "vectordb-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	r := &Report{Ran: map[string]bool{}}
	if c.Skip["efficiency"] && c.Skip["old"] && c.Skip["pipeline"] && (c.Skip["fleet"] || len(c.FleetRows) == 0) {
		// The manager phase brings up its own stack.
		if !c.Skip["manager"] {
			r.Ran["manager"] = true
			if err := runManager(ctx, c, dir, r); err != nil {
				return r, fmt.Errorf("manager: %w", err)
			}
		}
		return r, nil
	}
	c.logf("starting the local stack")
	st, err := stack.Start(ctx, stack.Options{Dimensions: c.Dimensions, Log: c.Log, WorkDir: filepath.Join(dir, "stack")})
	if err != nil {
		return nil, fmt.Errorf("start stack: %w", err)
	}
	defer st.Stop()
	if !c.Skip["efficiency"] {
		r.Ran["efficiency"] = true
		if err := runEfficiency(ctx, c, st, r); err != nil {
			return r, fmt.Errorf("efficiency: %w", err)
		}
	}
	// One phase at a time: the CPU figures (pipeline, memory) and the manager's throughput are
	// not shared with another phase's work on the two cores.
	if !c.Skip["old"] {
		r.Ran["old"] = true
		if err := runOld(ctx, c, st, r); err != nil {
			return r, fmt.Errorf("old pattern: %w", err)
		}
	}
	if !c.Skip["pipeline"] {
		r.Ran["pipeline"] = true
		if err := runPipelineAndMemory(ctx, c, st, dir, r); err != nil {
			return r, fmt.Errorf("pipeline: %w", err)
		}
	}
	if !c.Skip["gzip"] && c.GzipRows > 0 {
		g, err := runGzipReads(ctx, c, st.MinIO, dir, c.GzipRows, 1000, max(1, GzipReadsSampleEvery*c.GzipRows/GzipReadsRows))
		if err != nil {
			return r, fmt.Errorf("gzip reads: %w", err)
		}
		r.GzipReads = *g
		r.Ran["gzip"] = true
	}
	if !c.Skip["fleet"] && len(c.FleetRows) > 0 {
		r.Ran["fleet"] = true
		r.Fleet.FloorShort = fmt.Sprintf("the issue asks for ≈ 5 min; this run: %s", c.FleetFloor)
		if err := runFleet(ctx, c, st, r); err != nil {
			return r, fmt.Errorf("fleet: %w", err)
		}
	}
	if !c.Skip["manager"] {
		r.Ran["manager"] = true
		if err := runManager(ctx, c, dir, r); err != nil {
			return r, fmt.Errorf("manager: %w", err)
		}
	}
	return r, nil
}

// generate writes a csvgen file into dir and returns its path and stats.
func generate(dir, name string, rows int, seed int64) (string, csvgen.Stats, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", csvgen.Stats{}, err
	}
	st, err := csvgen.Write(f, csvgen.Options{Rows: rows, Seed: seed})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", st, fmt.Errorf("generate %s: %w", name, err)
	}
	return path, st, nil
}

func upload(ctx context.Context, st *stack.Stack, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = st.MinIO.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: ptr(stack.Bucket), Key: &key, Body: f})
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// countTokens maps every row as the embedder does and counts the embedded text with the real
// tokenizer: the floor is computed from what is actually sent.
func countTokens(path string, spec v1alpha1.MappingSpec) (int64, error) {
	if err := tokens.Load(); err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	header, err := cr.Read()
	if err != nil {
		return 0, fmt.Errorf("read header: %w", err)
	}
	m, err := mapping.New(spec, header, mapping.Fixed{DefaultNamespace: "x"})
	if err != nil {
		return 0, err
	}
	texts := make(chan []string, 64)
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			for batch := range texts {
				for _, t := range batch {
					n += int64(tokens.Count(t))
				}
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	var batch []string
	var row int64
	for {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			close(texts)
			wg.Wait()
			return 0, err
		}
		rec, rerr := m.Map(row, fields)
		row++
		if rerr != nil {
			continue
		}
		batch = append(batch, rec.Text)
		if len(batch) == 512 {
			texts <- batch
			batch = nil
		}
	}
	texts <- batch
	close(texts)
	wg.Wait()
	return total, nil
}

func waitTerminal(ctx context.Context, st *stack.Stack, obj *v1alpha1.CsvIngestion, timeout time.Duration) (*v1alpha1.CsvIngestion, error) {
	deadline := time.Now().Add(timeout)
	cur := &v1alpha1.CsvIngestion{}
	for time.Now().Before(deadline) {
		if err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return nil, err
		}
		if cur.Status.Phase.Terminal() {
			return cur, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return cur, fmt.Errorf("%s not terminal after %s: %s %s", obj.Name, timeout, cur.Status.Phase, cur.Status.Message)
}

func runEfficiency(ctx context.Context, c Config, st *stack.Stack, r *Report) error {
	ns := "bench-efficiency"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		return err
	}
	c.logf("efficiency: generating %d rows", c.EfficiencyRows)
	dir := filepath.Join(st.WorkDir, "files")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path, gen, err := generate(dir, "efficiency.csv", c.EfficiencyRows, 8)
	if err != nil {
		return err
	}
	key := "bench/efficiency.csv"
	if err := upload(ctx, st, key, path); err != nil {
		return err
	}
	obj := st.LegacyIngestion(ns, "efficiency", key)
	c.logf("efficiency: counting tokens with the real tokenizer")
	tok, err := countTokens(path, obj.Spec.Mapping)
	if err != nil {
		return fmt.Errorf("count tokens: %w", err)
	}
	tpm := int64(float64(tok) / c.FloorTarget.Minutes())
	e := &r.Efficiency
	e.Rows, e.FileBytes, e.FileTokens, e.TPM, e.RPM = gen.Good, gen.Bytes, tok, tpm, int64(c.RPM)
	e.RowsPerChunk, e.Parallelism = c.RowsPerChunk, c.Parallelism
	st.OpenAI.SetLimits(c.RPM, int(tpm))
	obj.Spec.Embedding.RequestsPerMinute = int32(c.RPM)
	obj.Spec.Embedding.TokensPerMinute = tpm
	obj.Spec.Chunking.RowsPerChunk = c.RowsPerChunk
	obj.Spec.Chunking.Parallelism = c.Parallelism
	obj.Spec.Target.Pinecone.Namespace = "efficiency"
	c.logf("efficiency: %d rows, %d tokens, TPM cap %d, RPM cap %d", gen.Good, tok, tpm, c.RPM)
	idx := st.Pinecone.Index(stack.Index)
	dup0, oa0 := idx.DuplicateUpserts(), st.OpenAI.Stats()
	start := time.Now()
	if err := st.Cluster.Client.Create(ctx, obj); err != nil {
		return err
	}
	cur, err := waitTerminal(ctx, st, obj, 4*c.FloorTarget+5*time.Minute)
	e.Wall = time.Since(start)
	if err != nil {
		return err
	}
	// A chunk attempt that failed and was retried costs time and re-upserts: count them, and show
	// why they failed.
	var pods corev1.PodList
	if err := st.Cluster.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodFailed {
			e.FailedAttempts++
			c.logf("efficiency: pod %s failed; its log ends:\n%s", p.Name, tail(st.Runner.Logs(ns, p.Name), 3000))
		}
	}
	oa := st.OpenAI.Stats()
	e.Phase = string(cur.Status.Phase)
	e.Requests = oa.Accepted - oa0.Accepted
	e.RateLimited = oa.RateLimited - oa0.RateLimited
	e.DuplicateUpserts = idx.DuplicateUpserts() - dup0
	peak := st.OpenAI.Peak()
	e.PeakRPM, e.PeakTPM = peak.Requests, peak.Tokens
	// The floor the caps allow for this file: its tokens at the TPM cap or its requests at the
	// RPM cap, whichever is longer; the requests are the fewest that can carry its tokens.
	minRequests := max((tok+tokens.MaxTokensPerRequest-1)/tokens.MaxTokensPerRequest, (gen.Good+2047)/2048)
	e.Floor = time.Duration(max(float64(tok)/float64(tpm), float64(minRequests)/float64(c.RPM)) * float64(time.Minute))
	e.Ratio = e.Wall.Seconds() / e.Floor.Seconds()
	want := map[string]bool{}
	for _, id := range gen.GoodIDs {
		want["239."+id] = true
	}
	got := idx.Vectors("efficiency")
	for id, v := range got {
		if v.Metadata["task_id"] != cur.Status.TaskID {
			continue
		}
		e.Vectors++
		if !want[id] {
			e.Unexpected++
		}
	}
	for id := range want {
		if _, ok := got[id]; !ok {
			e.Missing++
		}
	}
	c.logf("efficiency: %s in %s, floor %s, ratio %.3f, vectors %d missing %d unexpected %d", e.Phase, e.Wall.Round(time.Second), e.Floor.Round(time.Second), e.Ratio, e.Vectors, e.Missing, e.Unexpected)
	return nil
}

// runOld runs the same file and caps with one input per request for c.OldFor, measures the
// steady rate after the first fifth and extrapolates to the whole file.
func runOld(ctx context.Context, c Config, st *stack.Stack, r *Report) error {
	ns := "bench-old"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		return err
	}
	obj := st.LegacyIngestion(ns, "old", "bench/efficiency.csv")
	obj.Spec.Embedding.RequestsPerMinute = int32(c.RPM)
	obj.Spec.Embedding.TokensPerMinute = r.Efficiency.TPM
	obj.Spec.Embedding.MaxInputsPerRequest = 1
	obj.Spec.Chunking.RowsPerChunk = c.RowsPerChunk
	obj.Spec.Chunking.Parallelism = c.Parallelism
	obj.Spec.Target.Pinecone.Namespace = "old"
	idx := st.Pinecone.Index(stack.Index)
	count := func() int64 { return int64(len(idx.Vectors("old"))) }
	c.logf("old pattern: running for %s", c.OldFor)
	start := time.Now()
	if err := st.Cluster.Client.Create(ctx, obj); err != nil {
		return err
	}
	warm := c.OldFor / 5
	time.Sleep(warm)
	n0, t0 := count(), time.Now()
	time.Sleep(c.OldFor - warm)
	n1, t1 := count(), time.Now()
	o := &r.Old
	o.Ran, o.RowsDone = t1.Sub(start), n1
	o.SteadyRowsPerSecond = float64(n1-n0) / t1.Sub(t0).Seconds()
	rows := r.Efficiency.Rows
	o.Floor = time.Duration(max(float64(rows)/float64(c.RPM), float64(r.Efficiency.FileTokens)/float64(r.Efficiency.TPM)) * float64(time.Minute))
	if o.SteadyRowsPerSecond > 0 {
		o.Extrapolated = time.Duration(float64(rows) / o.SteadyRowsPerSecond * float64(time.Second))
	}
	if r.Efficiency.Wall > 0 {
		o.RatioToNew = o.Extrapolated.Seconds() / r.Efficiency.Wall.Seconds()
	}
	// Stop it: the rest would take hours.
	if err := st.Cluster.Client.Delete(ctx, obj); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	c.logf("old pattern: %d rows in %s, steady %.2f rows/s, extrapolated %s", n1, o.Ran.Round(time.Second), o.SteadyRowsPerSecond, o.Extrapolated.Round(time.Second))
	return nil
}

var restLine = regexp.MustCompile(`^rest_client_requests_total\{([^}]*)\} ([0-9.e+]+)$`)

// apiRequests sums the manager's client-go request counter by method.
func apiRequests(st *stack.Stack) (map[string]float64, error) {
	m, err := st.Metrics()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(m, "\n") {
		sm := restLine.FindStringSubmatch(l)
		if sm == nil {
			continue
		}
		v, _ := strconv.ParseFloat(sm[2], 64)
		method := "?"
		for _, kv := range strings.Split(sm[1], ",") {
			if k, val, ok := strings.Cut(kv, "="); ok && k == "method" {
				method = strings.Trim(val, `"`)
			}
		}
		out[method] += v
	}
	return out, nil
}

// procMemory is a process's memory in MiB from /proc/<pid>/status.
type procMemory struct {
	HWM        float64 // VmHWM: peak resident set
	Anon, File float64 // RssAnon, RssFile now
}

// readProcMemory reads pid's memory from /proc.
func readProcMemory(pid int) (procMemory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMemory{}, err
	}
	var m procMemory
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var dst *float64
		switch k {
		case "VmHWM":
			dst, found = &m.HWM, true
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		default:
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		*dst = kb / 1024
	}
	if !found {
		return m, errors.New("no VmHWM")
	}
	return m, nil
}

// runManager runs an ingestion of ManagerChunks one-row chunks through the real manager and
// reads its peak RSS and its API requests per chunk.
func runManager(ctx context.Context, c Config, dir string, r *Report) error {
	stub := filepath.Join(dir, "embedder-stub.sh")
	if err := os.WriteFile(stub, []byte(stubScript(filepath.Join(harness.BinDir(), "embedder"))), 0o755); err != nil {
		return err
	}
	c.logf("manager: starting a second stack whose chunk pods finish at once")
	so := stack.Options{Dimensions: c.Dimensions, Log: c.Log, WorkDir: filepath.Join(dir, "stack-manager"), EmbedderBinary: stub}
	pprofAddr := ""
	if c.ManagerProfileDir != "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		pprofAddr = l.Addr().String()
		_ = l.Close()
		so.ManagerArgs = []string{"--pprof-bind-address=" + pprofAddr}
	}
	st, err := stack.Start(ctx, so)
	if err != nil {
		return fmt.Errorf("start stack: %w", err)
	}
	defer st.Stop()
	ns := "bench-manager"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		return err
	}
	body := &strings.Builder{}
	if _, err := csvgen.Write(body, csvgen.Options{Rows: c.ManagerChunks, Seed: 3, MinText: 20, MaxText: 40}); err != nil {
		return err
	}
	key := "bench/manager.csv"
	if err := st.Upload(ctx, key, []byte(body.String())); err != nil {
		return err
	}
	st.OpenAI.SetLimits(0, 0)
	obj := st.LegacyIngestion(ns, "manager", key)
	obj.Spec.Embedding.RequestsPerMinute = 1000000
	obj.Spec.Embedding.TokensPerMinute = 1000000000
	obj.Spec.Chunking.RowsPerChunk = 1
	obj.Spec.Chunking.Parallelism = c.ManagerParallelism
	obj.Spec.Chunking.ChunkTimeout = metav1.Duration{Duration: 10 * time.Minute}
	obj.Spec.Target.Pinecone.Namespace = "manager"
	before, err := apiRequests(st)
	if err != nil {
		return err
	}
	c.logf("manager: %d chunks, parallelism %d", c.ManagerChunks, c.ManagerParallelism)
	start := time.Now()
	if err := st.Cluster.Client.Create(ctx, obj); err != nil {
		return err
	}
	m := &r.Manager
	m.Chunks, m.ParallelismUsed = c.ManagerChunks, c.ManagerParallelism
	var prof *windowProfiler
	if pprofAddr != "" {
		prof = &windowProfiler{addr: pprofAddr, dir: c.ManagerProfileDir, logf: c.logf}
		defer prof.wait()
	}
	cur, pc, werr := watchPassCost(ctx, st, obj, c.ManagerChunks, c.ManagerTimeout, prof)
	if cur == nil {
		return werr
	}
	m.Wall = time.Since(start)
	m.PassCost = pc
	m.FinishedWithinDeadline = werr == nil
	m.Phase = string(cur.Status.Phase)
	m.Finished = int(cur.Status.Chunks.Succeeded + cur.Status.Chunks.Failed)
	after, err := apiRequests(st)
	if err != nil {
		return err
	}
	m.ByVerb = map[string]float64{}
	for k, v := range after {
		d := v - before[k]
		m.ByVerb[k] = d
		m.APIRequests += d
		if k != "GET" {
			m.APIWritesPerChunk += d
		}
	}
	if m.Finished > 0 {
		m.APIRequestsPerChunk = m.APIRequests / float64(m.Finished)
		m.APIWritesPerChunk /= float64(m.Finished)
	}
	pm, err := readProcMemory(st.ManagerPID())
	if err != nil {
		return fmt.Errorf("manager rss: %w", err)
	}
	m.PeakRSSMiB = pm.HWM
	if werr != nil {
		// Stop the rest; the figures cover the chunks that finished.
		_ = st.Cluster.Client.Delete(ctx, obj)
	}
	c.logf("manager: %s, %d/%d chunks in %s, peak RSS %.1f MiB, %.2f API requests per chunk", m.Phase, m.Finished, m.Chunks, m.Wall.Round(time.Second), m.PeakRSSMiB, m.APIRequestsPerChunk)
	if pc.Measured {
		c.logf("manager: CPU per pass %s at %d–%d chunks, %s at %d–%d chunks: ratio %.2f", pc.Start.CPUPerPass.Round(10*time.Microsecond), pc.Start.From, pc.Start.To,
			pc.End.CPUPerPass.Round(10*time.Microsecond), pc.End.From, pc.End.To, pc.Ratio)
	}
	return nil
}

// stubScript is the manager run's embedder image: the planner is the real one; a chunk reports
// its rows as upserted and exits 0 at once, so 2,000 chunks measure the manager, not embedding.
func stubScript(embedder string) string {
	return `#!/bin/sh
[ "$1" = chunk ] || exec '` + embedder + `' "$@"
idx=0; rows=0
for a in "$@"; do
  case "$a" in
    --index=*) idx=${a#*=} ;;
    --rows=*) rows=${a#*=} ;;
  esac
done
printf '{"role":"chunk","chunk":%s,"rowsRead":%s,"processed":%s,"failed":0,"skipped":0,"vectorsUpserted":%s,"tokens":0,"requests":0,"retries":0,"rateLimited":0,"durationMs":1}' "$idx" "$rows" "$rows" "$rows" > "$VECTORDB_TERMINATION_LOG"
`
}

// childRun is one `embedder run` process.
type childRun struct {
	Summary struct {
		Phase           string `json:"phase"`
		VectorsUpserted int64  `json:"vectorsUpserted"`
		PlanMillis      int64  `json:"planMs"`
		DurationMillis  int64  `json:"durationMs"`
	}
	Wall, CPU              time.Duration
	MaxRSSMiB              float64
	MaxAnonMiB, MaxFileMiB float64
	Stdout                 string
}

// runEmbedder runs bin/embedder run on key in one chunk, one process, against the given fakes.
func runEmbedder(ctx context.Context, c Config, st *stack.Stack, oa *fakeopenai.Server, pc *fakepinecone.Server, dir, key, name string, rows int, profile string) (*childRun, error) {
	obj := st.LegacyIngestion("default", name, key)
	obj.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CsvIngestion"}
	obj.Spec.Source.S3.CredentialsSecretRef = nil
	obj.Spec.Embedding.BaseURL = oa.URL()
	// Budgets far above what the process can use: 0 would take the manifest defaults.
	obj.Spec.Embedding.RequestsPerMinute = 1000000
	obj.Spec.Embedding.TokensPerMinute = 1000000000
	obj.Spec.Tracking, obj.Spec.DeadLetter = nil, nil
	obj.Spec.Target.Pinecone.Namespace = name
	obj.Spec.Chunking.RowsPerChunk = int32(min(rows, 1000000))
	obj.Spec.Chunking.Parallelism = 1
	manifest := filepath.Join(dir, name+".json")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(manifest, b, 0o600); err != nil {
		return nil, err
	}
	return execEmbedder(ctx, c, st.MinIO, pc, []string{"run", "-f", manifest, "--progress", "none"}, nil, name, profile)
}

// execEmbedder runs bin/embedder with args and polls its peak RSS.
func execEmbedder(ctx context.Context, c Config, m *harness.MinIO, pc *fakepinecone.Server, args, env []string, name, profile string) (*childRun, error) {
	cctx, cancel := context.WithTimeout(ctx, c.MemTimeout)
	defer cancel()
	args = append(args, "--log-level", cmp.Or(os.Getenv("BENCH_EMBEDDER_LOG_LEVEL"), "error"))
	cmd := exec.CommandContext(cctx, filepath.Join(harness.BinDir(), "embedder"), args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	cmd.Env = append(os.Environ(),
		worker.EnvOpenAIAPIKey+"="+stack.OpenAIKey, worker.EnvPineconeAPIKey+"="+stack.PineconeKey,
		"PINECONE_CONTROL_HOST="+pc.ControlURL(),
		"AWS_ACCESS_KEY_ID="+m.AccessKey, "AWS_SECRET_ACCESS_KEY="+m.SecretKey, "AWS_REGION=us-east-1")
	cmd.Env = append(cmd.Env, env...)
	if profile != "" {
		cmd.Env = append(cmd.Env, profiling.EnvCPUProfile+"="+profile)
	}
	// BENCH_EMBEDDER_ENV adds variables to the embedder's environment only (GOGC experiments).
	cmd.Env = append(cmd.Env, strings.Fields(os.Getenv("BENCH_EMBEDDER_ENV"))...)
	if d := os.Getenv("BENCH_HEAP_DIR"); d != "" {
		cmd.Env = append(cmd.Env, profiling.EnvHeapProfile+"="+filepath.Join(d, name+".heap"))
	}
	var stderr, stdout strings.Builder
	cmd.Stderr, cmd.Stdout = &stderr, &stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start embedder: %w", err)
	}
	// Peak RSS is polled from /proc: getrusage's Maxrss of a child started by a Go process
	// includes the parent's RSS (the child shares the parent's memory until exec, and exec
	// records that memory's high-water mark), so it would report this process, not the embedder.
	var peak procMemory
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			if m, err := readProcMemory(cmd.Process.Pid); err == nil {
				peak.HWM = max(peak.HWM, m.HWM)
				peak.Anon = max(peak.Anon, m.Anon)
				peak.File = max(peak.File, m.File)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	runErr := cmd.Wait()
	close(done)
	<-polled
	res := &childRun{Wall: time.Since(start), MaxRSSMiB: peak.HWM, MaxAnonMiB: peak.Anon, MaxFileMiB: peak.File}
	if cmd.ProcessState != nil {
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	_ = json.Unmarshal([]byte(stdout.String()), &res.Summary)
	res.Stdout = stdout.String()
	if p := os.Getenv("BENCH_EMBEDDER_LOG_DIR"); p != "" {
		_ = os.WriteFile(filepath.Join(p, name+".log"), []byte(stderr.String()), 0o644)
	}
	if runErr != nil && cctx.Err() == nil {
		return res, fmt.Errorf("embedder run %s: %w\n%s", name, runErr, tail(stderr.String(), 4000))
	}
	return res, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func runPipelineAndMemory(ctx context.Context, c Config, st *stack.Stack, dir string, r *Report) error {
	// Instant fakes: no caps, no latency, a cheap token count (the embedder's own count is
	// exact), vectors discarded after checking.
	oa, err := fakeopenai.Start(fakeopenai.Options{APIKeys: []string{stack.OpenAIKey}, CountTokens: func(s string) int { return len(s)/4 + 1 }})
	if err != nil {
		return err
	}
	defer oa.Close()
	pc, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{stack.Index: c.Dimensions}, APIKeys: []string{stack.PineconeKey}, DiscardValues: true})
	if err != nil {
		return err
	}
	defer pc.Close()

	c.logf("pipeline: %d rows through one embedder", c.PipelineRows)
	path, _, err := generate(dir, "pipeline.csv", c.PipelineRows, 11)
	if err != nil {
		return err
	}
	if err := upload(ctx, st, "bench/pipeline.csv", path); err != nil {
		return err
	}
	_ = os.Remove(path)
	prof := filepath.Join(dir, "cpu.pprof")
	run, err := runEmbedder(ctx, c, st, oa, pc, dir, "bench/pipeline.csv", "pipeline", c.PipelineRows, prof)
	if err != nil {
		return err
	}
	p := &r.Pipeline
	p.Rows, p.Wall, p.CPU, p.MaxRSSMiB = run.Summary.VectorsUpserted, run.Wall, run.CPU, run.MaxRSSMiB
	p.VectorsUpserted, p.PlanMillis, p.RunMill = run.Summary.VectorsUpserted, run.Summary.PlanMillis, run.Summary.DurationMillis
	p.RowsPerSecond = float64(p.Rows) / run.Wall.Seconds()
	p.RowsPerCPUSecond = float64(p.Rows) / run.CPU.Seconds()
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=15", prof).Output()
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	p.ProfileTop = string(top)
	c.logf("pipeline: %d rows in %s, %.0f CPU-s, %.0f rows/s per core", p.Rows, p.Wall.Round(time.Millisecond), p.CPU.Seconds(), p.RowsPerCPUSecond)

	for _, rows := range c.MemRows {
		c.logf("memory: generating %d rows", rows)
		path, gen, err := generate(dir, fmt.Sprintf("mem-%d.csv", rows), rows, int64(rows))
		if err != nil {
			return err
		}
		if rows == c.MemRows[len(c.MemRows)-1] {
			if err := scanPlanner(c, path, r); err != nil {
				return err
			}
		}
		key := fmt.Sprintf("bench/mem-%d.csv", rows)
		if err := upload(ctx, st, key, path); err != nil {
			return err
		}
		_ = os.Remove(path)
		c.logf("memory: %d rows through one embedder", rows)
		run, err := runEmbedder(ctx, c, st, oa, pc, dir, key, fmt.Sprintf("mem-%d", rows), rows, "")
		if err != nil {
			return err
		}
		m := Memory{Rows: rows, FileBytes: gen.Bytes, MaxRSSMiB: run.MaxRSSMiB, MaxAnonMiB: run.MaxAnonMiB, MaxFileMiB: run.MaxFileMiB,
			PlanMillis: run.Summary.PlanMillis, Wall: run.Wall,
			VectorsUpserted: run.Summary.VectorsUpserted, Finished: run.Summary.Phase == "Completed"}
		r.Memory = append(r.Memory, m)
		_, _ = st.MinIO.S3Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: ptr(stack.Bucket), Key: &key})
		c.logf("memory: %d rows, peak RSS %.1f MiB (anon %.1f, file %.1f), %s, finished %v", rows, m.MaxRSSMiB, m.MaxAnonMiB, m.MaxFileMiB, m.Wall.Round(time.Second), m.Finished)
	}
	out, err := runOutlier(ctx, c, st.MinIO, oa, pc, dir)
	if err != nil {
		return err
	}
	r.Outlier = *out
	return nil
}

// scanPlanner times csvplan.Scan over a local file.
func scanPlanner(c Config, path string, r *Report) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	start := time.Now()
	res, err := csvplan.Scan(f, csvplan.Options{RowsPerChunk: 1000, Required: []string{"id", "formatted_text"}})
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	el := time.Since(start)
	r.Planner = Planner{Bytes: res.Bytes, Rows: res.TotalRows, Elapsed: el, MBps: float64(res.Bytes) / 1e6 / el.Seconds(), Source: "local file (page cache), csvplan.Scan"}
	c.logf("planner: %.0f MB in %s, %.0f MB/s", float64(res.Bytes)/1e6, el.Round(time.Millisecond), r.Planner.MBps)
	return nil
}
