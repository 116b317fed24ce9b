package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/bench/report"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// The fleet section is written below the notes marker (bench/report), so that `go run ./bench
// -fleet-only` can replace it on its own and a full run keeps it in the same place.
const (
	FleetBegin = "<!-- fleet: written by go run ./bench (fleet phase) -->"
	FleetEnd   = "<!-- end of fleet -->"
)

// Fleet is the fleet phase: the same four ingestions on one key, run once with each pod's frozen
// per-ingestion share (leases off) and once with rate leases, one mode after the other.
type Fleet struct {
	Rows       []int   // good rows of each ingestion
	Tokens     []int64 // cl100k tokens of each ingestion's mapped text
	Starts     []time.Duration
	TPM, RPM   int64
	Floor      time.Duration // combined floor: all four files' tokens (or requests) at the key's caps
	Renew      time.Duration // lease renewal period of the "after" run
	Before     FleetRun
	After      FleetRun
	RowsChunk  int32
	Parallel   int32
	FloorShort string // what the floor was scaled to, said in the report
	// When and under what load the phase ran.
	Date                  time.Time
	Took                  time.Duration
	LoadBefore, LoadAfter string
}

// FleetRun is one mode's figures.
type FleetRun struct {
	Mode        string
	Wall        time.Duration // first create → last terminal
	Finished    bool          // every ingestion terminal within the bound
	Ratio       float64       // Wall / Floor
	Requests    int64         // requests to /v1/embeddings, 429s included
	RateLimited int64
	Share429    float64
	PeakRPM     int
	PeakTPM     int
	// Window is when all four were active: from the last one's first vector to the first one's
	// last vector; Shares are each ingestion's part of the tokens embedded in it.
	WindowFrom, WindowTo time.Duration
	Shares               []float64
	// FirstProgress and LastProgress: when each ingestion's stored tokens first and last grew
	// (-1: never), which say why there is no span with all four active when there is none.
	FirstProgress, LastProgress []time.Duration
	MaxShareDeviation           float64 // max |share/weight − 1|
	Phases                      []string
	Walls                       []time.Duration
	Vectors, Missing            int64
	Unexpected                  int64
	FailedAttempts              int64
	// Throughput is the key's tokens stored in each throughputBin from the start, as a share of
	// the budget's (see throughput).
	Throughput []float64
	// MinFactor is the lowest backoff factor the lease service reported (1: never backed off;
	// 0: leases off), BackedOff how long it was below 1 (sampled every second).
	MinFactor float64
	BackedOff time.Duration
}

// backoffFactor reads the lease service's lowest backoff factor from the manager's metrics
// (ok false when it exports none: leases off, or no holder yet).
func backoffFactor(st *stack.Stack) (f float64, ok bool) {
	m, err := st.Metrics()
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, ratelease.MetricFactor+"{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v); err == nil && (!ok || v < f) {
				f, ok = v, true
			}
		}
	}
	return f, ok
}

// fleetSample is the tokens of the vectors each ingestion had stored at one instant.
type fleetSample struct {
	at     time.Duration
	tokens []int64
}

// throughput is the key's tokens stored in each bin (from the run's start) as a share of what the
// budget allows in it (tpm per minute), summed over the ingestions, up to the last sample: where
// a leased run loses time against its floor. A bin's tokens are the growth between the last
// samples at or before its edges.
func throughput(samples []fleetSample, bin time.Duration, tpm float64) []float64 {
	if len(samples) < 2 || bin <= 0 || tpm <= 0 {
		return nil
	}
	total := func(s fleetSample) (n int64) {
		for _, v := range s.tokens {
			n += v
		}
		return n
	}
	at := func(t time.Duration) int64 { // tokens stored by t
		var n int64
		for _, s := range samples {
			if s.at > t {
				break
			}
			n = total(s)
		}
		return n
	}
	end := samples[len(samples)-1].at
	var out []float64
	for from := time.Duration(0); from < end; from += bin {
		out = append(out, float64(at(from+bin)-at(from))/(tpm*bin.Minutes()))
	}
	return out
}

