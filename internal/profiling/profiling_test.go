package profiling

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestProfilesAreWritten(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	cpu, heap := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "heap.pprof")
	stopCPU := StartCPU(cpu, &stderr)
	stopHeap := StartPeakHeap(heap, &stderr)
	// Grow the live heap past the sampler's first reading.
	var keep [][]byte
	for range 20 {
		keep = append(keep, make([]byte, 1<<20))
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	stopHeap()
	stopCPU()
	runtime.KeepAlive(keep)
	for _, path := range []string{cpu, heap} {
		// A profile is a gzipped protocol buffer.
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", path, err)
		}
		n, err := io.Copy(io.Discard, zr)
		f.Close()
		if err != nil || n == 0 {
			t.Errorf("%s: %d bytes, %v", path, n, err)
		}
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
	// Nothing asked, nothing written.
	StartCPU("", &stderr)()
	StartPeakHeap("", &stderr)()
}
