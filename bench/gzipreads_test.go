package main

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// TestGzipReads runs only the gzip-reads measurement (MinIO only): BENCH_GZIP_ROWS rows (unset: the
// test is skipped) at 1,000 rows per chunk. It checks the staged path reads the compressed file once and
// each chunk's range once (≤ compressed + 1.1 × decompressed), and prints the section of
// docs/benchmarks.md. The before figure is reported, not asserted.
func TestGzipReads(t *testing.T) {
	// The 1,000,000-row figure takes ≈ 3 min of generating and reading; make bench measures it,
	// and TestBenchTiny checks the same bound at 3,000 rows in every make test.
	s := os.Getenv("BENCH_GZIP_ROWS")
	if s == "" {
		t.Skipf("SKIP: set BENCH_GZIP_ROWS (e.g. %d) to measure the gzip reads alone; make bench measures them, TestBenchTiny checks them at 3,000 rows", GzipReadsRows)
	}
	rows, err := strconv.Atoi(s)
	if err != nil || rows < 1000 {
		t.Fatalf("BENCH_GZIP_ROWS=%q: want a number of rows ≥ 1000", s)
	}
	m, err := harness.NewMinIO(stack.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Stop() }()
	c := Config{Log: logr.Discard(), Progress: os.Stderr}
	g, err := runGzipReads(context.Background(), c, m, t.TempDir(), rows, 1000, max(1, GzipReadsSampleEvery*rows/GzipReadsRows))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", markdownGzipReads(*g))
	if g.PlanRead != g.CompressedBytes || g.After() > g.Target() || g.Before() <= g.After() {
		t.Fatalf("%+v: want the planner to read the compressed bytes once and the total within %d", *g, g.Target())
	}
}