// fleetShares finds the span in which every ingestion was making progress (from the latest first
// progress to the earliest last progress) and each one's part of the tokens embedded in it. ok is
// false when there is no such span (one finished before another began).
func fleetShares(samples []fleetSample) (from, to time.Duration, shares []float64, ok bool) {
	if len(samples) < 2 {
		return 0, 0, nil, false
	}
	n := len(samples[0].tokens)
	first := make([]int, n) // index of the first sample after the ingestion's first progress
	last := make([]int, n)  // index of the sample at its last progress
	for i := range n {
		first[i], last[i] = -1, -1
		for k := 1; k < len(samples); k++ {
			if samples[k].tokens[i] > samples[k-1].tokens[i] {
				if first[i] < 0 {
					first[i] = k
				}
				last[i] = k
			}
		}
		if first[i] < 0 {
			return 0, 0, nil, false
		}
	}
	// The span starts at the sample where the last newcomer first showed progress, so its start-up
	// (planner, pod start) is not counted against it.
	a, b := slices.Max(first), slices.Min(last)
	if a >= b {
		return 0, 0, nil, false
	}
	var total int64
	d := make([]int64, n)
	for i := range n {
		d[i] = samples[b].tokens[i] - samples[a].tokens[i]
		total += d[i]
	}
	if total == 0 {
		return 0, 0, nil, false
	}
	shares = make([]float64, n)
	for i := range n {
		shares[i] = float64(d[i]) / float64(total)
	}
	return samples[a].at, samples[b].at, shares, true
}

// progressTimes is when each ingestion's stored tokens first and last grew between samples
// (-1 when they never did).
func progressTimes(samples []fleetSample) (first, last []time.Duration) {
	if len(samples) == 0 {
		return nil, nil
	}
	n := len(samples[0].tokens)
	first, last = make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		first[i], last[i] = -1, -1
		for k := 1; k < len(samples); k++ {
			if samples[k].tokens[i] > samples[k-1].tokens[i] {
				if first[i] < 0 {
					first[i] = samples[k].at
				}
				last[i] = samples[k].at
			}
		}
	}
	return first, last
}

// countTokensByID maps every row as the embedder does and counts each record's text with the
// real tokenizer, by vector id.
func countTokensByID(path string, spec v1alpha1.MappingSpec) (map[string]int64, error) {
	if err := tokens.Load(); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReaderSize(f, 1<<20))
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	m, err := mapping.New(spec, header, mapping.Fixed{DefaultNamespace: "x"})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for row := int64(0); ; row++ {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		rec, rerr := m.Map(row, fields)
		if rerr != nil {
			continue
		}
		out[rec.ID] = int64(tokens.Count(rec.Text))
	}
}

type fleetFile struct {
	key    string
	gen    csvgen.Stats
	tokens map[string]int64
	total  int64
}

