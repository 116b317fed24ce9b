// Package profiling writes CPU and heap profiles of a whole process when asked through the
// environment; make bench uses them to show where an embedder's time and memory go.
package profiling

import (
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// EnvCPUProfile names a file to write a CPU profile of the process to (benchmarks).
const EnvCPUProfile = "VECTORDB_CPUPROFILE"

// StartCPU starts a CPU profile into path (nothing when empty) and returns its stop.
func StartCPU(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "profiling: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(stderr, "profiling: cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// EnvHeapProfile names a file to write a heap profile to, taken when the live heap is largest
// (benchmarks: what a chunk's peak memory is made of).
const EnvHeapProfile = "VECTORDB_HEAPPROFILE"

// StartPeakHeap samples the live heap every 50 ms and writes a heap profile to path each
// time it tops the last written peak by 5%, so the file ends up showing the largest live heap;
// the returned stop writes nothing more.
func StartPeakHeap(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak+peak/20 {
				peak = v
				if err := writeHeapProfile(path); err != nil {
					fmt.Fprintln(stderr, "profiling: heap profile:", err)
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
