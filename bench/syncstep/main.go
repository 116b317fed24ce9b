// Command syncstep measures the sync step of spec.sync.deleteMissing at scale and writes its
// section of docs/benchmarks.md: a namespace of the Pinecone fake holding a source's vectors
// under its id prefix (default 1,000,000, owner-marked as chunks write them), another source's
// vectors whose ids start with the same prefix and a writer's unmarked ones of the source's own
// id form; the file lacks 5 % of the source's rows. It runs the step's own code (package prune
// over the real go-pinecone client, the same as the <name>-sync Job after it read the file):
// list by prefix, owner look-up of every id the file lacks, delete; it reports requests per
// 1,000 ids, wall time, and the deadline prune.Deadline derives for the file. It runs alone
// (`go run ./bench/syncstep`) and replaces only its own section, among the notes `make bench`
// keeps.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/bench/report"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/prune"
	fakepinecone "github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
)

const (
	beginMarker = "<!-- sync step: written by go run ./bench/syncstep -->"
	endMarker   = "<!-- end of sync step -->"
	prefix      = "q1."
	ns          = "v2"
)

func main() {
	ids := flag.Int("ids", 1000000, "vectors of the source under its prefix")
	foreign := flag.Int("foreign", 50000, "another source's vectors under the same raw prefix (owner q1.b-)")
	unmarked := flag.Int("unmarked", 10000, "unmarked vectors of the source's id form (another writer)")
	latencies := flag.String("latencies", "0s,25ms", "runs, each with this latency added to every data-plane call of the fake")
	out := flag.String("out", "docs/benchmarks.md", "report to update (empty: print only)")
	flag.Parse()
	var lats []time.Duration
	for _, f := range strings.Split(*latencies, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench syncstep: -latencies:", err)
			os.Exit(2)
		}
		lats = append(lats, d)
	}
	md, err := measure(context.Background(), *ids, *foreign, *unmarked, lats)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench syncstep:", err)
		os.Exit(1)
	}
	fmt.Print(md)
	if *out != "" {
		if err := report.ReplaceSection(*out, beginMarker, endMarker, md); err != nil {
			fmt.Fprintln(os.Stderr, "bench syncstep:", err)
			os.Exit(1)
		}
	}
}

type result struct {
	latency                      time.Duration
	lists, fetches, deletes      int64
	listed, missing, deleted     int64
	leftAlone, foreign, unmarked int64
	find, total                  time.Duration
}

