// Command bench is `make bench`: it runs the whole product locally (test/stack) and one embedder
// against instant fakes, and prints and writes docs/benchmarks.md with the machine, the command
// and every figure of DESIGN §9.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/vectordb-io/vectordb-operator/bench/report"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	c := DefaultConfig()
	out := flag.String("out", "docs/benchmarks.md", "markdown report to write (empty: none)")
	flag.IntVar(&c.EfficiencyRows, "rows", c.EfficiencyRows, "rows of the capped whole-cluster run")
	flag.DurationVar(&c.FloorTarget, "floor", c.FloorTarget, "the floor the TPM cap is chosen for")
	flag.DurationVar(&c.OldFor, "old-for", c.OldFor, "how long the one-input-per-request run is measured")
	flag.IntVar(&c.PipelineRows, "pipeline-rows", c.PipelineRows, "rows through one embedder with instant fakes")
	flag.IntVar(&c.ManagerChunks, "manager-chunks", c.ManagerChunks, "chunks of the manager run")
	flag.DurationVar(&c.ManagerTimeout, "manager-timeout", c.ManagerTimeout, "bound of the manager run (the figures then cover the chunks that finished)")
	mem := flag.String("mem-rows", "10000,1000000", "rows of the embedder memory runs, comma separated")
	skip := flag.String("skip", "", "phases to leave out, comma separated: efficiency, old, manager, pipeline, gzip, fleet")
	flag.DurationVar(&c.FleetFloor, "fleet-floor", c.FleetFloor, "the combined floor the fleet phase's TPM cap is chosen for")
	fleetRows := flag.String("fleet-rows", "8000,6000,4000,2000", "rows of the fleet phase's ingestions, comma separated (created at 0, 0, +10 s, +20 s, …)")
	fleetOnly := flag.Bool("fleet-only", false, "measure only the fleet phase and replace just its section of -out")
	flag.StringVar(&c.ManagerProfileDir, "manager-profile", "", "directory for CPU profiles of the manager over the two pass-cost windows (empty: none)")
	managerOnly := flag.Bool("manager-only", false, "measure only the manager at scale and replace just its section of -out")
	flag.Parse()
	c.Skip = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		if s != "" {
			c.Skip[s] = true
		}
	}
	if *managerOnly {
		c.Skip = map[string]bool{"efficiency": true, "old": true, "pipeline": true, "fleet": true}
	}
	if *fleetOnly {
		c.Skip = map[string]bool{"efficiency": true, "old": true, "pipeline": true, "gzip": true, "manager": true}
	}
	c.FleetRows, c.FleetStarts = nil, nil
	for i, s := range strings.Split(*fleetRows, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -fleet-rows %q: want positive integers\n", *fleetRows)
			os.Exit(2)
		}
		c.FleetRows = append(c.FleetRows, n)
		c.FleetStarts = append(c.FleetStarts, time.Duration(max(0, i-1))*10*time.Second)
	}
	c.MemRows = nil
	for _, s := range strings.Split(*mem, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -mem-rows %q: want positive integers\n", *mem)
			os.Exit(2)
		}
		c.MemRows = append(c.MemRows, n)
	}
	c.Progress = os.Stderr
	c.Log = logr.Discard()
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	load0 := loadavg()
	start := time.Now()
	r, err := Run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if *managerOnly {
		note := fmt.Sprintf("Measured on its own by `go run ./bench %s` on %s (%s; %s, %s; load average before %s, after %s).",
			strings.Join(os.Args[1:], " "), start.UTC().Format(time.RFC3339), dur(time.Since(start)), machine(), runtime.Version(), load0, loadavg())
		section := ManagerMarkdown(r.Manager, note)
		fmt.Print(section)
		if *out != "" {
			old, err := os.ReadFile(*out)
			if err != nil && !os.IsNotExist(err) {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
			if err := os.WriteFile(*out, []byte(spliceSection(string(old), ManagerHeading, section)), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
		}
		return
	}
	command := "go run ./bench " + strings.Join(os.Args[1:], " ")
	if r.Ran["fleet"] {
		section := FleetMarkdown(r.Fleet, command)
		fmt.Print(section)
		if *out != "" {
			if err := report.ReplaceSection(*out, FleetBegin, FleetEnd, section); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
		}
		if *fleetOnly {
			return
		}
	}
	md := Markdown(r, Env{Command: "make bench (go run ./bench " + strings.Join(os.Args[1:], " ") + ")", Date: start,
		Took: time.Since(start), LoadBefore: load0, LoadAfter: loadavg()})
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(keepNotes(md, *out)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

// NotesMarker starts the hand-written part of the report (what each change bought, analysis),
// which a new run keeps.
const NotesMarker = "<!-- notes below are kept by make bench -->"

// keepNotes appends the notes of the report already at path, if any, to md.
func keepNotes(md, path string) string {
	old, err := os.ReadFile(path)
	if err != nil {
		return md
	}
	if i := strings.Index(string(old), NotesMarker); i >= 0 {
		return md + "\n" + string(old[i:])
	}
	return md
}

// Env describes where and how the figures were taken.
type Env struct {
	Command               string
	Date                  time.Time
	Took                  time.Duration
	LoadBefore, LoadAfter string
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func machine() string {
	model := "?"
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Model name:"); ok {
				model = strings.TrimSpace(v)
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb float64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				mem = fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
	}
	return fmt.Sprintf("%d CPUs (nproc), %s, %s RAM, %s/%s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH)
}

func dur(d time.Duration) string {
	if d >= time.Minute {
		return fmt.Sprintf("%s (%.0f s)", d.Round(time.Second), d.Seconds())
	}
	return d.Round(10 * time.Millisecond).String()
}

// Markdown renders the report.
func Markdown(r *Report, env Env) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("# Benchmarks")
	w("")
	w("Measured by `make bench` (`bench/`), which builds the binaries and runs the whole product on this machine: a real kube-apiserver, etcd and kube-controller-manager, the local pod runner, `bin/manager`, MinIO, dynalite, and the OpenAI and Pinecone wire-level fakes (test/stack). Not part of `make test`, which runs the same harness once at a tiny size.")
	w("")
	w("- Machine: %s", machine())
	w("- Go: %s", runtime.Version())
	w("- Command: `%s`", env.Command)
	w("- Date: %s; the whole run took %s", env.Date.UTC().Format(time.RFC3339), dur(env.Took))
	w("- Load average (1/5/15 min) before: %s, after: %s (the whole product, fakes included, runs on these cores during the run).", env.LoadBefore, env.LoadAfter)
	w("")
	if skipped := r.skipped(); len(skipped) > 0 {
		w("- Phases left out (`-skip`): %s; their sections are not in this report.", strings.Join(skipped, ", "))
		w("")
	}
	if r.Ran["efficiency"] {
		markdownEfficiency(&b, r)
	}
	if r.Ran["old"] {
		markdownOld(&b, r)
	}
	if r.Ran["pipeline"] {
		markdownPipeline(&b, r)
	}
	if r.Ran["gzip"] {
		b.WriteString(markdownGzipReads(r.GzipReads))
	}
	if r.Ran["manager"] {
		b.WriteString(ManagerMarkdown(r.Manager, ""))
	}
	return b.String()
}

// phases lists every phase of a full run, in the report's order.
var phases = []string{"efficiency", "old", "pipeline", "gzip", "manager", "fleet"}

func (r *Report) skipped() []string {
	var out []string
	for _, p := range phases {
		if !r.Ran[p] {
			out = append(out, p)
		}
	}
	return out
}

func markdownEfficiency(b *strings.Builder, r *Report) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format+"\n", a...) }
	e := r.Efficiency
	w("## Efficiency under caps (whole cluster)")
	w("")
	w("%d rows of generated legacy CSV (formatted_text 200–1,500 chars with HTML and dates, 8 columns; %.1f MB), %d-dimension vectors, through the controller, planner and chunk Jobs, embedder, and the fakes. The OpenAI fake enforces %d RPM and a TPM cap over a sliding 60 s window and bills with the real cl100k_base tokenizer. The TPM cap is chosen so that the file's tokens (counted with the same tokenizer on the mapped, sanitized text) take about five minutes, so the floor dominates pod start and planning. Spec: rowsPerChunk %d, parallelism %d, maxInputsPerRequest 2048.", e.Rows, float64(e.FileBytes)/1e6, 1536, e.RPM, e.RowsPerChunk, e.Parallelism)
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| tokens in the file | %d |", e.FileTokens)
	w("| caps | %d RPM, %d TPM |", e.RPM, e.TPM)
	w("| floor = max(tokens/TPM, requests/RPM) | %s |", dur(e.Floor))
	w("| measured wall time (create → %s) | %s |", e.Phase, dur(e.Wall))
	w("| **ratio wall / floor** | **%.3f** (target ≤ 1.15) |", e.Ratio)
	w("| vectors stored / expected | %d / %d |", e.Vectors, e.Rows)
	w("| lost (missing) / unexpected ids | %d / %d |", e.Missing, e.Unexpected)
	w("| re-upserts of an existing id | %d |", e.DuplicateUpserts)
	w("| failed chunk attempts (retried by their Job) | %d |", e.FailedAttempts)
	w("| embeddings requests accepted / 429s | %d / %d |", e.Requests, e.RateLimited)
	w("| busiest 60 s window (fake's Peak) | %d requests, %d tokens |", e.PeakRPM, e.PeakTPM)
	w("")
}

