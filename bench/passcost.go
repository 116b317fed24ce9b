package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// The cost of a reconcile pass must follow what changed, not what is already done: a pass near
// the end of a large ingestion (thousands of chunks recorded, their Jobs and pods still cached)
// must cost about what a pass near the start costs. The manager binary's CPU time (utime+stime of
// the whole process, from /proc) and its controller_runtime_reconcile_total are read when the
// ingestion crosses the edges of two windows of finished chunks, one near the start and one near
// the end; the CPU spent in a window divided by the passes run in it is the CPU of a pass there.
// The whole process is counted (informers, GC, the metrics endpoint), since that is what a pass
// really costs the pod.

// passWindow is one window of finished chunks [From, To).
type passWindow struct {
	From, To       int
	Elapsed        time.Duration
	CPU            time.Duration
	Passes         float64
	PassWallSecs   float64 // sum of controller_runtime_reconcile_time_seconds in the window
	CPUPerPass     time.Duration
	CPUPerChunk    time.Duration
	WallPerPass    time.Duration
	PassesPerChunk float64
}

// PassCost compares a pass near the start with one near the end.
type PassCost struct {
	Start, End passWindow
	// Ratio is End.CPUPerPass / Start.CPUPerPass.
	Ratio float64
	// ChunkRatio is End.CPUPerChunk / Start.CPUPerChunk.
	ChunkRatio float64
	Measured   bool
}

// passSample is the manager's counters at one moment.
type passSample struct {
	at        time.Time
	finished  int
	cpu       time.Duration
	passes    float64
	passWallS float64
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// processCPU is the user+system CPU time of pid and its exited threads.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// After the command: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
	// cmajflt utime(14) stime(15).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stt, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+stt) * clockTick, nil
}

var reconcileLine = regexp.MustCompile(`^controller_runtime_reconcile_(total|time_seconds_sum)\{([^}]*)\} ([0-9.e+-]+)$`)

// reconcileCounters sums the csvingestion controller's reconciles and their wall seconds.
func reconcileCounters(st *stack.Stack) (passes, wallSecs float64, err error) {
	m, err := st.Metrics()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(m, "\n") {
		sm := reconcileLine.FindStringSubmatch(l)
		if sm == nil || !strings.Contains(sm[2], `controller="csvingestion"`) {
			continue
		}
		v, _ := strconv.ParseFloat(sm[3], 64)
		if sm[1] == "total" {
			passes += v
		} else {
			wallSecs += v
		}
	}
	return passes, wallSecs, nil
}

func samplePass(st *stack.Stack, finished int) (passSample, error) {
	cpu, err := processCPU(st.ManagerPID())
	if err != nil {
		return passSample{}, err
	}
	passes, wall, err := reconcileCounters(st)
	if err != nil {
		return passSample{}, err
	}
	return passSample{at: time.Now(), finished: finished, cpu: cpu, passes: passes, passWallS: wall}, nil
}

// windowsFor places the two windows at 5–15 % and 85–95 % of the chunks (at least one chunk
// wide each).
func windowsFor(chunks int) [2][2]int {
	at := func(pct int) int { return chunks * pct / 100 }
	start := [2]int{at(5), max(at(15), at(5)+1)}
	end := [2]int{at(85), max(at(95), at(85)+1)}
	return [2][2]int{start, end}
}

// watchPassCost polls the ingestion until it is terminal or the timeout passes, sampling the
// manager when the finished count crosses a window's edge. The status is read from the API
// server (the manager does not see these reads); the manager's /metrics is read only at the
// four edges, so the measurement adds almost nothing to what it measures.
func watchPassCost(ctx context.Context, st *stack.Stack, obj *v1alpha1.CsvIngestion, chunks int, timeout time.Duration, prof *windowProfiler) (*v1alpha1.CsvIngestion, PassCost, error) {
	edges := windowsFor(chunks)
	want := []int{edges[0][0], edges[0][1], edges[1][0], edges[1][1]}
	var samples []passSample
	var pc PassCost
	deadline := time.Now().Add(timeout)
	cur := &v1alpha1.CsvIngestion{}
	for {
		if err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return nil, pc, err
		}
		finished := int(cur.Status.Chunks.Succeeded + cur.Status.Chunks.Failed)
		for len(samples) < len(want) && finished >= want[len(samples)] && !cur.Status.Phase.Terminal() {
			s, err := samplePass(st, finished)
			if err != nil {
				return cur, pc, fmt.Errorf("sample the manager: %w", err)
			}
			samples = append(samples, s)
			switch len(samples) {
			case 1:
				prof.start(ctx, "manager-start.pprof")
			case 3:
				prof.start(ctx, "manager-end.pprof")
			}
		}
		if cur.Status.Phase.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			return cur, pc, fmt.Errorf("%s not terminal after %s: %s %s", obj.Name, timeout, cur.Status.Phase, cur.Status.Message)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(samples) == 4 {
		pc.Start = window(samples[0], samples[1])
		pc.End = window(samples[2], samples[3])
		if pc.Start.CPUPerPass > 0 && pc.Start.CPUPerChunk > 0 {
			pc.Ratio = float64(pc.End.CPUPerPass) / float64(pc.Start.CPUPerPass)
			pc.ChunkRatio = float64(pc.End.CPUPerChunk) / float64(pc.Start.CPUPerChunk)
			pc.Measured = true
		}
	}
	return cur, pc, nil
}

func window(a, b passSample) passWindow {
	w := passWindow{From: a.finished, To: b.finished, Elapsed: b.at.Sub(a.at), CPU: b.cpu - a.cpu,
		Passes: b.passes - a.passes, PassWallSecs: b.passWallS - a.passWallS}
	if w.Passes > 0 {
		w.CPUPerPass = time.Duration(float64(w.CPU) / w.Passes)
		w.WallPerPass = time.Duration(w.PassWallSecs / w.Passes * float64(time.Second))
	}
	if n := w.To - w.From; n > 0 {
		w.CPUPerChunk = w.CPU / time.Duration(n)
		w.PassesPerChunk = w.Passes / float64(n)
	}
	return w
}

// windowProfiler takes a CPU profile of the manager from the start of a pass-cost window, for
// about as long as a window lasts. A nil profiler does nothing.
type windowProfiler struct {
	addr, dir string
	logf      func(string, ...any)
	wg        sync.WaitGroup
}

const profileSeconds = 40

func (w *windowProfiler) start(ctx context.Context, name string) {
	if w == nil {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		path := filepath.Join(w.dir, name)
		if err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", w.addr, profileSeconds), path); err != nil {
			w.logf("manager: profile %s: %v", name, err)
			return
		}
		w.logf("manager: CPU profile of %ds written to %s", profileSeconds, path)
	}()
}

func (w *windowProfiler) wait() {
	if w != nil {
		w.wg.Wait()
	}
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