func measure(ctx context.Context, n, foreign, unmarked int, latencies []time.Duration) (string, error) {
	srv, err := fakepinecone.Start(fakepinecone.Options{Indexes: map[string]int{"docs": 4}, APIKeys: []string{"k"},
		DiscardValues: true})
	if err != nil {
		return "", err
	}
	defer srv.Close()
	cfg := pinecone.Config{APIKey: "k", Index: "docs", ControlHost: srv.ControlURL(), BatchSize: 1000, Logger: logr.Discard()}
	loader, err := pinecone.New(ctx, cfg)
	if err != nil {
		return "", err
	}
	load := func(count int, id func(int) string, owner string) error {
		var md *structpb.Struct
		if owner != "" {
			md, _ = structpb.NewStruct(map[string]any{ownership.Key: owner})
		}
		batch := make([]pinecone.Vector, 0, 1000)
		for i := range count {
			batch = append(batch, pinecone.Vector{ID: id(i), Values: []float32{1, 0, 0, 0}, Metadata: md})
			if len(batch) == cap(batch) || i == count-1 {
				if _, err := loader.Upsert(ctx, ns, batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		return nil
	}
	t0 := time.Now()
	if err := load(n, func(i int) string { return fmt.Sprintf("%s%d", prefix, 10000000+i) }, prefix); err != nil {
		return "", err
	}
	if err := load(foreign, func(i int) string { return fmt.Sprintf("%sb-%d", prefix, i) }, "q1.b-"); err != nil {
		return "", err
	}
	if err := load(unmarked, func(i int) string { return fmt.Sprintf("%s%d", prefix, 90000000+i) }, ""); err != nil {
		return "", err
	}
	defer loader.Close()
	loadTime := time.Since(t0)

	// The file: the source's rows but every 20th (5 % removed).
	file := prune.NewFileIDs()
	rows := 0
	for i := range n {
		if i%20 != 0 {
			file.Add(ns, fmt.Sprintf("%s%d", prefix, 10000000+i))
			rows++
		}
	}
	file.Seal()
	var runs []result
	for _, lat := range latencies {
		// Put back what the previous run deleted.
		if err := load(n/20, func(i int) string { return fmt.Sprintf("%s%d", prefix, 10000000+20*i) }, prefix); err != nil {
			return "", err
		}
		srv.Index("docs").SetLatency(lat)
		r, err := once(ctx, cfg, file, lat)
		srv.Index("docs").SetLatency(0)
		if err != nil {
			return "", err
		}
		if r.deleted != int64(n-rows) || r.leftAlone != int64(foreign+unmarked) {
			return "", fmt.Errorf("deleted %d (want %d), left alone %d (want %d)", r.deleted, n-rows, r.leftAlone, foreign+unmarked)
		}
		runs = append(runs, r)
	}
	per := func(req, of int64) float64 { return float64(req) * 1000 / float64(of) }
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	w(beginMarker)
	w("## Sync step (deleteMissing) at scale")
	w("")
	w("`go run ./bench/syncstep` on %s, %d CPUs (load %s), %s. One namespace of the Pinecone fake holds %d vectors of source `%s` (owner-marked, as chunks write them), %d of another source whose ids start with the same prefix (`%sb-…`) and %d unmarked ones of the source's id form; the file lacks 5 %% of the source's rows (%d ids in the file). Measured: the step's own code after it read the file (package prune over go-pinecone's gRPC client, as in the `<name>-sync` Job): list by prefix, owner look-up of every id the file lacks, delete. Each run adds the given latency to every data-plane call of the fake.",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), report.LoadAvg(), runtime.Version(), n, prefix, foreign, prefix, unmarked, rows)
	w("")
	w("| fake latency | listed | list requests (per 1,000 listed) | owner look-ups (per 1,000 listed; per 1,000 not in the file) | deleted | delete requests (per 1,000 deleted) | left alone | list + look-up time | total wall time |")
	w("|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		w("| %s | %d | %d (%.1f) | %d (%.2f; %.1f) | %d | %d (%.1f) | %d (%d another source's, %d unmarked) | %s | **%s** |",
			r.latency, r.listed, r.lists, per(r.lists, r.listed), r.fetches, per(r.fetches, r.listed), per(r.fetches, r.missing),
			r.deleted, r.deletes, per(r.deletes, r.deleted), r.leftAlone, r.foreign, r.unmarked, r.find.Round(time.Millisecond), r.total.Round(time.Millisecond))
	}
	d := prune.Deadline(int64(rows))
	last := runs[len(runs)-1]
	w("")
	w("In all: %.1f requests per 1,000 ids listed, almost all of them list pages (100 ids each); the owner check adds one fetch per 1,000 ids the file lacks. Loading the fake took %s.",
		per(last.lists+last.fetches+last.deletes, last.listed), loadTime.Round(time.Second))
	w("")
	w("**Deadline** derived for this file (`prune.Deadline(%d)`, one attempt of the `<name>-sync` Job when `spec.sync.timeout` is unset): **%s**. It assumes 250 ms a list page and 500 ms a look-up or delete request, two ids listed per row of the file (room for as many other vectors under the prefix), reading 5,000 rows/s, all in one namespace (namespaces are listed 4 at a time, which only shortens it), plus 10 minutes: %.0fx the wall time measured with %s a call. The old deadline was the chunk timeout (default 30m).",
		rows, d, d.Seconds()/last.total.Seconds(), last.latency)
	w(endMarker)
	return b.String(), nil
}

func once(ctx context.Context, cfg pinecone.Config, file *prune.FileIDs, lat time.Duration) (result, error) {
	up, err := pinecone.New(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer up.Close()
	start := time.Now()
	plan, err := prune.Find(ctx, up, ownership.Owner{Prefix: prefix}, []string{ns}, file, 10)
	if err != nil {
		return result{}, err
	}
	find := time.Since(start)
	deleted, err := plan.Execute(ctx, up)
	if err != nil {
		return result{}, err
	}
	st := up.Stats()
	return result{latency: lat, lists: st.Lists, fetches: st.Fetches, deletes: st.Deletes, listed: plan.Listed, missing: plan.Missing,
		deleted: deleted, leftAlone: plan.LeftAlone(), foreign: plan.Foreign, unmarked: plan.Unmarked, find: find, total: time.Since(start)}, nil
}
