package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestWindowsFor(t *testing.T) {
	for _, tc := range []struct {
		chunks int
		want   [2][2]int
	}{
		{10000, [2][2]int{{500, 1500}, {8500, 9500}}},
		{2000, [2][2]int{{100, 300}, {1700, 1900}}},
		{6, [2][2]int{{0, 1}, {5, 6}}},
	} {
		if got := windowsFor(tc.chunks); got != tc.want {
			t.Errorf("windowsFor(%d) = %v, want %v", tc.chunks, got, tc.want)
		}
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := passSample{at: t0, finished: 500, cpu: 10 * time.Second, passes: 1000, passWallS: 4}
	b := passSample{at: t0.Add(time.Minute), finished: 1500, cpu: 40 * time.Second, passes: 3000, passWallS: 14}
	w := window(a, b)
	if w.CPU != 30*time.Second || w.Passes != 2000 || w.CPUPerPass != 15*time.Millisecond || w.WallPerPass != 5*time.Millisecond ||
		w.CPUPerChunk != 30*time.Millisecond || w.PassesPerChunk != 2 || w.Elapsed != time.Minute {
		t.Errorf("window = %+v", w)
	}
	if z := window(a, a); z.CPUPerPass != 0 || z.CPUPerChunk != 0 {
		t.Errorf("empty window = %+v", z)
	}
}

// processCPU reads this very process: it must grow by about the CPU this test burns.
func TestProcessCPU(t *testing.T) {
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		x++
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU %s then %s after a busy loop (%d)", before, after, x)
	}
	if _, err := processCPU(-1); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestSpliceSection(t *testing.T) {
	doc := "# Benchmarks\n\n## Memory\n\nmem\n\n" + ManagerHeading + "\n\nold manager\n\n## Later\n\nlater\n\n" + NotesMarker + "\n\n## What each change bought\n"
	got := spliceSection(doc, ManagerHeading, ManagerHeading+"\n\nnew manager\n")
	want := "# Benchmarks\n\n## Memory\n\nmem\n\n" + ManagerHeading + "\n\nnew manager\n\n## Later\n\nlater\n\n" + NotesMarker + "\n\n## What each change bought\n"
	if got != want {
		t.Errorf("middle section:\n%s\nwant:\n%s", got, want)
	}
	// Last section before the notes.
	doc = "# B\n\n" + ManagerHeading + "\n\nold\n\n" + NotesMarker + "\n\n## Notes\n"
	if got := spliceSection(doc, ManagerHeading, ManagerHeading+"\n\nnew\n"); got != "# B\n\n"+ManagerHeading+"\n\nnew\n\n"+NotesMarker+"\n\n## Notes\n" {
		t.Errorf("last section: %q", got)
	}
	// No section yet: inserted before the notes.
	doc = "# B\n\n## Memory\n\nm\n\n" + NotesMarker + "\nnotes\n"
	got = spliceSection(doc, ManagerHeading, ManagerHeading+"\n\nnew\n")
	if !strings.Contains(got, "m\n\n"+ManagerHeading+"\n\nnew\n\n"+NotesMarker) || !strings.HasSuffix(got, "notes\n") {
		t.Errorf("insert: %q", got)
	}
}

func TestManagerMarkdownPassCost(t *testing.T) {
	mg := Manager{Chunks: 10000, Finished: 10000, Phase: "Completed", FinishedWithinDeadline: true, PeakRSSMiB: 100, ParallelismUsed: 100,
		PassCost: PassCost{Measured: true, Ratio: 1.05, ChunkRatio: 1.1,
			Start: passWindow{From: 500, To: 1500, CPUPerPass: 2 * time.Millisecond},
			End:   passWindow{From: 8500, To: 9500, CPUPerPass: 2100 * time.Microsecond}}}
	md := ManagerMarkdown(mg, "Measured on its own.")
	for _, want := range []string{ManagerHeading, "Measured on its own.", "| 500–1500 |", "| 8500–9500 |", "**CPU per pass, end / start** | **1.05**", "peak RSS"} {
		if !strings.Contains(md, want) {
			t.Errorf("section lacks %q:\n%s", want, md)
		}
	}
}