// runFleet runs the fleet phase on st: before (leases off) and after (the manager restarted with
// the lease service), then puts the manager back as it was.
func runFleet(ctx context.Context, c Config, st *stack.Stack, r *Report) error {
	ns := "bench-fleet"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		return err
	}
	dir := filepath.Join(st.WorkDir, "fleet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fl := &r.Fleet
	fl.Date, fl.LoadBefore = time.Now(), report.LoadAvg()
	defer func() { fl.Took, fl.LoadAfter = time.Since(fl.Date), report.LoadAvg() }()
	fl.RPM, fl.RowsChunk, fl.Parallel, fl.Starts = int64(c.RPM), c.FleetRowsPerChunk, c.FleetParallelism, c.FleetStarts
	var files []fleetFile
	var tok, minRequests int64
	spec := st.LegacyIngestion(ns, "x", "x").Spec.Mapping
	for i, rows := range c.FleetRows {
		path, gen, err := generate(dir, fmt.Sprintf("fleet-%d.csv", i+1), rows, int64(100+i))
		if err != nil {
			return err
		}
		key := fmt.Sprintf("bench/fleet-%d.csv", i+1)
		if err := upload(ctx, st, key, path); err != nil {
			return err
		}
		byID, err := countTokensByID(path, spec)
		if err != nil {
			return fmt.Errorf("count tokens: %w", err)
		}
		_ = os.Remove(path)
		f := fleetFile{key: key, gen: gen, tokens: byID}
		for _, n := range byID {
			f.total += n
		}
		files = append(files, f)
		fl.Rows, fl.Tokens = append(fl.Rows, int(gen.Good)), append(fl.Tokens, f.total)
		tok += f.total
		minRequests += max((f.total+tokens.MaxTokensPerRequest-1)/tokens.MaxTokensPerRequest, (gen.Good+fleetInputsPerRequest-1)/fleetInputsPerRequest)
	}
	fl.TPM = int64(float64(tok) / c.FleetFloor.Minutes())
	fl.Floor = time.Duration(max(float64(tok)/float64(fl.TPM), float64(minRequests)/float64(c.RPM)) * float64(time.Minute))
	c.logf("fleet: %v rows, %v tokens, TPM cap %d, RPM cap %d, combined floor %s", fl.Rows, fl.Tokens, fl.TPM, c.RPM, fl.Floor.Round(time.Second))
	st.OpenAI.SetLimits(c.RPM, int(fl.TPM))
	defer st.OpenAI.SetLimits(0, 0)

	c.logf("fleet: before (leases off)")
	if err := fleetRun(ctx, c, st, ns, "before", files, fl, &fl.Before); err != nil {
		return fmt.Errorf("before: %w", err)
	}
	// The "after" run: the manager restarted with the lease service on, as the chart runs it.
	keyFile := filepath.Join(st.WorkDir, "rate-lease-key")
	if err := os.WriteFile(keyFile, []byte("bench-rate-lease-key-0123456789abcdef"), 0o600); err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	fl.Renew = c.FleetRenew
	prev := slices.Clone(st.ManagerArgs)
	if err := st.StopManager(); err != nil {
		return err
	}
	st.ManagerArgs = append(st.ManagerArgs, "--rate-lease-bind-address="+addr, "--rate-lease-url=http://"+addr+ratelease.Path,
		"--rate-lease-key-file="+keyFile, "--rate-lease-renew="+c.FleetRenew.String())
	if err := st.StartManager(ctx); err != nil {
		return err
	}
	c.logf("fleet: after (rate leases, renewal %s)", c.FleetRenew)
	runErr := fleetRun(ctx, c, st, ns, "after", files, fl, &fl.After)
	if err := st.StopManager(); err != nil {
		return errors.Join(runErr, err)
	}
	st.ManagerArgs = prev
	if err := st.StartManager(ctx); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		return fmt.Errorf("after: %w", runErr)
	}
	return nil
}

