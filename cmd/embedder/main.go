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
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/vectordb-io/vectordb-operator/internal/profiling"
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
	// Profiles of the whole process, for make bench.
	stopProfile := profiling.StartCPU(os.Getenv(profiling.EnvCPUProfile), os.Stderr)
	stopHeap := profiling.StartPeakHeap(os.Getenv(profiling.EnvHeapProfile), os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	stopProfile()
	stopHeap()
	os.Exit(code)
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
	root.AddCommand(newPlanCmd(g), newChunkCmd(g), newRunCmd(g), newCleanupCmd(g), newSyncCmd(g), newVersionCmd(g))
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
