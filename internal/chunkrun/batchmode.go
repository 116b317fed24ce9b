package chunkrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/batchembed"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/deadletter"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Batch mode (spec.embedding.mode: batch) runs a chunk in two passes over its rows, both
// through this package's pipeline so that rows are read, mapped, sanitized, checked for tokens,
// skipped (incremental sync, a retry) and upserted exactly as online:
//
//  1. submission: read → map → skip stored → batch (token counts) → batch files (batchembed),
//     with no side effect but the batches: failures are not dead-lettered yet;
//  2. after every batch has ended (batchembed.Runner.Wait, resubmitting expired lines), the
//     vectors are collected by custom_id into a spool, and the online pipeline runs again with
//     its embed stage answered from the spool; rows the Batch API refused come back as the
//     embed stage's refused inputs and are dead-lettered with the provider's code and message.
//
// The chunk's batches are recorded next to its dead letters (hence batch mode needs
// spec.deadLetter), so a pod killed while submitting or polling is replaced by one that resumes.

// SuffixBatchRecord ends the name of a chunk's batch record, beside its dead letters.
const SuffixBatchRecord = ".batches.json"

// BatchRecordKey is where chunk's batch record is kept under spec.deadLetter.keyPrefix.
func BatchRecordKey(keyPrefix string, ing worker.Ingestion, chunk int) string {
	return deadletter.Base(keyPrefix, ing.ObjectID(), chunk) + SuffixBatchRecord
}

// batchRun is a chunk's batch-mode state between the passes.
type batchRun struct {
	runner  *batchembed.Runner
	results *batchembed.Results
}

// batchConfig builds the runner's configuration from the ingestion.
func batchConfig(ing worker.Ingestion, args worker.ChunkArgs, deps Deps, cl *s3.Client, log logr.Logger) (batchembed.Config, error) {
	d := ing.Spec.DeadLetter
	if d == nil || d.Bucket == "" {
		return batchembed.Config{}, worker.Permanent(worker.ReasonPermanentError, errors.New(
			"spec.embedding.mode batch needs spec.deadLetter: the chunk records its batches there"))
	}
	if deps.OpenAIAPIKey == "" {
		return batchembed.Config{}, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("no OpenAI API key (%s is empty)", worker.EnvOpenAIAPIKey))
	}
	spec := ing.Spec.Embedding
	base := cmp.Or(spec.BaseURL, "https://api.openai.com/v1")
	oc := openai.DefaultConfig(deps.OpenAIAPIKey)
	oc.BaseURL = base
	hc := deps.HTTPClient
	if hc == nil {
		// No overall timeout: a 50,000-line output file (~425 MB of base64 vectors) streams
		// through one response for as long as the link needs. A server that does not answer is
		// cut off by the header timeout; the pod's deadline bounds the rest.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 5 * time.Minute
		hc = &http.Client{Transport: tr}
	}
	oc.HTTPClient = hc
	maxEnq, poll, resubmits := int64(batchembed.DefaultMaxEnqueuedTokens), time.Minute, int32(3)
	if b := spec.Batch; b != nil {
		maxEnq = cmp.Or(b.MaxEnqueuedTokens, maxEnq)
		poll = cmp.Or(b.PollInterval.Duration, poll)
		if b.MaxResubmits != nil {
			resubmits = *b.MaxResubmits
		}
	}
	// The cap is the organisation's; each of the chunks running at once gets its share.
	maxEnq = batchembed.ChunkTokenShare(maxEnq, ing.Spec.Chunking.Parallelism)
	mr := int(resubmits)
	if mr == 0 {
		mr = -1 // batchembed: 0 means its default
	}
	// Dimensions are requested only when set, as online (see NewEmbedder).
	dims := int(spec.Dimensions)
	if dims > 0 && !embedding.AcceptsDimensions(spec.Model) {
		dims = 0
	}
	return batchembed.Config{
		Client: openai.NewClientWithConfig(oc), APIKey: deps.OpenAIAPIKey, BaseURL: base, HTTPClient: hc,
		Model: spec.Model, Dimensions: dims,
		Ingestion: cmp.Or(ing.UID, ing.ObjectID()), Chunk: args.Index,
		Limits:       batchembed.Limits{MaxEnqueuedTokens: maxEnq},
		MaxResubmits: mr, PollInterval: poll,
		SpoolDir: filepath.Join(os.TempDir(), "vectordb-batch", ing.ObjectID()),
		Store:    batchembed.S3Store{Client: cl, Bucket: d.Bucket, Key: BatchRecordKey(d.KeyPrefix, ing, args.Index)},
		Log:      log.WithName("batch"),
	}, nil
}