// fleetRun creates the four ingestions at their start offsets, samples the tokens each has
// stored, waits for all of them and reads the fake's counters.
func fleetRun(ctx context.Context, c Config, st *stack.Stack, ns, mode string, files []fleetFile, fl *Fleet, out *FleetRun) error {
	out.Mode = mode
	idx := st.Pinecone.Index(stack.Index)
	objs := make([]*v1alpha1.CsvIngestion, len(files))
	for i, f := range files {
		obj := st.LegacyIngestion(ns, fmt.Sprintf("%s-%d", mode, i+1), f.key)
		// One key, baseURL and model: each ingestion declares the key's whole budget, as today's
		// specs do (without leases each takes it all).
		obj.Spec.Embedding.RequestsPerMinute = int32(c.RPM)
		obj.Spec.Embedding.TokensPerMinute = fl.TPM
		// Requests of 100 inputs (~25k tokens): the key's throughput arrives in steps of about 1.5 s
		// of budget, fine enough to measure each one's share over a minute or two; at 2,048 inputs
		// a small ingestion stores its vectors in two or three jumps.
		obj.Spec.Embedding.MaxInputsPerRequest = fleetInputsPerRequest
		obj.Spec.Chunking.RowsPerChunk = c.FleetRowsPerChunk
		obj.Spec.Chunking.Parallelism = c.FleetParallelism
		obj.Spec.Target.Pinecone.Namespace = obj.Name
		objs[i] = obj
	}
	sample := func(at time.Duration) fleetSample {
		s := fleetSample{at: at, tokens: make([]int64, len(files))}
		for i, f := range files {
			for _, id := range idx.IDs(objs[i].Name) {
				s.tokens[i] += f.tokens[id] // ids carry the mapping's prefix, as countTokensByID's keys do
			}
		}
		return s
	}
	st.OpenAI.ResetWindow()
	oa0 := st.OpenAI.Stats()
	start := time.Now()
	var samples []fleetSample
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			samples = append(samples, sample(time.Since(start)))
			if f, ok := backoffFactor(st); ok {
				if out.MinFactor == 0 || f < out.MinFactor {
					out.MinFactor = f
				}
				if f < 1 {
					out.BackedOff += time.Second
				}
			}
			select {
			case <-stopSampling:
				samples = append(samples, sample(time.Since(start)))
				return
			case <-time.After(time.Second):
			}
		}
	}()
	created := make(chan error, len(objs))
	for i, obj := range objs {
		go func() {
			if d := time.Until(start.Add(c.FleetStarts[i])); d > 0 {
				time.Sleep(d)
			}
			created <- st.Cluster.Client.Create(ctx, obj)
		}()
	}
	var createErr error
	for range objs {
		createErr = errors.Join(createErr, <-created)
	}
	if createErr != nil {
		close(stopSampling)
		wg.Wait()
		return createErr
	}
	bound := 2*fl.Floor + 2*time.Minute
	out.Phases, out.Walls = make([]string, len(objs)), make([]time.Duration, len(objs))
	out.Finished = true
	var curs []*v1alpha1.CsvIngestion
	for i, obj := range objs {
		cur, err := waitTerminal(ctx, st, obj, time.Until(start.Add(bound)))
		if cur == nil {
			close(stopSampling)
			wg.Wait()
			return err
		}
		if err != nil {
			out.Finished = false
			c.logf("fleet %s: %v", mode, err)
		}
		out.Phases[i] = string(cur.Status.Phase)
		if cur.Status.CompletionTime != nil {
			out.Walls[i] = cur.Status.CompletionTime.Sub(cur.CreationTimestamp.Time)
		}
		curs = append(curs, cur)
	}
	out.Wall = time.Since(start)
	close(stopSampling)
	wg.Wait()
	oa := st.OpenAI.Stats()
	out.Requests, out.RateLimited = oa.Requests-oa0.Requests, oa.RateLimited-oa0.RateLimited
	if out.Requests > 0 {
		out.Share429 = float64(out.RateLimited) / float64(out.Requests)
	}
	peak := st.OpenAI.Peak()
	out.PeakRPM, out.PeakTPM = peak.Requests, peak.Tokens
	out.Ratio = out.Wall.Seconds() / fl.Floor.Seconds()
	// Every id stored must have been counted: a completed ingestion's sampled tokens are its file's.
	last := samples[len(samples)-1]
	for i, f := range files {
		if out.Phases[i] == string(v1alpha1.PhaseCompleted) && last.tokens[i] != f.total {
			return fmt.Errorf("%s: the sampler counted %d tokens of stored vectors, the file has %d", objs[i].Name, last.tokens[i], f.total)
		}
	}
	out.FirstProgress, out.LastProgress = progressTimes(samples)
	out.Throughput = throughput(samples, throughputBin, float64(fl.TPM))
	var bins []string
	for _, v := range out.Throughput {
		bins = append(bins, fmt.Sprintf("%.0f", 100*v))
	}
	c.logf("fleet %s: the key's tokens stored per %s, %% of the budget: %s", mode, throughputBin, strings.Join(bins, " "))
	var ok bool
	out.WindowFrom, out.WindowTo, out.Shares, ok = fleetShares(samples)
	if ok {
		w := 1 / float64(len(files)) // equal weights: every ingestion has weight 1 today
		for _, s := range out.Shares {
			out.MaxShareDeviation = max(out.MaxShareDeviation, abs(s/w-1))
		}
	}
	for i, f := range files {
		want := map[string]bool{}
		for _, id := range f.gen.GoodIDs {
			want["239."+id] = true
		}
		got := idx.Vectors(objs[i].Name)
		for id, v := range got {
			if v.Metadata["task_id"] != curs[i].Status.TaskID {
				continue
			}
			out.Vectors++
			if !want[id] {
				out.Unexpected++
			}
		}
		for id := range want {
			if _, ok := got[id]; !ok {
				out.Missing++
			}
		}
	}
	var pods corev1.PodList
	if err := st.Cluster.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodFailed && strings.HasPrefix(p.Name, mode+"-") {
			out.FailedAttempts++
		}
	}
	c.logf("fleet %s: %s (ratio %.3f), %d requests, %d 429s (%.2f %%), shares %v over %s–%s, vectors %d missing %d unexpected %d",
		mode, out.Wall.Round(time.Second), out.Ratio, out.Requests, out.RateLimited, 100*out.Share429, out.Shares,
		out.WindowFrom.Round(time.Second), out.WindowTo.Round(time.Second), out.Vectors, out.Missing, out.Unexpected)
	// Stop whatever is left (a run past its bound) before the next mode.
	for _, obj := range objs {
		_ = st.Cluster.Client.Delete(ctx, obj)
	}
	return nil
}