func markdownOld(b *strings.Builder, r *Report) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format+"\n", a...) }
	e, o := r.Efficiency, r.Old
	w("## The old request pattern, side by side")
	w("")
	w("Same file, same caps, `maxInputsPerRequest: 1` (one input per request, as the old system sent). Its floor is %d requests at %d RPM; running it out would take hours, so it ran for a bounded time and the whole-file time is **extrapolated** from its steady rate (measured after the first fifth of the run).", e.Rows, e.RPM)
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| measured run (partial) | %s, %d rows stored |", dur(o.Ran), o.RowsDone)
	w("| steady rate | %.2f rows/s |", o.SteadyRowsPerSecond)
	w("| floor for the whole file | %s |", dur(o.Floor))
	w("| whole file, extrapolated | %s |", dur(o.Extrapolated))
	w("| new pattern, measured | %s |", dur(e.Wall))
	w("| **ratio old (extrapolated) / new (measured)** | **%.1f×** |", o.RatioToNew)
	w("")
}

func markdownPipeline(b *strings.Builder, r *Report) {
	w := func(format string, a ...any) { fmt.Fprintf(b, format+"\n", a...) }
	p := r.Pipeline
	w("## Pipeline cost with instant fakes")
	w("")
	w("One `embedder run` process (one chunk, parallelism 1; S3 read from MinIO → parse → map → token count → batch → embed (base64 decode) → upsert over gRPC) against in-process fakes with no caps or latency, %d dims. CPU is the child's user+system time from getrusage, so the fakes' and MinIO's work is not counted.", 1536)
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| rows | %d |", p.Rows)
	w("| wall time (plan %d ms, chunk %d ms) | %s |", p.PlanMillis, p.RunMill, dur(p.Wall))
	w("| CPU time | %s |", dur(p.CPU))
	w("| rows/s (wall) | %.0f |", p.RowsPerSecond)
	w("| **rows/s per core** (rows / CPU seconds) | **%.0f** |", p.RowsPerCPUSecond)
	w("| peak RSS | %.1f MiB |", p.MaxRSSMiB)
	w("")
	w("CPU profile (`go tool pprof -top`), top entries:")
	w("")
	w("```")
	lines := strings.Split(strings.TrimSpace(p.ProfileTop), "\n")
	for _, l := range lines {
		w("%s", l)
	}
	w("```")
	w("")
	pl := r.Planner
	w("### Planner scan")
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| file | %.1f MB, %d rows (the largest memory-run file) |", float64(pl.Bytes)/1e6, pl.Rows)
	w("| source | %s |", pl.Source)
	w("| time | %s |", dur(pl.Elapsed))
	w("| **throughput** | **%.0f MB/s** |", pl.MBps)
	if n := len(r.Memory); n > 0 && r.Memory[n-1].PlanMillis > 0 {
		m := r.Memory[n-1]
		w("| the same file through MinIO (`embedder run`'s plan stage: ranged GET, scan, token estimate on a sample) | %s, **%.0f MB/s** |",
			dur(time.Duration(m.PlanMillis)*time.Millisecond), float64(m.FileBytes)/1e6/(float64(m.PlanMillis)/1000))
	}
	w("")
	w("## Memory")
	w("")
	w("Embedder peak RSS (VmHWM of the child from /proc/<pid>/status, polled every 20 ms: getrusage's Maxrss of a child forked by a Go process reports the parent's memory) for one `embedder run` over the whole file in one chunk, %d dims, instant fakes.", 1536)
	w("")
	w("A run that reaches its time bound is stopped; its peak RSS covers the rows it upserted (the vectors column).")
	w("")
	w("Peak RSS is the whole resident set (the target). It is split into the process's own memory (RssAnon: heap, stacks) and the pages of the binary it touched (RssFile: shared page cache, reclaimable under pressure); each column is that part's own peak.")
	w("")
	w("| rows | file | **peak RSS** (target ≤ 64 MiB) | anon | file-backed | time | vectors | completed |")
	w("|---|---|---|---|---|---|---|---|")
	for _, m := range r.Memory {
		w("| %d | %.1f MB | **%.1f MiB** | %.1f MiB | %.1f MiB | %s | %d | %v |", m.Rows, float64(m.FileBytes)/1e6, m.MaxRSSMiB, m.MaxAnonMiB, m.MaxFileMiB, dur(m.Wall), m.VectorsUpserted, m.Finished)
	}
	w("")
	if o := r.Outlier; o.Rows > 0 {
		w("### One 12 MiB row")
		w("")
		w("The same measure over %d rows, one of which is a single field of %.1f MiB of CJK text (one pre-token, far over the model's 8,191 tokens), with dead letters on: `embedder chunk` alone (what a chunk pod runs; planned in the bench process), then `embedder run` (plan and chunk in one process). The row must be dead-lettered (`too_many_tokens`) while the process stays small.", o.Rows, float64(o.RowBytes)/(1<<20))
		w("")
		w("| process | **peak RSS** (target ≤ 64 MiB) | anon | file-backed |")
		w("|---|---|---|---|")
		w("| `embedder chunk` | **%.1f MiB** | %.1f MiB | %.1f MiB |", o.ChunkRSSMiB, o.ChunkAnonMiB, o.ChunkFileMiB)
		w("| `embedder run` (plan + chunk) | **%.1f MiB** | %.1f MiB | %.1f MiB |", o.MaxRSSMiB, o.MaxAnonMiB, o.MaxFileMiB)
		w("")
		w("`embedder run`: %s, %s, %d processed, %d failed, the outlier's reason `%s`.", dur(o.Wall), o.Phase, o.Processed, o.Failed, o.DeadLetterReason)
		w("")
	}
}

