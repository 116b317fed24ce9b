// Package localrun is `embedder run`: a whole CsvIngestion in one process, without a cluster — the
// plan, then the chunks in parallel goroutines — for trying a mapping on a sample file and for
// benchmarks. It runs the same planner and chunk pipeline as the Jobs do. The chunks share one
// embeddings client, so the ingestion's request and token budgets hold for the run as a whole
// (in the cluster they are split across running chunks instead).
package localrun

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/exitcode"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Options configure a run. Zero values take the ingestion's settings.
type Options struct {
	// RowsPerChunk and Parallelism override spec.chunking when positive.
	RowsPerChunk int64
	Parallelism  int
	// S3 reaches the source; nil: built from the source connection and the AWS_* environment.
	S3                  *s3.Client
	HTTPClient          *http.Client // OpenAI and Metabase; nil: defaults
	OpenAIAPIKey        string
	PineconeAPIKey      string
	MetabaseAPIKey      string
	PineconeControlHost string
	Log                 logr.Logger
	// Progress is told about the run as it goes; nil: nothing is shown.
	Progress Progress
}

// Progress follows a run: Start once the plan is known, Add as rows finish (negative when a
// retried chunk starts over), Finish at the end.
type Progress interface {
	Start(totalRows int64, chunks int)
	Add(rows int64)
	Finish()
}

// Summary is the run's outcome, printed as JSON by `embedder run`.
type Summary struct {
	Name             string `json:"name"`
	TaskID           string `json:"taskID"`
	Phase            string `json:"phase"` // Completed | PartiallyCompleted | Failed | Planned (dry run)
	Bucket           string `json:"bucket"`
	Key              string `json:"key"`
	ETag             string `json:"etag"`
	SizeBytes        int64  `json:"sizeBytes"`
	Compression      string `json:"compression"`
	TotalRows        int64  `json:"totalRows"`
	Chunks           int    `json:"chunks"`
	ChunksSucceeded  int    `json:"chunksSucceeded"`
	ChunksFailed     int    `json:"chunksFailed"`
	EstimatedTokens  int64  `json:"estimatedTokens"`
	EstimatedCostUSD string `json:"estimatedCostUSD"`
	// VectorSpace is the planner's vector-space guard outcome (tokens included in the estimate).
	VectorSpace     *v1alpha1.VectorSpaceStatus `json:"vectorSpace,omitempty"`
	RowsRead        int64                       `json:"rowsRead"`
	Processed       int64                       `json:"processed"`
	Failed          int64                       `json:"failed"`
	Skipped         int64                       `json:"skipped"`
	VectorsUpserted int64                       `json:"vectorsUpserted"`
	Tokens          int64                       `json:"tokens"`
	Requests        int64                       `json:"requests"`
	Retries         int64                       `json:"retries"`
	RateLimited     int64                       `json:"rateLimited"`
	PlanMillis      int64                       `json:"planMs"`
	DurationMillis  int64                       `json:"durationMs"`
	RowsPerSecond   float64                     `json:"rowsPerSecond"`
	DeadLetterKeys  []string                    `json:"deadLetterKeys,omitempty"`
	FailedSamples   []worker.FailedRow          `json:"failedSamples,omitempty"`
	FailedChunks    []ChunkFailure              `json:"failedChunks,omitempty"`
	Error           string                      `json:"error,omitempty"`
	Reason          string                      `json:"reason,omitempty"`
}