const fleetInputsPerRequest = 100

// throughputBin is the report's resolution of the key's throughput over the run.
const throughputBin = 20 * time.Second

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// FleetMarkdown renders the fleet section (between FleetBegin and FleetEnd).
func FleetMarkdown(fl Fleet, command string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("%s", FleetBegin)
	w("## Fleet: four ingestions on one key, before and after rate leases")
	w("")
	w("`%s` on %s, %s (load average before %s, after %s; the phase took %s). The whole product on the local stack (test/stack, real `bin/manager` and embedder pods); the OpenAI fake enforces the key's caps over a sliding 60 s window and bills with cl100k_base.",
		command, fl.Date.UTC().Format(time.RFC3339), machine(), fl.LoadBefore, fl.LoadAfter, dur(fl.Took))
	w("")
	var starts []string
	for i := range fl.Rows {
		starts = append(starts, fmt.Sprintf("%d rows / %d tokens at +%s", fl.Rows[i], fl.Tokens[i], fl.Starts[i]))
	}
	w("Four ingestions in one namespace with the same key Secret, `baseURL` and model (one implicit budget), each declaring the key's whole budget (%d RPM, %d TPM) as today's specs do; maxInputsPerRequest %d, rowsPerChunk %d, parallelism %d: %s. The TPM cap is chosen so that the four files' tokens take %s at it (%s). **Before**: leases off, each chunk Job keeps its frozen share of its own ingestion's budget (today's behaviour). **After**: the manager restarted with `--rate-lease-*` (renewal %s); the leader divides the budget among the ingestions holding leases.",
		fl.RPM, fl.TPM, fleetInputsPerRequest, fl.RowsChunk, fl.Parallel, strings.Join(starts, ", "), dur(fl.Floor), fl.FloorShort, fl.Renew)
	w("")
	w("| figure | before (leases off) | after (leases on) | target |")
	w("|---|---|---|---|")
	row := func(name, target string, f func(FleetRun) string) {
		w("| %s | %s | %s | %s |", name, f(fl.Before), f(fl.After), target)
	}
	row("combined floor", "", func(FleetRun) string { return dur(fl.Floor) })
	row("combined wall (first create → last terminal)", "", func(x FleetRun) string {
		if !x.Finished {
			return dur(x.Wall) + " (not all terminal at the bound)"
		}
		return dur(x.Wall)
	})
	row("**combined wall / floor**", "≤ 1.05", func(x FleetRun) string { return fmt.Sprintf("**%.3f**", x.Ratio) })
	row("requests / 429s", "", func(x FleetRun) string { return fmt.Sprintf("%d / %d", x.Requests, x.RateLimited) })
	row("**429s as a share of requests**", "≤ 1 %", func(x FleetRun) string { return fmt.Sprintf("**%.2f %%**", 100*x.Share429) })
	row("busiest 60 s window (fake's Peak)", fmt.Sprintf("%d requests, %d tokens (the caps)", fl.RPM, fl.TPM), func(x FleetRun) string {
		return fmt.Sprintf("%d requests, %d tokens", x.PeakRPM, x.PeakTPM)
	})
	row("span with all four active", "", func(x FleetRun) string {
		if x.Shares == nil {
			return "none"
		}
		return fmt.Sprintf("%s–%s", x.WindowFrom.Round(time.Second), x.WindowTo.Round(time.Second))
	})
	row("each one's first → last progress (vectors stored)", "", func(x FleetRun) string {
		var s []string
		for i := range x.FirstProgress {
			s = append(s, fmt.Sprintf("%s → %s", x.FirstProgress[i].Round(time.Second), x.LastProgress[i].Round(time.Second)))
		}
		return strings.Join(s, ", ")
	})
	row("each one's share of the key's tokens in it", "25 % each", func(x FleetRun) string {
		var s []string
		for _, v := range x.Shares {
			s = append(s, fmt.Sprintf("%.1f %%", 100*v))
		}
		return strings.Join(s, ", ")
	})
	row("**largest deviation from its weight** (share ÷ 25 % − 1)", "≤ 10 %", func(x FleetRun) string {
		if x.Shares == nil {
			return "–"
		}
		return fmt.Sprintf("**%.1f %%**", 100*x.MaxShareDeviation)
	})
	row("each one's wall (create → completion)", "", func(x FleetRun) string {
		var s []string
		for i, d := range x.Walls {
			s = append(s, fmt.Sprintf("%s %s", x.Phases[i], d.Round(time.Second)))
		}
		return strings.Join(s, ", ")
	})
	row(fmt.Sprintf("the key's tokens stored per %s from the first create, %% of the budget's", throughputBin), "", func(x FleetRun) string {
		var s []string
		for _, v := range x.Throughput {
			s = append(s, fmt.Sprintf("%.0f", 100*v))
		}
		return strings.Join(s, " ")
	})
	row("vectors stored / lost / unexpected", "– / 0 / 0", func(x FleetRun) string {
		return fmt.Sprintf("%d / %d / %d", x.Vectors, x.Missing, x.Unexpected)
	})
	row("failed chunk attempts (retried by their Job)", "", func(x FleetRun) string { return fmt.Sprint(x.FailedAttempts) })
	row("budget backoff on 429s: lowest factor, time below 1", "1, 0 s", func(x FleetRun) string {
		if x.MinFactor == 0 {
			return "– (no lease service)"
		}
		return fmt.Sprintf("%.2f, %s", x.MinFactor, x.BackedOff)
	})
	w("")
	w("The share of each ingestion is measured from the vectors it had stored (sampled every second, each vector counted with its text's tokens) between the first progress of the last one to start and the last progress of the first one to finish, so start-up (planner Job, pod start) is not counted against a newcomer. The floor is tokens ÷ TPM; the fake's sliding window admits a whole minute's budget at once, so a run that storms (before) can finish part of its last minute faster than that, paid for in 429s, while leased pods pace themselves at the granted rate.")
	w("%s", FleetEnd)
	return b.String()
}
