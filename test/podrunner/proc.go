package podrunner

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	sigKill = syscall.SIGKILL
	sigTerm = syscall.SIGTERM

	// The kubelet's limits: the termination message file is read up to 4 KiB; the log fallback
	// takes the last 80 lines, at most 2 KiB.
	maxMessageBytes  = 4096
	fallbackLogLines = 80
	fallbackLogBytes = 2048
)

// podState is one started process. Fields below the line are guarded by Runner.mu.
type podState struct {
	key       string // namespace/name
	uid       types.UID
	container string
	// exitedCh is closed once the process has exited and its log is complete.
	exitedCh chan struct{}
	dir      string
	logPath  string
	termPath string
	binary   string
	pgid     int
	started  metav1.Time

	exited           bool
	exitCode         int32
	finished         metav1.Time
	deadlineExceeded bool // the pod's activeDeadlineSeconds passed and the runner stopped it
	terminating      bool // SIGTERM sent, SIGKILL scheduled
	runningReported  bool
	terminalReported bool
	timers           []*time.Timer
}

func (st *podState) running() bool { return !st.exited }

// signal signals the whole process group, like a container runtime stopping every process of a
// container. An already gone group is not an error.
func (st *podState) signal(sig syscall.Signal) {
	if st.exited {
		return
	}
	_ = syscall.Kill(-st.pgid, sig)
}

func (st *podState) stopTimers() {
	for _, t := range st.timers {
		t.Stop()
	}
	st.timers = nil
}

// terminate sends SIGTERM and SIGKILL after grace. Call with r.mu held.
func (r *Runner) terminate(st *podState, grace time.Duration) {
	if st.terminating || st.exited {
		return
	}
	st.terminating = true
	st.signal(sigTerm)
	st.timers = append(st.timers, time.AfterFunc(grace, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		st.signal(sigKill)
	}))
}

// gracePeriod is the pod's termination grace, capped at maxGrace.
func gracePeriod(pod *corev1.Pod) time.Duration {
	secs := pod.Spec.TerminationGracePeriodSeconds
	if pod.DeletionGracePeriodSeconds != nil {
		secs = pod.DeletionGracePeriodSeconds
	}
	if secs == nil {
		return maxGrace
	}
	return min(time.Duration(*secs)*time.Second, maxGrace)
}

var errStopped = errors.New("pod runner is stopped")

// startProcess starts the pod's container as a process in its own process group, with stdout
// and stderr in the pod's log file, and a goroutine that records its exit.
func (r *Runner) startProcess(pod *corev1.Pod, binary string, args, podEnv []string) (*podState, error) {
	key := pod.Namespace + "/" + pod.Name
	dir := filepath.Join(r.o.WorkDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
	st := &podState{
		key:       key,
		uid:       pod.UID,
		container: pod.Spec.Containers[0].Name,
		exitedCh:  make(chan struct{}),
		dir:       dir,
		logPath:   filepath.Join(dir, "log"),
		termPath:  filepath.Join(dir, "termination-log"),
		binary:    binary,
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("creating pod dir: %w", err)
	}
	// The kubelet creates the file empty, so a process that never writes it leaves no message.
	if err := os.WriteFile(st.termPath, nil, 0o600); err != nil {
		return nil, fmt.Errorf("creating termination-message file: %w", err)
	}
	logFile, err := os.OpenFile(st.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating pod log: %w", err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = r.processEnv(podEnv, st)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	// Started under the lock so that Stop either sees the process or prevents it.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		_ = logFile.Close()
		return nil, errStopped
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", binary, err)
	}
	st.pgid = cmd.Process.Pid
	st.started = metav1.Now()
	r.pods[pod.UID] = st
	r.byKey[key] = pod.UID
	r.procs.Add(1)
	go func() {
		defer r.procs.Done()
		err := cmd.Wait()
		code := exitCode(cmd.ProcessState, err)
		// Whatever the main process left behind ends with it, as in a container.
		_ = syscall.Kill(-st.pgid, sigKill)
		_ = logFile.Close()
		r.mu.Lock()
		st.exited = true
		st.exitCode = code
		st.finished = metav1.Now()
		st.stopTimers()
		r.mu.Unlock()
		close(st.exitedCh)
		r.log.Info("process exited", "pod", key, "exitCode", code)
		r.queue.Add(key)
	}()
	return st, nil
}

// exitCode follows the container runtimes: a process killed by a signal exits 128+signal.
func exitCode(ps *os.ProcessState, waitErr error) int32 {
	if ps == nil {
		if waitErr != nil {
			return 128
		}
		return 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int32(128 + int(ws.Signal()))
	}
	return int32(ps.ExitCode())
}

// terminationMessage is what the kubelet reports: the termination-message file (at most 4 KiB),
// or with FallbackToLogsOnError and a failed, silent process, the tail of its log.
func terminationMessage(st *podState, policy corev1.TerminationMessagePolicy) string {
	msg := readHead(st.termPath, maxMessageBytes)
	if msg == "" && st.exitCode != 0 && policy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = logTail(st.logPath, fallbackLogLines, fallbackLogBytes)
	}
	return msg
}

func readHead(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, _ := io.ReadAll(io.LimitReader(f, n))
	return string(data)
}

// logTail returns the last lines of a log, at most maxBytes (cut at the front).
func logTail(path string, lines int, maxBytes int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	// Enough bytes for the line limit in any realistic log; the byte cap applies after.
	const window = 64 << 10
	if info, err := f.Stat(); err == nil && info.Size() > window {
		if _, err := f.Seek(-window, io.SeekEnd); err != nil {
			return ""
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	parts := strings.SplitAfter(string(data), "\n")
	if parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	out := strings.Join(parts, "")
	if int64(len(out)) > maxBytes {
		out = out[int64(len(out))-maxBytes:]
	}
	return out
}

func containerID(st *podState) string {
	return "podrunner://" + strconv.Itoa(st.pgid)
}
