package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/exitcode"
	"github.com/vectordb-io/vectordb-operator/internal/ingestfile"
	"github.com/vectordb-io/vectordb-operator/internal/localrun"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/syncrun"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	"github.com/vectordb-io/vectordb-operator/internal/version"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// finish writes the termination message and turns the outcome into the exit code.
func (g *globals) finish(cmd *cobra.Command, res worker.Result, err error) error {
	log, _ := g.logger()
	code, werr := exitcode.Finish(exitcode.TerminationPath(g.terminationLog), res, err)
	if werr != nil {
		log.Error(werr, "could not write the termination message")
	}
	if err != nil {
		_, reason := exitcode.Of(err)
		log.Error(err, "failed", "reason", reason, "exitCode", code)
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

func newPlanCmd(g *globals) *cobra.Command {
	var toStdout bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Plan the CsvIngestion in $" + worker.EnvIngestion + " and write ConfigMap <name>-plan",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.runOnce(cmd, worker.RolePlan, func(log logr.Logger, ing worker.Ingestion, res *worker.Result) error {
				log = log.WithValues("ingestion", ing.Namespace+"/"+ing.Name, "taskID", ing.TaskID)
				plan, err := planner.Plan(cmd.Context(), ing, planner.Deps{
					MetabaseAPIKey: os.Getenv(worker.EnvMetabaseAPIKey), Log: log,
					SyncPreview: syncrun.NewPreview(ing, syncrun.Deps{
						PineconeAPIKey: os.Getenv(worker.EnvPineconeAPIKey), PineconeControlHost: os.Getenv(EnvPineconeControlHost),
						Log: log.WithName("sync-preview"),
					}),
					Guard: vectorspace.ForIngestion(ing, vectorspace.Keys{
						OpenAI: os.Getenv(worker.EnvOpenAIAPIKey), Pinecone: os.Getenv(worker.EnvPineconeAPIKey),
						PineconeControlHost: os.Getenv(EnvPineconeControlHost),
						Lease:               guardLease(ing, log),
					}, nil, log.WithName("guard")),
				})
				if err != nil {
					return err
				}
				res.RowsRead, res.Tokens = plan.TotalRows, plan.EstimatedTokens
				if toStdout {
					return json.NewEncoder(g.stdout).Encode(plan)
				}
				return writePlan(cmd, ing, plan)
			})
		},
	}
	cmd.Flags().BoolVar(&toStdout, "stdout", false, "print the plan JSON instead of writing the ConfigMap")
	return cmd
}

func newCleanupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Delete what the planner staged for the CsvIngestion in $" + worker.EnvIngestion + " and, in batch mode, cancel its unfinished batches and delete their files at OpenAI (run when it has ended)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.runOnce(cmd, worker.RoleCleanup, func(log logr.Logger, ing worker.Ingestion, _ *worker.Result) error {
				kc, err := planner.NewKubeClient()
				if err != nil {
					return err
				}
				// A plan ConfigMap already gone (a foreground deletion of the ingestion) is no
				// error: the staged keys are named after the ingestion (planner.Cleanup).
				keys, err := planner.Cleanup(cmd.Context(), ing, planner.Deps{Log: log}, kc)
				log.Info("deleted staged objects", "keys", keys)
				batch := ing.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch
				if err != nil && !batch {
					return err
				}
				// Batch mode: cancel the batches of chunks that never finished, delete their files
				// (found by the chunks' records), even if the staged objects could not be deleted.
				n, berr := chunkrun.CleanupBatches(cmd.Context(), ing, chunkrun.Deps{OpenAIAPIKey: os.Getenv(worker.EnvOpenAIAPIKey)}, log)
				if n > 0 {
					log.Info("cleaned up batches at OpenAI", "chunks", n)
				}
				return errors.Join(berr, err)
			})
		},
	}
}

// runOnce is the frame of the one-shot roles (plan, cleanup): the logger, the ingestion from
// the environment, the timed result and the exit through g.finish.
func (g *globals) runOnce(cmd *cobra.Command, role string, run func(logr.Logger, worker.Ingestion, *worker.Result) error) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	start := time.Now()
	res := worker.Result{Role: role}
	ing, err := worker.DecodeIngestion(os.Getenv(worker.EnvIngestion))
	if err != nil {
		return g.finish(cmd, res, worker.Permanent(worker.ReasonPermanentError, err))
	}
	err = run(log, ing, &res)
	res.DurationMillis = time.Since(start).Milliseconds()
	return g.finish(cmd, res, err)
}

func writePlan(cmd *cobra.Command, ing worker.Ingestion, plan *worker.Plan) error {
	kc, err := planner.NewKubeClient()
	if err != nil {
		return err
	}
	return planner.WritePlanConfigMap(cmd.Context(), kc, ing, plan)
}

func newSyncCmd(g *globals) *cobra.Command {
	var a worker.ChunkArgs
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Delete the vectors under the id prefix that are no longer in the file (spec.sync.deleteMissing) of the CsvIngestion in $" + worker.EnvIngestion,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.runOnce(cmd, worker.RoleSync, func(log logr.Logger, ing worker.Ingestion, res *worker.Result) error {
				log = log.WithValues("ingestion", ing.Namespace+"/"+ing.Name, "taskID", ing.TaskID)
				out, err := syncrun.Run(cmd.Context(), ing, a, syncrun.Deps{
					PineconeAPIKey:      os.Getenv(worker.EnvPineconeAPIKey),
					PineconeControlHost: os.Getenv(EnvPineconeControlHost),
					Log:                 log,
				})
				*res = out
				return err
			})
		},
	}
	readFlags(cmd, &a)
	return cmd
}

