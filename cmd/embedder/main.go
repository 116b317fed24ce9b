// Command embedder is the data worker of vectordb-operator:
//
//	embedder plan                  plan the CsvIngestion in $VECTORDB_INGESTION, write ConfigMap <name>-plan
//	embedder chunk --index=N ...   ingest one chunk (flags as worker.ChunkArgs.Flags renders them)
//	embedder run -f ingestion.yaml a whole CsvIngestion in one process, without a cluster
//	embedder version
//
// Secrets come from the environment only (OPENAI_API_KEY, PINECONE_API_KEY, METABASE_API_KEY,
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and are never logged. Logs are JSON on stderr; plan and
// chunk leave their result JSON in the termination message. The work is done in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EnvPineconeControlHost points go-pinecone's control plane elsewhere (the tests' and the demo's
// fake); unset means Pinecone's API.
const EnvPineconeControlHost = "PINECONE_CONTROL_HOST"

func main() {
	if os.Getenv("GOGC") == "" {
		// A chunk's live heap is a few batches in flight; collecting at 50% growth instead of
		// 100% keeps the pod ~20% smaller at 1,536 dimensions for no measurable CPU.
		debug.SetGCPercent(50)
	}
	// VECTORDB_CPUPROFILE writes a CPU profile of the whole process (make bench uses it).
	stopProfile := startCPUProfile(os.Getenv(EnvCPUProfile), os.Stderr)
	stopHeap := startPeakHeapProfile(os.Getenv(EnvHeapProfile), os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	stopHeap()
	os.Exit(code)
}

// EnvCPUProfile names a file to write a CPU profile of the process to (benchmarks).
const EnvCPUProfile = "VECTORDB_CPUPROFILE"

// startCPUProfile starts a CPU profile into path (nothing when empty) and returns its stop.
func startCPUProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(stderr, "embedder: cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(stderr, "embedder: cpu profile:", err)
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

// startPeakHeapProfile samples the live heap every 50 ms and writes a heap profile to path each
// time it tops the last written peak by 5%, so the file ends up showing the largest live heap;
// the returned stop writes nothing more.
func startPeakHeapProfile(path string, stderr io.Writer) func() {
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
					fmt.Fprintln(stderr, "embedder: heap profile:", err)
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

// exitError carries a command's exit code through cobra.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// execute runs the command line and returns the process exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "embedder:", err)
		return 2 // usage
	}
}

type globals struct {
	logLevel       string
	terminationLog string
	stdout, stderr io.Writer
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "embedder",
		Short:         "Plan and ingest CSV files into Pinecone with OpenAI embeddings",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info or error")
	root.PersistentFlags().StringVar(&g.terminationLog, "termination-log", "",
		"where plan and chunk write their result JSON (default $VECTORDB_TERMINATION_LOG, else /dev/termination-log)")
	root.AddCommand(newPlanCmd(g), newChunkCmd(g), newRunCmd(g), newVersionCmd(g))
	return root
}

// logger writes JSON logs to stderr.
func (g *globals) logger() (logr.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return logr.Discard(), fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(g.stderr), lvl)
	return zapr.NewLogger(zap.New(core)), nil
}
