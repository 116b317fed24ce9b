// Command incremental measures incremental sync on the local stack (test/stack) and writes its
// section of docs/benchmarks.md: a full run of the demo file, the same file with 1 % of the rows
// changed and 0.5 % removed ingested incrementally, and the changed file ingested in full, with
// wall time, embeddings requests and tokens, upserts and the Pinecone fetches the hash lookups
// cost, and the deletion step of spec.sync.deleteMissing (list and delete requests, wall time). It runs alone (`go run ./bench/incremental`, after `make build`) and replaces only its own
// section, which sits among the notes `make bench` keeps.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/bench/report"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

const (
	beginMarker = "<!-- incremental sync: written by go run ./bench/incremental -->"
	endMarker   = "<!-- end of incremental sync -->"
)

type run struct {
	name                          string
	wall                          time.Duration
	records                       v1alpha1.RecordCounts
	requests, tokens, inputs      int64
	upserted, fetches, upsertRPCs int64
	// The deletion step (deleteMissing): list and delete calls, vectors deleted, and the time
	// from MissingDeleted=Deleting to the end of the run.
	lists, deletes, deleted int64
	syncWall                time.Duration
}

func main() {
	rows := flag.Int("rows", 100000, "rows of the demo file")
	out := flag.String("out", "docs/benchmarks.md", "report to update (empty: print only)")
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	runs, ch, err := measure(ctx, *rows)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench incremental:", err)
		os.Exit(1)
	}
	md := markdown(*rows, runs, ch, start)
	fmt.Print(md)
	if *out != "" {
		if err := report.ReplaceSection(*out, beginMarker, endMarker, md); err != nil {
			fmt.Fprintln(os.Stderr, "bench incremental:", err)
			os.Exit(1)
		}
	}
}

func measure(ctx context.Context, rows int) ([]run, csvgen.Changes, error) {
	// The fake bills with the real tokenizer: the token figures are what OpenAI would bill.
	st, err := stack.Start(ctx, stack.Options{Dimensions: 1536, Log: logr.Discard()})
	if err != nil {
		return nil, csvgen.Changes{}, err
	}
	defer st.Stop()
	ns := "bench-incremental"
	if err := st.PrepareNamespace(ctx, ns); err != nil {
		return nil, csvgen.Changes{}, err
	}
	var buf bytes.Buffer
	if _, err := csvgen.Write(&buf, csvgen.Options{Rows: rows, Seed: 239}); err != nil {
		return nil, csvgen.Changes{}, err
	}
	changed, ch, err := csvgen.Mutate(buf.Bytes(), 10, 5, 100)
	if err != nil {
		return nil, csvgen.Changes{}, err
	}
	for key, body := range map[string][]byte{"exports/day1.csv": buf.Bytes(), "exports/day2.csv": changed} {
		if err := st.Upload(ctx, key, body); err != nil {
			return nil, csvgen.Changes{}, err
		}
	}
	var runs []run
	for _, r := range []struct {
		name, key, mode, target string
		deleteMissing           bool
	}{
		{"full run of the original file", "exports/day1.csv", v1alpha1.SyncFull, "v2", false},
		{"incremental re-run of the changed file, deleteMissing", "exports/day2.csv", v1alpha1.SyncIncremental, "v2", true},
		{"full run of the changed file (empty namespace)", "exports/day2.csv", v1alpha1.SyncFull, "v2-full", false},
	} {
		fmt.Fprintf(os.Stderr, "bench incremental: %s...\n", r.name)
		obj := st.LegacyIngestion(ns, fmt.Sprintf("run-%d", len(runs)), r.key)
		obj.Spec.Target.Pinecone.Namespace = r.target
		obj.Spec.Sync = &v1alpha1.SyncSpec{Mode: r.mode, DeleteMissing: r.deleteMissing}
		obj.Spec.Embedding.RequestsPerMinute = 100000
		obj.Spec.Embedding.TokensPerMinute = 1000000000
		obj.Spec.Tracking = nil
		oa0, pc0 := st.OpenAI.Stats(), st.Pinecone.Index(stack.Index).Stats()
		t0 := time.Now()
		if err := st.Cluster.Client.Create(ctx, obj); err != nil {
			return nil, ch, err
		}
		done, syncStart, err := waitTerminal(ctx, st, obj, 30*time.Minute)
		if err != nil {
			return nil, ch, err
		}
		if done.Status.Phase != v1alpha1.PhaseCompleted {
			return nil, ch, fmt.Errorf("%s ended %s: %s", r.name, done.Status.Phase, done.Status.Message)
		}
		wall := time.Since(t0)
		oa1, pc1 := st.OpenAI.Stats(), st.Pinecone.Index(stack.Index).Stats()
		runs = append(runs, run{name: r.name, wall: wall, records: done.Status.Records,
			requests: oa1.Requests - oa0.Requests, tokens: oa1.Tokens - oa0.Tokens, inputs: oa1.Inputs - oa0.Inputs,
			upserted: pc1.UpsertedVectors - pc0.UpsertedVectors, upsertRPCs: pc1.Calls["Upsert"] - pc0.Calls["Upsert"],
			fetches: pc1.Calls["Fetch"] - pc0.Calls["Fetch"],
			lists:   pc1.Calls["List"] - pc0.Calls["List"], deletes: pc1.Calls["Delete"] - pc0.Calls["Delete"],
			deleted: done.Status.Records.Deleted})
		if !syncStart.IsZero() {
			runs[len(runs)-1].syncWall = time.Since(syncStart)
		}
	}
	return runs, ch, nil
}

