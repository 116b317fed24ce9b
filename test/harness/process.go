// Package harness starts the real services the project's tests run against — kube-apiserver and etcd
// (envtest), kube-controller-manager, MinIO and dynalite — as local processes on loopback ports.
//
// Each service has an error-returning constructor for TestMain (NewCluster, NewMinIO, NewDynalite)
// and a testing.TB form (StartCluster, StartMinIO, StartDynalite) that fails the test on error,
// stops the service in t.Cleanup and, when the test failed, prints the tail of the service's log.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long a process gets between SIGTERM and SIGKILL.
	stopGrace = 10 * time.Second
	// tailLines is how much of a log is shown when something fails.
	tailLines = 40
	// modulePath identifies this repository's go.mod when walking up the tree.
	modulePath = "github.com/vectordb-io/vectordb-operator"
)

// RepoRoot is the directory holding this module's go.mod: found by walking up from the working
// directory (tests run in their package directory), else from this source file's location.
// It returns "" when neither finds it.
func RepoRoot() string {
	if wd, err := os.Getwd(); err == nil {
		if root := findModuleRoot(wd); root != "" {
			return root
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		return findModuleRoot(filepath.Dir(file))
	}
	return ""
}

func findModuleRoot(dir string) string {
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// BinDir is where hack/tools.sh puts the binaries: $VECTORDB_BIN_DIR, else <repo root>/bin.
func BinDir() string {
	if dir := os.Getenv("VECTORDB_BIN_DIR"); dir != "" {
		return dir
	}
	return filepath.Join(RepoRoot(), "bin")
}

// binary returns the path of a tool in BinDir, or an error that says how to get it.
func binary(name, tool string) (string, error) {
	path := filepath.Join(BinDir(), name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s not found (run hack/tools.sh %s): %w", path, tool, err)
	}
	return path, nil
}

// freePort asks the kernel for an unused loopback port. Another process may take it before the
// caller binds it, which is why the callers retry once on a bind failure.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free loopback port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("releasing probe port %d: %w", port, err)
	}
	return port, nil
}

// proc is a child process in its own process group with stdout and stderr in a log file.
type proc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error         // valid once done is closed

	mu       sync.Mutex
	stopping bool
}

// startProc starts path with args; env is added to the current environment.
func startProc(name, logPath string, env []string, path string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own group, so Stop also ends anything it forks and a ^C to the test does not race us.
	// Pdeathsig kills it if the test binary dies without cleanup (a -timeout panic skips t.Cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls ready until it succeeds, the process exits, or timeout passes.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		probeCtx, probeCancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(probeCtx)
		probeCancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			if p.bindFailed() {
				return fmt.Errorf("%s: %w; log tail:\n%s", p.name, errPortTaken, p.tail())
			}
			return fmt.Errorf("%s exited before it was ready (%v); log tail:\n%s", p.name, p.exitErr, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %w; log tail:\n%s", p.name, timeout, last, p.tail())
		case <-tick.C:
		}
	}
}

// errPortTaken marks a start that failed because another process bound the chosen port first.
var errPortTaken = errors.New("port taken before the process could bind it")

// bindFailed tells whether the exited process died because its port was taken meanwhile.
func (p *proc) bindFailed() bool {
	log := p.tail()
	return strings.Contains(log, "address already in use") || strings.Contains(log, "EADDRINUSE")
}

// stop sends SIGTERM to the process group, SIGKILL after stopGrace, and waits for the exit.
// It returns an error only if the process had already died on its own with one, or cannot be killed.
func (p *proc) stop() error {
	p.mu.Lock()
	wasStopping := p.stopping
	p.stopping = true
	p.mu.Unlock()
	if wasStopping {
		<-p.done
		return nil
	}
	if p.exited() {
		if p.exitErr != nil {
			return fmt.Errorf("%s had exited on its own: %w", p.name, p.exitErr)
		}
		return nil
	}
	pgid := p.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("terminating %s: %w", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing %s: %w", p.name, err)
		}
		<-p.done
	}
	return nil
}

// dieWithParent returns an executable that runs bin under setpriv --pdeathsig KILL, for processes
// whose exec.Cmd the harness does not build (envtest's etcd and kube-apiserver): like Pdeathsig above,
// they then die with the test binary. Without setpriv it returns bin.
func dieWithParent(dir, bin string) (string, error) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return bin, nil
	}
	wrapper := filepath.Join(dir, filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL %s \"$@\"\n", shellQuote(setpriv), shellQuote(bin))
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		return "", fmt.Errorf("writing %s wrapper: %w", filepath.Base(bin), err)
	}
	return wrapper, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (p *proc) tail() string { return tailFile(p.logPath, tailLines) }

// tailFile returns the last n lines of a file, reading at most its last 64 KiB.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxRead = 64 << 10
	if info, err := f.Stat(); err == nil && info.Size() > maxRead {
		if _, err := f.Seek(-maxRead, io.SeekEnd); err != nil {
			return fmt.Sprintf("(reading log: %v)", err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startWithPortRetry runs start (which picks fresh ports each time) once more if the first attempt
// lost its port to another process between freePort and the bind.
func startWithPortRetry[T any](start func() (T, error)) (T, error) {
	v, err := start()
	if errors.Is(err, errPortTaken) {
		v, err = start()
	}
	return v, err
}