// ManagerHeading starts the manager's section, which -manager-only replaces on its own.
const ManagerHeading = "## Manager at scale"

// ManagerMarkdown renders the manager's section; note says how it was taken when it was
// measured apart from the rest.
func ManagerMarkdown(mg Manager, note string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("%s", ManagerHeading)
	w("")
	if note != "" {
		w("%s", note)
		w("")
	}
	w("Manager (`bin/manager`, the real binary) with an ingestion of %d one-row chunks at parallelism %d, on a second stack whose chunk pods run a stand-in that reports its row as upserted and exits at once (the planner is the real embedder), so the figures are the manager's: real chunk Jobs, pods, kube-controller-manager and status roll-up; peak RSS from /proc/<pid>/status VmHWM (the manager of that stack, which ran nothing else), API requests from its client-go `rest_client_requests_total` during this ingestion.", mg.Chunks, mg.ParallelismUsed)
	w("")
	w("| figure | value |")
	w("|---|---|")
	if mg.FinishedWithinDeadline {
		w("| chunks finished | %d of %d (%s in %s) |", mg.Finished, mg.Chunks, mg.Phase, dur(mg.Wall))
	} else {
		w("| chunks finished | %d of %d (%s after %s; the run is stopped at its time bound) |", mg.Finished, mg.Chunks, mg.Phase, dur(mg.Wall))
	}
	w("| **manager peak RSS** | **%.1f MiB** |", mg.PeakRSSMiB)
	w("| API requests | %.0f (%s) |", mg.APIRequests, verbs(mg.ByVerb))
	w("| **API requests per chunk** | **%.2f** (writes: %.2f) |", mg.APIRequestsPerChunk, mg.APIWritesPerChunk)
	w("")
	pc := mg.PassCost
	if !pc.Measured {
		w("Reconcile pass cost: not measured (too few chunks for two windows).")
		w("")
		return b.String()
	}
	w("Cost of a reconcile pass near the start and near the end of the run: the manager process's CPU time (user+system from /proc/<pid>/stat, all of it: informers, GC, the metrics endpoint) while the finished chunks went through each window, divided by the passes of the `csvingestion` controller in it (`controller_runtime_reconcile_total`). Near the end, %d chunks are recorded in status; their Jobs and pods stay in the cluster until their TTL (1 h) but, labelled released, no longer in the manager's cache.", pc.End.From)
	w("")
	w("| window (finished chunks) | time | CPU | passes | **CPU per pass** | wall per pass | CPU per chunk | passes per chunk |")
	w("|---|---|---|---|---|---|---|---|")
	for _, x := range []passWindow{pc.Start, pc.End} {
		w("| %d–%d | %s | %s | %.0f | **%s** | %s | %s | %.2f |", x.From, x.To, dur(x.Elapsed), dur(x.CPU), x.Passes,
			x.CPUPerPass.Round(10*time.Microsecond), x.WallPerPass.Round(10*time.Microsecond), x.CPUPerChunk.Round(10*time.Microsecond), x.PassesPerChunk)
	}
	w("")
	w("| figure | value |")
	w("|---|---|")
	w("| **CPU per pass, end / start** | **%.2f** (target ≈ 1) |", pc.Ratio)
	w("| CPU per finished chunk, end / start | %.2f |", pc.ChunkRatio)
	w("")
	return b.String()
}

// spliceSection replaces the section starting at heading in doc (up to the next "## " heading or
// the notes marker) with section, or inserts it before the notes when doc has none.
func spliceSection(doc, heading, section string) string {
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		if j := strings.Index(doc, NotesMarker); j >= 0 {
			return doc[:j] + section + "\n" + doc[j:]
		}
		return doc + "\n" + section
	}
	i++
	rest := doc[i+len(heading):]
	end := len(doc)
	if j := strings.Index(rest, "\n## "); j >= 0 {
		end = i + len(heading) + j + 1
	}
	if j := strings.Index(doc[i:], NotesMarker); j >= 0 && i+j < end {
		end = i + j
	}
	return doc[:i] + section + "\n" + doc[end:]
}

func verbs(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