// ChunkFailure is a chunk that did not finish.
type ChunkFailure struct {
	Index  int    `json:"index"`
	Rows   string `json:"rows"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// Run plans the ingestion and runs its chunks, parallelism at a time, retrying a chunk that
// failed with a retryable error up to spec.chunking.retriesPerChunk times as a Job would. A
// permanent error stops the run. The summary is filled as far as the run got; the error is the
// one that ended it (nil when the phase is Completed, PartiallyCompleted or, for a dry run,
// Planned).
func Run(ctx context.Context, ing worker.Ingestion, opts Options) (Summary, error) {
	start := time.Now()
	spec := &ing.Spec
	sum := Summary{Name: ing.Name, TaskID: ing.TaskID}
	finish := func(err error) (Summary, error) {
		sum.DurationMillis = time.Since(start).Milliseconds()
		if secs := time.Since(start).Seconds(); secs > 0 {
			sum.RowsPerSecond = float64(sum.RowsRead) / secs
		}
		if err != nil {
			_, sum.Reason = exitcode.Of(err)
			sum.Error = err.Error()
			sum.Phase = "Failed"
		}
		return sum, err
	}

	loc, err := planner.Locate(ing)
	if err != nil {
		return finish(err)
	}
	cl, err := planner.S3Client(ctx, opts.S3, loc.Conn)
	if err != nil {
		return finish(err)
	}
	plan, err := planner.Plan(ctx, ing, planner.Deps{
		S3: cl, HTTPClient: opts.HTTPClient, MetabaseAPIKey: opts.MetabaseAPIKey,
		RowsPerChunk: opts.RowsPerChunk, Log: opts.Log.WithName("plan"),
		Guard: vectorspace.ForIngestion(ing, vectorspace.Keys{
			OpenAI: opts.OpenAIAPIKey, Pinecone: opts.PineconeAPIKey, PineconeControlHost: opts.PineconeControlHost,
		}, opts.HTTPClient, opts.Log.WithName("guard")),
	})
	sum.PlanMillis = time.Since(start).Milliseconds()
	if err != nil {
		return finish(fmt.Errorf("plan: %w", err))
	}
	if keys := plan.StagedKeys(); len(keys) > 0 {
		// What the planner staged (a plain copy of a gzip or non-UTF-8 file, the duplicate-id
		// list) is only needed by this run's chunks; the controller's cleanup Job's role here.
		defer func() {
			if err := source.Delete(context.WithoutCancel(ctx), cl, plan.Bucket, keys...); err != nil {
				opts.Log.Error(err, "could not delete staged objects", "keys", keys)
			}
		}()
	}
	sum.Bucket, sum.Key, sum.ETag, sum.SizeBytes, sum.Compression = plan.Bucket, plan.Key, plan.ETag, plan.SizeBytes, plan.Compression
	sum.TotalRows, sum.Chunks = plan.TotalRows, plan.Chunks()
	sum.EstimatedTokens, sum.EstimatedCostUSD = plan.EstimatedTokens, plan.EstimatedCostUSD
	sum.VectorSpace = plan.VectorSpace
	if spec.DryRun {
		sum.Phase = "Planned"
		return finish(nil)
	}
	if plan.Chunks() == 0 {
		sum.Phase = "Completed"
		return finish(nil)
	}

	// Metabase was staged by the plan; the chunks read the staged object.
	if spec.Source.Metabase != nil && plan.Key != loc.Key {
		return finish(fmt.Errorf("plan staged s3://%s/%s, chunks would read %s", plan.Bucket, plan.Key, loc.Key))
	}
	log := opts.Log.WithName("chunk")
	up, err := chunkrun.NewUpserter(ctx, ing, opts.PineconeAPIKey, opts.PineconeControlHost, log)
	if err != nil {
		return finish(err)
	}
	defer up.Close()
	parallelism := opts.Parallelism
	if parallelism <= 0 {
		parallelism = int(spec.Chunking.Parallelism)
	}
	parallelism = max(1, min(parallelism, plan.Chunks()))
	emb, err := chunkrun.NewEmbedder(ing, opts.OpenAIAPIKey, float64(spec.Embedding.RequestsPerMinute),
		float64(spec.Embedding.TokensPerMinute), up.Dimension(), 2+parallelism, opts.HTTPClient, log)
	if err != nil {
		return finish(err)
	}

	if opts.Progress != nil {
		opts.Progress.Start(plan.TotalRows, plan.Chunks())
		defer opts.Progress.Finish()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu       sync.Mutex
		stopErr  error
		next     int
		ok       int
		results  = make([]worker.Result, plan.Chunks())
		failures []ChunkFailure
	)
	retries := int(spec.Chunking.RetriesPerChunk)
	var wg sync.WaitGroup
	for range parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := stopErr != nil
				mu.Unlock()
				if stop || ctx.Err() != nil || i >= plan.Chunks() {
					return
				}
				res, err := runChunk(ctx, ing, plan, i, retries, chunkrun.Deps{
					S3: cl, Embedder: emb, Upserter: up, Log: log,
				}, opts.Progress)
				mu.Lock()
				results[i] = res
				if err == nil {
					ok++
				} else {
					code, reason := exitcode.Of(err)
					args, _ := plan.Chunk(i)
					failures = append(failures, ChunkFailure{Index: i, Rows: fmt.Sprintf("%d-%d", args.FirstRow, args.FirstRow+args.Rows-1),
						Reason: reason, Error: err.Error()})
					// A permanent error would fail every chunk alike (and the ingestion): stop.
					// A chunk out of retries fails the run too, but the others still finish.
					if code == worker.ExitPermanent && stopErr == nil {
						stopErr = fmt.Errorf("chunk %d: %w", i, err)
						cancel()
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	for _, r := range results {
		sum.RowsRead += r.RowsRead
		sum.Processed += r.Processed
		sum.Failed += r.Failed
		sum.Skipped += r.Skipped
		sum.VectorsUpserted += r.VectorsUpserted
		if r.DeadLetterKey != "" {
			sum.DeadLetterKeys = append(sum.DeadLetterKeys, r.DeadLetterKey)
		}
		for _, s := range r.FailedSamples {
			if len(sum.FailedSamples) < worker.MaxSamples {
				sum.FailedSamples = append(sum.FailedSamples, s)
			}
		}
	}
	st := emb.Stats()
	sum.Tokens, sum.Requests, sum.RateLimited = st.Tokens, st.Requests, st.RateLimited
	sum.Retries = st.Retries + up.Stats().Retries
	sum.FailedChunks = failures
	sum.ChunksFailed = len(failures)
	sum.ChunksSucceeded = ok // chunks not started after a permanent error are neither
	if stopErr != nil {
		return finish(stopErr)
	}
	if len(failures) > 0 {
		return finish(fmt.Errorf("%d of %d chunks failed; chunk %d: %s", len(failures), plan.Chunks(), failures[0].Index, failures[0].Error))
	}
	maxPct := float64(spec.Chunking.MaxFailedRowsPercent)
	switch {
	case sum.Failed == 0:
		sum.Phase = "Completed"
	case plan.TotalRows > 0 && float64(sum.Failed)*100 <= maxPct*float64(plan.TotalRows):
		sum.Phase = "PartiallyCompleted"
	default:
		return finish(worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"%d of %d rows failed, more than maxFailedRowsPercent %d%%", sum.Failed, plan.TotalRows, spec.Chunking.MaxFailedRowsPercent)))
	}
	return finish(nil)
}

// runChunk runs chunk i, retrying retryable failures like a Job's backoffLimit. The progress a
// failed attempt made is taken back before the next one.
func runChunk(ctx context.Context, ing worker.Ingestion, plan *worker.Plan, i, retries int, deps chunkrun.Deps, prog Progress) (worker.Result, error) {
	args, err := plan.Chunk(i)
	if err != nil {
		return worker.Result{Role: worker.RoleChunk, Chunk: i}, err
	}
	for attempt := 0; ; attempt++ {
		var done int64
		var mu sync.Mutex
		if prog != nil {
			deps.Progress = func(n int64) {
				mu.Lock()
				done += n
				mu.Unlock()
				prog.Add(n)
			}
		}
		res, err := chunkrun.Run(ctx, ing, args, deps)
		if err == nil {
			return res, nil
		}
		code, _ := exitcode.Of(err)
		if code == worker.ExitPermanent || attempt >= retries || ctx.Err() != nil {
			return res, err
		}
		if prog != nil {
			mu.Lock()
			prog.Add(-done)
			mu.Unlock()
		}
		deps.Log.Info("chunk failed, retrying", "chunk", i, "attempt", attempt+1, "error", err.Error())
		select {
		case <-ctx.Done():
			return res, errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
}