func newChunkCmd(g *globals) *cobra.Command {
	var a worker.ChunkArgs
	cmd := &cobra.Command{
		Use:   "chunk",
		Short: "Ingest one chunk of the CsvIngestion in $" + worker.EnvIngestion,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			ing, err := worker.DecodeIngestion(os.Getenv(worker.EnvIngestion))
			if err != nil {
				return g.finish(cmd, worker.Result{Role: worker.RoleChunk, Chunk: a.Index}, worker.Permanent(worker.ReasonPermanentError, err))
			}
			log = log.WithValues("ingestion", ing.Namespace+"/"+ing.Name, "taskID", ing.TaskID)
			res, err := chunkrun.Run(cmd.Context(), ing, a, chunkrun.Deps{
				OpenAIAPIKey:        os.Getenv(worker.EnvOpenAIAPIKey),
				PineconeAPIKey:      os.Getenv(worker.EnvPineconeAPIKey),
				PineconeControlHost: os.Getenv(EnvPineconeControlHost),
				Log:                 log,
				Lease:               chunkrun.LeaseFromEnv(ing, log),
			})
			return g.finish(cmd, res, err)
		},
	}
	readFlags(cmd, &a)
	return cmd
}

// readFlags are the flags of a range of the planned object, shared by chunk and sync.
func readFlags(cmd *cobra.Command, a *worker.ChunkArgs) {
	f := cmd.Flags()
	f.IntVar(&a.Index, "index", 0, "chunk index")
	f.Int64Var(&a.Offset, "offset", 0, "byte offset of the chunk's first row in the decompressed object")
	f.Int64Var(&a.Length, "length", 0, "bytes of the chunk")
	f.Int64Var(&a.FirstRow, "first-row", 0, "0-based data row number of the chunk's first row")
	f.Int64Var(&a.Rows, "rows", 0, "rows in the chunk (a different count is a permanent error)")
	f.StringVar(&a.ETag, "etag", "", "the planned ETag; every read is pinned to it")
	f.Float64Var(&a.RequestsPerMinute, "rpm", 0, "this chunk's share of the request budget (0: unlimited)")
	f.Float64Var(&a.TokensPerMinute, "tpm", 0, "this chunk's share of the token budget (0: unlimited)")
	f.StringVar(&a.Compression, "compression", "", "compression the planner found: none or gzip")
	f.StringVar(&a.Key, "key", "", "object to read instead of the source (the planner's staged copy, same bucket)")
	f.StringVar(&a.DuplicatesKey, "duplicates-key", "", "the planner's list of duplicate-id rows (same bucket)")
	f.StringVar(&a.DuplicatesETag, "duplicates-etag", "", "ETag the duplicates list is pinned to")
	_ = cmd.MarkFlagRequired("etag")
}

func newRunCmd(g *globals) *cobra.Command {
	var (
		file         string
		rowsPerChunk int64
		parallelism  int
		progress     string
	)
	cmd := &cobra.Command{
		Use:   "run -f ingestion.yaml",
		Short: "Run a whole CsvIngestion in this process: plan, then chunks in parallel; JSON summary on stdout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			ing, err := ingestfile.Read(file)
			if err != nil {
				return err
			}
			var prog localrun.Progress
			switch progress {
			case "auto":
				if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					prog = localrun.NewBar(g.stderr)
				} else {
					prog = localrun.NewLines(g.stderr, 5*time.Second)
				}
			case "bar":
				prog = localrun.NewBar(g.stderr)
			case "lines":
				prog = localrun.NewLines(g.stderr, 5*time.Second)
			case "none":
			default:
				return fmt.Errorf("--progress %q: want auto, bar, lines or none", progress)
			}
			sum, runErr := localrun.Run(cmd.Context(), ing, localrun.Options{
				RowsPerChunk:        rowsPerChunk,
				Parallelism:         parallelism,
				OpenAIAPIKey:        os.Getenv(worker.EnvOpenAIAPIKey),
				PineconeAPIKey:      os.Getenv(worker.EnvPineconeAPIKey),
				MetabaseAPIKey:      os.Getenv(worker.EnvMetabaseAPIKey),
				PineconeControlHost: os.Getenv(EnvPineconeControlHost),
				Log:                 log.WithValues("ingestion", ing.Name),
				Progress:            prog,
			})
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(sum); err != nil {
				return err
			}
			if code, reason := exitcode.Of(runErr); code != 0 {
				log.Error(runErr, "run failed", "reason", reason, "exitCode", code)
				return &exitError{code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "CsvIngestion manifest (YAML or JSON)")
	f.Int64Var(&rowsPerChunk, "rows-per-chunk", 0, "override spec.chunking.rowsPerChunk")
	f.IntVar(&parallelism, "parallelism", 0, "override spec.chunking.parallelism")
	f.StringVar(&progress, "progress", "auto", "progress on stderr: auto (a bar on a terminal, lines otherwise), bar, lines or none")
	_ = cmd.MarkFlagRequired("file")
	return cmd
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(g.stdout, version.Version)
			return err
		},
	}
}

// guardLease is the planner's lease for its vector-space guard when the controller gave the pod
// one (nil otherwise): the guard's request draws from the key's budget like a chunk pod's, with
// the ingestion's whole declared budget as the fallback (the guard sends one request).
func guardLease(ing worker.Ingestion, log logr.Logger) func(ctx context.Context, emb *embedding.Embedder) (stop func()) {
	opts := chunkrun.LeaseFromEnv(ing, log)
	if opts == nil {
		return nil
	}
	fallback := ratebudget.Rates{RPM: float64(ing.Spec.Embedding.RequestsPerMinute), TPM: float64(ing.Spec.Embedding.TokensPerMinute)}
	return func(ctx context.Context, emb *embedding.Embedder) func() {
		return chunkrun.Lease(ctx, *opts, emb, fallback, log.WithName("guard"))
	}
}