// waitTerminal waits for the run to end; syncStart is when it was first seen deleting (zero
// without a deletion step).
func waitTerminal(ctx context.Context, st *stack.Stack, obj *v1alpha1.CsvIngestion, timeout time.Duration) (*v1alpha1.CsvIngestion, time.Time, error) {
	deadline := time.Now().Add(timeout)
	cur := &v1alpha1.CsvIngestion{}
	var syncStart time.Time
	for time.Now().Before(deadline) {
		if err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return nil, syncStart, err
		}
		if c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionMissingDeleted); c != nil && syncStart.IsZero() {
			syncStart = time.Now()
		}
		if cur.Status.Phase.Terminal() {
			return cur, syncStart, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return cur, syncStart, fmt.Errorf("%s not terminal after %s: %s %s", obj.Name, timeout, cur.Status.Phase, cur.Status.Message)
}

func markdown(rows int, runs []run, ch csvgen.Changes, start time.Time) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w(beginMarker)
	w("## Incremental sync")
	w("")
	w("`go run ./bench/incremental -rows %d` (after `make build`), %s, %d CPUs, load average %s at the end; %s. The demo file (test/csvgen, %d rows, legacy mapping, 1,536 dimensions, the OpenAI fake billing with the real tokenizer, budgets far above what the fakes serve), then the same file with %d rows changed (1 %%) and %d removed (0.5 %%), ingested incrementally with deleteMissing (id prefix 239.) into the same namespace, then that changed file in full into an empty namespace for comparison. rowsPerChunk 1000, parallelism 4.",
		rows, start.UTC().Format(time.RFC3339), runtime.NumCPU(), report.LoadAvg(), time.Since(start).Round(time.Second), rows, len(ch.Changed), len(ch.Removed))
	w("")
	w("| run | wall time | processed | skipped | deleted | embeddings requests | inputs | tokens billed | vectors upserted | Pinecone upsert calls | Pinecone fetch calls | Pinecone list calls | Pinecone delete calls |")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		w("| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d |", r.name, r.wall.Round(100*time.Millisecond), r.records.Processed, r.records.Skipped,
			r.deleted, r.requests, r.inputs, r.tokens, r.upserted, r.upsertRPCs, r.fetches, r.lists, r.deletes)
	}
	if len(runs) == 3 {
		inc, full := runs[1], runs[2]
		w("")
		w("- Tokens of the incremental re-run: **%.2f %%** of a full run of the same file (%d vs %d); requests %d vs %d; wall time %s vs %s (%.0f %%).",
			100*float64(inc.tokens)/float64(full.tokens), inc.tokens, full.tokens, inc.requests, full.requests,
			inc.wall.Round(100*time.Millisecond), full.wall.Round(100*time.Millisecond), 100*inc.wall.Seconds()/full.wall.Seconds())
		w("- Hash lookups: **%.1f Pinecone fetch requests per 1,000 rows** (one per namespace per slice of 128 mapped rows, metadata read from the fetched vectors).",
			1000*float64(inc.fetches)/float64(inc.records.Processed+inc.records.Skipped))
		if listed := inc.records.Processed + inc.records.Skipped + inc.deleted; inc.lists > 0 {
			w("- Deletion step (deleteMissing): %d vectors deleted with %d delete request(s) (**%.1f per 1,000 ids deleted**, at most 1,000 ids each) after listing the %d ids under the prefix with %d list request(s) (**%.1f per 1,000 ids listed**, 100 a page); %s from MissingDeleted=Deleting to Completed, the sync Job's pod start and its re-read of the file included.",
				inc.deleted, inc.deletes, 1000*float64(inc.deletes)/float64(max(inc.deleted, 1)), listed, inc.lists, 1000*float64(inc.lists)/float64(listed),
				inc.syncWall.Round(100*time.Millisecond))
		}
	}
	w(endMarker)
	return b.String()
}