// prepareBatch submits the chunk's rows (what an earlier pod did not), waits for every batch,
// resubmits expired lines, collects the results, and sets p up so that the next p.run upserts
// from them. open reads the chunk's rows from the start.
func (p *pipeline) prepareBatch(ctx context.Context, cfg batchembed.Config, args worker.ChunkArgs,
	open func(context.Context) (*csvplan.Reader, io.Closer, error)) (*batchRun, error) {
	runner, err := batchembed.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	end := args.FirstRow + args.Rows
	for {
		pass, from, want, ok, err := runner.Pending(ctx)
		if err != nil {
			return nil, err
		}
		if ok {
			if err := p.submitPass(ctx, runner, pass, from, want, end, open); err != nil {
				return nil, err
			}
		}
		again, err := runner.Wait(ctx)
		if err != nil {
			return nil, err
		}
		if !again {
			break
		}
	}
	res, err := runner.Collect(ctx, args.FirstRow, args.Rows, p.dimension)
	if err != nil {
		return nil, err
	}
	p.collected = func(_ context.Context, b embedding.Batch) ([]embedding.Output, []embedding.InputError, error) {
		outs := make([]embedding.Output, 0, len(b.Inputs))
		var refused []embedding.InputError
		for _, in := range b.Inputs {
			vec, rowErr, err := res.Lookup(in.ID, nil)
			if err != nil {
				return nil, nil, err
			}
			if rowErr != nil {
				refused = append(refused, embedding.InputError{ID: in.ID, Reason: rowErr.Reason, Detail: rowErr.Detail})
				continue
			}
			outs = append(outs, embedding.Output{ID: in.ID, Vector: vec})
		}
		return outs, refused, nil
	}
	return &batchRun{runner: runner, results: res}, nil
}

// submitPass runs the pipeline up to the batcher over the chunk's rows and writes the rows of
// pass (from on, those want keeps) into batch files. Rows that fail here fail again, and are
// dead-lettered, in the upsert pass: this pass only counts nothing and writes nothing else.
func (p *pipeline) submitPass(ctx context.Context, runner *batchembed.Runner, pass int, from int64, want func(int64) bool,
	end int64, open func(context.Context) (*csvplan.Reader, io.Closer, error)) error {
	sub := runner.Submitter(pass)
	defer sub.Abort()
	sp := &pipeline{
		emb: p.emb, up: p.up, mapper: p.mapper, dups: p.dups, maxRow: p.maxRow,
		fails: &failures{log: logr.Discard()},
		model: p.model, dimension: p.dimension, hashes: p.hashes, owner: p.owner,
		incremental: p.incremental, resume: p.resume, taskID: p.taskID,
		submit: func(ctx context.Context, job embedJob) error {
			for i, in := range job.batch.Inputs {
				if in.ID < from || !want(in.ID) {
					continue
				}
				if err := sub.Add(ctx, in.ID, in.Text, job.batch.InputTokens(i)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	rd, body, err := open(ctx)
	if err != nil {
		return err
	}
	err = sp.run(ctx, rd)
	body.Close()
	if err == nil {
		err = rd.Err()
	}
	if err != nil {
		return fmt.Errorf("batch submission pass %d: %w", pass, err)
	}
	return sub.Close(ctx, end)
}

// finish deletes the chunk's files at OpenAI and marks its record done, after the upsert pass.
func (b *batchRun) finish(ctx context.Context) error {
	if err := b.results.Close(); err != nil {
		return err
	}
	return b.runner.Finish(ctx)
}

func (b *batchRun) close() {
	if b != nil {
		_ = b.results.Close()
	}
}

// CleanupBatches is batch mode's part of `embedder cleanup`, run once the ingestion has ended:
// every chunk whose batch record is not done (the run was cancelled or failed before the chunk
// upserted) has its open batches cancelled and its files at OpenAI deleted. It returns the
// number of chunks cleaned up. A retry is safe: a done record is skipped, and files already gone
// are not an error.
func CleanupBatches(ctx context.Context, ing worker.Ingestion, deps Deps, log logr.Logger) (int, error) {
	d := ing.Spec.DeadLetter
	if ing.Spec.Embedding.Mode != v1alpha1.EmbeddingBatch || d == nil || d.Bucket == "" {
		return 0, nil
	}
	loc, err := planner.Locate(ing)
	if err != nil {
		return 0, err
	}
	cl, err := planner.S3Client(ctx, deps.S3, loc.Conn)
	if err != nil {
		return 0, err
	}
	prefix := d.KeyPrefix + ing.ObjectID() + "/chunk-"
	var chunks []int
	p := s3.NewListObjectsV2Paginator(cl, &s3.ListObjectsV2Input{Bucket: &d.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("list batch records under s3://%s/%s: %w", d.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			var chunk int
			if _, err := fmt.Sscanf(strings.TrimPrefix(*o.Key, prefix), "%d"+SuffixBatchRecord, &chunk); err != nil ||
				*o.Key != BatchRecordKey(d.KeyPrefix, ing, chunk) {
				continue
			}
			chunks = append(chunks, chunk)
		}
	}
	cleaned := 0
	for _, chunk := range chunks {
		cfg, err := batchConfig(ing, worker.ChunkArgs{Index: chunk}, deps, cl, log)
		if err != nil {
			return cleaned, err
		}
		runner, err := batchembed.Open(ctx, cfg)
		if err != nil {
			return cleaned, fmt.Errorf("chunk %d: %w", chunk, err)
		}
		if len(runner.Record().Batches) == 0 {
			continue // done (Open starts a new generation) or never submitted
		}
		if err := runner.Abandon(ctx); err != nil {
			return cleaned, fmt.Errorf("chunk %d: cancel batches and delete files: %w", chunk, err)
		}
		log.Info("cancelled the chunk's batches and deleted its files at OpenAI", "chunk", chunk)
		cleaned++
	}
	return cleaned, nil
}
