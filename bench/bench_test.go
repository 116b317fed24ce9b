package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestBenchTiny runs the whole harness once at a tiny size so that `make bench` keeps working.
// It asserts that every figure is produced, never how good it is.
func TestBenchTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the local stack")
	}
	c := Config{Dimensions: 1536, RPM: 300, EfficiencyRows: 300, FloorTarget: 15 * time.Second,
		RowsPerChunk: 100, Parallelism: 2, OldFor: 10 * time.Second, PipelineRows: 300,
		MemRows: []int{100, 400}, MemTimeout: 2 * time.Minute,
		ManagerChunks: 6, ManagerParallelism: 3, ManagerTimeout: 2 * time.Minute, GzipRows: 3000,
		TmpDir: t.TempDir(), Log: logr.Discard()}
	r, err := Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	e := r.Efficiency
	if e.Phase != "Completed" || e.Vectors != e.Rows || e.Missing != 0 || e.Unexpected != 0 || e.Floor <= 0 || e.Ratio <= 0 {
		t.Errorf("efficiency: %+v", e)
	}
	if r.Old.RowsDone <= 0 || r.Old.Extrapolated <= 0 || r.Old.Floor <= 0 || r.Old.RatioToNew <= 0 {
		t.Errorf("old pattern: %+v", r.Old)
	}
	if r.Pipeline.Rows != int64(c.PipelineRows) || r.Pipeline.RowsPerCPUSecond <= 0 || !strings.Contains(r.Pipeline.ProfileTop, "flat") {
		t.Errorf("pipeline: %+v", r.Pipeline)
	}
	if r.Planner.Bytes <= 0 || r.Planner.MBps <= 0 {
		t.Errorf("planner: %+v", r.Planner)
	}
	if len(r.Memory) != len(c.MemRows) {
		t.Fatalf("memory: %+v", r.Memory)
	}
	for i, m := range r.Memory {
		if m.Rows != c.MemRows[i] || !m.Finished || m.VectorsUpserted != int64(m.Rows) || m.MaxRSSMiB <= 0 {
			t.Errorf("memory run %d: %+v", i, m)
		}
	}
	if g := r.GzipReads; g.Rows != 3000 || g.Chunks != 3 || g.PlanRead != g.CompressedBytes || g.After() > g.Target() {
		t.Errorf("gzip reads: %+v", g)
	}
	if mg := r.Manager; mg.Finished != c.ManagerChunks || mg.PeakRSSMiB <= 0 || mg.APIRequestsPerChunk <= 0 {
		t.Errorf("manager: %+v", mg)
	}
	md := Markdown(r, Env{Command: "test", Date: time.Now()})
	for _, want := range []string{"ratio wall / floor", "extrapolated", "rows/s per core", "MB/s", "peak RSS", "API requests per chunk", "Bytes read from S3 for a gzip file"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// A new report keeps the hand-written notes of the old one and only those.
func TestKeepNotes(t *testing.T) {
	path := t.TempDir() + "/b.md"
	if got := keepNotes("new\n", path); got != "new\n" {
		t.Fatalf("no old file: %q", got)
	}
	if err := os.WriteFile(path, []byte("old figures\n"+NotesMarker+"\nnotes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := keepNotes("new\n", path), "new\n\n"+NotesMarker+"\nnotes\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A run with phases skipped renders only the sections of the phases that ran, and says which
// were left out: no empty tables.
func TestMarkdownLeavesOutSkippedPhases(t *testing.T) {
	headings := map[string]string{
		"efficiency": "## Efficiency under caps", "old": "## The old request pattern", "pipeline": "## Pipeline cost",
		"gzip": "### Bytes read from S3 for a gzip file", "manager": ManagerHeading,
	}
	for _, ran := range [][]string{{"manager"}, {"efficiency", "old"}, {"pipeline", "gzip"}, phases} {
		r := &Report{Ran: map[string]bool{}, GzipReads: GzipReads{Rows: 3000, Chunks: 3, RowsPerChunk: 1000}}
		for _, p := range ran {
			r.Ran[p] = true
		}
		md := Markdown(r, Env{Command: "test", Date: time.Now()})
		for p, h := range headings {
			if got := strings.Contains(md, h); got != r.Ran[p] {
				t.Errorf("ran %v: section %q present = %v, want %v", ran, h, got, r.Ran[p])
			}
		}
		if left := strings.Contains(md, "Phases left out"); left != (len(ran) < len(phases)) {
			t.Errorf("ran %v: 'Phases left out' present = %v", ran, left)
		}
	}
}
