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

// TestGzipReads runs only the gzip-reads measurement (MinIO only): BENCH_GZIP_ROWS rows (default
// 1,000,000) at 1,000 rows per chunk. It checks the staged path reads the compressed file once and
// each chunk's range once (≤ compressed + 1.1 × decompressed), and prints the section of
// docs/benchmarks.md. The before figure is reported, not asserted.
func TestGzipReads(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and reads a large gzip file in MinIO")
	}
	rows := GzipReadsRows
	if s := os.Getenv("BENCH_GZIP_ROWS"); s != "" {
		var err error
		if rows, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
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
