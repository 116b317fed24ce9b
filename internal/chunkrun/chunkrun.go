// Package chunkrun is `embedder chunk`: it streams one chunk's rows from the object (a ranged GET
// pinned to the planned ETag), maps them, embeds them in batches and upserts the vectors, and
// dead-letters every row it could not ingest with its reason.
//
// The work is a pipeline of bounded stages so memory does not depend on the chunk's size and the
// network waits overlap:
//
//	read+map (1) → batch+tokenize (1) → embed (a few requests in flight) → upsert (a few)
//
// Rows fail one at a time (malformed CSV, a mapping error, too many tokens, bad metadata, an input
// the embeddings API refuses, a vector Pinecone refuses: a refused request is bisected until the
// refused rows are alone) and are counted and dead-lettered with the reason and the API's
// message; the chunk still succeeds. A failure that concerns every row (bad key, unknown model,
// missing index, dimension mismatch, quota, retries exhausted) stops the chunk with an error.
package chunkrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/deadletter"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/incremental"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// ReasonInvalidMetadata fails a row whose metadata the Pinecone client cannot encode.
const ReasonInvalidMetadata = "invalid_metadata"

// MaxVectorBytesPerRequest bounds the vectors one embeddings request returns (128 inputs at 1,536
// dimensions) whatever maxInputsPerRequest says: the rows, vectors and request bodies of the
// batches in flight (three embedding, one queued, two upserting) are most of a chunk's heap, and
// halving the batch from 256 inputs took the embedder's peak RSS from 72 to 59 MiB. Batches stay
// large enough that the token budget, not the request budget, limits throughput: 128 inputs of
// ~200 tokens need only 3,000 requests a minute for 77M tokens, and even the old system's 300 RPM
// moves 7.7M tokens a minute.
const MaxVectorBytesPerRequest = 3 << 18

// Pipeline shape: goroutines per stage and the queue between stages (in batches). Three requests
// in flight hide the embeddings API's latency; one upsert worker keeps up (Pinecone takes 128
// vectors in well under the time the token budget spends on them, and a batch's upserts go out in
// parallel), and a second one only held another ~1 MB gRPC buffer: the 1M-row peak RSS went from
// 66 to 60 MiB.
const (
	embedWorkers  = 3
	upsertWorkers = 1
	rowsPerSlice  = 128
)

// Deps are the chunk's connections. Zero values are built from the ingestion and the arguments.
type Deps struct {
	// S3 reaches the source bucket (and the dead-letter bucket). nil: built from the source's
	// S3 connection and the AWS_* environment.
	S3 *s3.Client
	// Embedder and Upserter may be shared by chunks running in one process (`embedder run`), so
	// they share one rate budget. nil: built for this chunk with its budget shares.
	Embedder *embedding.Embedder
	Upserter *pinecone.Upserter
	// OpenAIAPIKey and PineconeAPIKey are used when the clients are built here.
	OpenAIAPIKey   string
	PineconeAPIKey string
	// PineconeControlHost is the control-plane base URL (env PINECONE_CONTROL_HOST); empty means
	// Pinecone's.
	PineconeControlHost string
	// HTTPClient for OpenAI; nil: a pooled client.
	HTTPClient *http.Client
	Log        logr.Logger
	// Now stamps processed_at; nil: time.Now.
	Now func() time.Time
	// Progress, when set, is called with the number of rows just finished (upserted or failed).
	Progress func(rows int64)
	// Lease, when set, makes the chunk's own embedder renew a rate lease with the manager
	// (LeaseFromEnv); its budget shares are then the start and the fallback.
	Lease *ratelease.ClientOptions
}

// NewEmbedder builds the embeddings client for ing with the given budgets. dimension is the
// index's dimension: every vector must have it. maxInFlight bounds concurrent requests (0: as
// many as a chunk's embed stage runs).
func NewEmbedder(ing worker.Ingestion, apiKey string, rpm, tpm float64, dimension, maxInFlight int, hc *http.Client, log logr.Logger) (*embedding.Embedder, error) {
	spec := ing.Spec.Embedding
	if apiKey == "" {
		return nil, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("no OpenAI API key (%s is empty)", worker.EnvOpenAIAPIKey))
	}
	if spec.Dimensions > 0 && dimension > 0 && int(spec.Dimensions) != dimension {
		return nil, worker.Permanent(worker.ReasonDimension, fmt.Errorf(
			"spec.embedding.dimensions is %d but index %q has dimension %d", spec.Dimensions, ing.Spec.Target.Pinecone.Index, dimension))
	}
	maxInputs := int(spec.MaxInputsPerRequest)
	if maxInputs <= 0 || maxInputs > embedding.MaxInputsPerRequest {
		maxInputs = embedding.MaxInputsPerRequest
	}
	model := spec.Model
	if model == "" {
		// No default: a model other than the one the index holds writes another vector space.
		return nil, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.embedding.model is empty: name the model the index holds"))
	}
	emb, err := embedding.New(embedding.Config{
		APIKey:              apiKey,
		BaseURL:             spec.BaseURL,
		Model:               model,
		Dimensions:          int(spec.Dimensions),
		ExpectedDimension:   dimension,
		MaxInputsPerRequest: maxInputs,
		MaxBatchVectorBytes: MaxVectorBytesPerRequest,
		RequestsPerMinute:   rpm,
		TokensPerMinute:     tpm,
		MaxInFlight:         cmp.Or(maxInFlight, embedWorkers),
		HTTPClient:          hc,
		Logger:              log,
		ProbeFirst:          true,
		Overlong:            ing.Spec.Mapping.OverlongText,
	})
	if err != nil {
		return nil, worker.Permanent(worker.ReasonPermanentError, err)
	}
	return emb, nil
}

// NewUpserter connects to the ingestion's Pinecone index.
func NewUpserter(ctx context.Context, ing worker.Ingestion, apiKey, controlHost string, log logr.Logger) (*pinecone.Upserter, error) {
	t := ing.Spec.Target.Pinecone
	if apiKey == "" {
		return nil, worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("no Pinecone API key (%s is empty)", worker.EnvPineconeAPIKey))
	}
	up, err := pinecone.New(ctx, pinecone.Config{
		APIKey:      apiKey,
		Index:       t.Index,
		Host:        t.Host,
		ControlHost: controlHost,
		BatchSize:   int(t.BatchSize),
		Logger:      log,
	})
	if err != nil {
		var perm *pinecone.PermanentError
		var exhausted *pinecone.RetryExhaustedError
		switch {
		case errors.As(err, &perm):
			return nil, err
		case errors.As(err, &exhausted), ctx.Err() != nil:
			return nil, fmt.Errorf("connect to Pinecone index %q: %w", t.Index, err)
		}
		// What is left is configuration New rejected (batch size, host): no retry helps.
		return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("connect to Pinecone index %q: %w", t.Index, err))
	}
	return up, nil
}

// Fixed is the metadata every record of the chunk carries.
func Fixed(ing worker.Ingestion, loc planner.Location, chunk int, now time.Time) mapping.Fixed {
	f := mapping.Fixed{
		DefaultNamespace: ing.Spec.Target.Pinecone.Namespace,
		Source:           loc.Kind,
		S3Key:            loc.Key,
		TaskID:           ing.TaskID,
		ChunkID:          chunk,
		ProcessedAt:      mapping.FormatProcessedAt(ing.Spec.Mapping.Metadata.Format, now),
	}
	if mb := ing.Spec.Source.Metabase; mb != nil {
		f.QuestionID = mb.QuestionID
	} else {
		f.QuestionID = QuestionIDFromPrefix(ing.Spec.Mapping.IDPrefix)
	}
	return f
}

var legacyPrefix = regexp.MustCompile(`^([1-9][0-9]{0,17})\.$`)

// QuestionIDFromPrefix returns the question id of a legacy id prefix "<question_id>." (the REST
// API builds the prefix that way), or 0 when the prefix is not of that form.
func QuestionIDFromPrefix(prefix string) int64 {
	m := legacyPrefix.FindStringSubmatch(prefix)
	if m == nil {
		return 0
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Run ingests one chunk and returns its counters. The result is filled as far as the chunk got,
// also when it returns an error.
func Run(ctx context.Context, ing worker.Ingestion, args worker.ChunkArgs, deps Deps) (res worker.Result, err error) {
	start := time.Now()
	res = worker.Result{Role: worker.RoleChunk, Chunk: args.Index}
	defer func() { res.DurationMillis = time.Since(start).Milliseconds() }()
	log := deps.Log.WithValues("chunk", args.Index)
	now := time.Now
	if deps.Now != nil {
		now = deps.Now
	}

	if args.ETag == "" {
		return res, worker.Permanent(worker.ReasonPermanentError, errors.New("chunk has no --etag: reads must be pinned to the planned object"))
	}
	if args.Offset < 0 || args.Length < 0 || args.Rows < 0 || args.FirstRow < 0 {
		return res, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("chunk %d: negative offset, length or rows", args.Index))
	}
	loc, err := planner.Locate(ing)
	if err != nil {
		return res, err
	}
	delim, err := planner.Delimiter(ing.Spec.Source.CSV.Delimiter)
	if err != nil {
		return res, err
	}
	cl, err := planner.S3Client(ctx, deps.S3, loc.Conn)
	if err != nil {
		return res, err
	}
	// A staged copy (gzip or another encoding, see the planner) is read instead of the source.
	obj := &source.Object{Client: cl, Bucket: loc.Bucket, Key: cmp.Or(args.Key, loc.Key), ETag: args.ETag}
	dups, err := loadDuplicates(ctx, cl, loc.Bucket, args)
	if err != nil {
		return res, err
	}

	header, err := readHeader(ctx, obj, args.Compression, args.Offset, delim)
	if err != nil {
		return res, err
	}
	fixed := Fixed(ing, loc, args.Index, now())
	fixed.FirstRow = args.FirstRow // legacy record_index counts within the chunk
	if ing.Spec.Sync != nil {
		// The upsert stage adds the content hash: the mapper leaves room for it.
		fixed.WriterFields = []mapping.Field{incremental.HashField()}
	}
	mapper, err := mapping.New(ing.Spec.Mapping, header, fixed)
	if err != nil {
		return res, worker.Permanent(worker.ReasonHeaderMismatch, err)
	}

	up := deps.Upserter
	if up == nil {
		if up, err = NewUpserter(ctx, ing, deps.PineconeAPIKey, deps.PineconeControlHost, log); err != nil {
			return res, err
		}
		defer up.Close()
	}
	emb := deps.Embedder
	ownEmbedder := emb == nil
	if ownEmbedder {
		if emb, err = NewEmbedder(ing, deps.OpenAIAPIKey, args.RequestsPerMinute, args.TokensPerMinute, up.Dimension(), 0, deps.HTTPClient, log); err != nil {
			return res, err
		}
		if deps.Lease != nil {
			defer startLease(ctx, *deps.Lease, emb, args, log)()
		}
	}

	var dl *deadletter.Writer
	if d := ing.Spec.DeadLetter; d != nil && d.Bucket != "" {
		dl = deadletter.New(cl, d.Bucket, d.KeyPrefix, ing.ObjectID(), args.Index, header)
	}
	fails := &failures{dl: dl, log: log, progress: deps.Progress}

	// A retry skips what an earlier attempt upserted (resume.go). The marker is written before
	// the first embedding, so an unwritable dead-letter location also fails here, unpaid.
	resume, attemptDone, err := startAttempt(ctx, cl, ing, args.Index)
	if err != nil {
		return res, err
	}
	p := &pipeline{
		emb: emb, up: up, mapper: mapper, fails: fails, progress: deps.Progress, dups: dups,
		maxRow: maxRowBytes(ing.Spec.Mapping),
		model:  cmp.Or(ing.Spec.Embedding.Model, "text-embedding-3-small"), dimension: up.Dimension(),
		hashes:      ing.Spec.Sync != nil,
		owner:       ing.Spec.Mapping.IDPrefix,
		incremental: ing.Spec.Sync != nil && ing.Spec.Sync.Mode == v1alpha1.SyncIncremental,
		resume:      resume,
		taskID:      ing.TaskID,
	}
	openRows := func(ctx context.Context) (*csvplan.Reader, io.Closer, error) {
		body, err := obj.OpenChunk(ctx, args.Compression, args.Offset, args.Length)
		if err != nil {
			return nil, nil, err
		}
		rd, err := csvplan.NewReader(body, header, csvplan.ReaderOptions{
			Delimiter: delim, FirstRow: args.FirstRow, Offset: args.Offset, ExpectRows: args.Rows,
			MaxRowBytes: maxRowBytes(ing.Spec.Mapping),
		})
		if err != nil {
			body.Close()
			return nil, nil, worker.Permanent(worker.ReasonPermanentError, err)
		}
		return rd, body, nil
	}
	var batch *batchRun
	if ing.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch && args.Length > 0 {
		cfg, cerr := batchConfig(ing, args, deps, cl, log)
		if cerr == nil {
			cfg.Report = batchReporter(ing, args.Index, deps.Lease, log)
			batch, cerr = p.prepareBatch(ctx, cfg, args, openRows)
		}
		if cerr != nil {
			return res, cerr
		}
		defer batch.close()
	}
	if args.Length > 0 {
		var rd *csvplan.Reader
		var body io.Closer
		if rd, body, err = openRows(ctx); err != nil {
			return res, err
		}
		err = p.run(ctx, rd)
		body.Close()
		res.RowsRead = rd.Rows()
		if err == nil {
			var rc *csvplan.RowCountError
			if rerr := rd.Err(); errors.As(rerr, &rc) {
				err = worker.Permanent(worker.ReasonSourceChanged, fmt.Errorf("chunk %d of s3://%s/%s: %w", args.Index, loc.Bucket, loc.Key, rerr))
			} else if rerr != nil {
				err = fmt.Errorf("read chunk %d of s3://%s/%s: %w", args.Index, loc.Bucket, loc.Key, rerr)
			}
		}
	} else if args.Rows > 0 {
		err = worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("chunk %d has %d rows in 0 bytes", args.Index, args.Rows))
	}

	// Dead letters are written even when the chunk failed: the rows found bad so far are kept.
	if dl != nil {
		if cerr := dl.Close(ctx); cerr != nil && err == nil {
			err = fmt.Errorf("chunk %d: %w", args.Index, cerr)
		}
		if keys := dl.Keys(); len(keys) > 0 {
			res.DeadLetterKey = keys[0]
		}
	}
	// Rows an earlier attempt upserted are this chunk's upserted rows as much as this attempt's.
	res.Resumed = p.resumed.Load()
	res.Processed = p.upserted.Load() + res.Resumed
	res.VectorsUpserted = p.upserted.Load() + res.Resumed
	if err == nil && batch != nil {
		// The vectors are upserted: the batch files at OpenAI are no longer needed.
		if ferr := batch.finish(ctx); ferr != nil {
			log.Info("could not delete the chunk's batch files at OpenAI (they expire there)", "error", ferr.Error())
		}
	}
	if err == nil {
		if derr := attemptDone(ctx); derr != nil {
			log.Info("could not remove the chunk's attempt marker (a later run of this chunk would check for earlier upserts)", "error", derr.Error())
		}
	}
	res.Failed = fails.count()
	// Skipped: rows unchanged since the last sync, plus rows left out on purpose (duplicate ids).
	res.Skipped = p.skipped.Load() + fails.skippedCount()
	res.FailedSamples = fails.sampled()
	if batch != nil {
		// Batch mode bills the tokens of the lines embedded; its requests are the chunk's batches
		// (whichever pod created them).
		res.Tokens, res.Requests = batch.runner.Stats().Tokens, int64(len(batch.runner.Record().Batches))
		// The batches by state and their lines, for the status (the manager cannot read the record).
		sum := batch.runner.Record().Summary()
		res.Batch = &sum
	} else if ownEmbedder {
		st := emb.Stats()
		res.Tokens, res.Requests, res.Retries, res.RateLimited = st.Tokens, st.Requests, st.Retries, st.RateLimited
	} else {
		// A shared embedder's counters are the whole run's; count this chunk's own requests.
		res.Tokens, res.Requests = p.tokens.Load(), p.requests.Load()
	}
	if deps.Upserter == nil {
		res.Retries += up.Stats().Retries
	}
	log.Info("chunk finished", "rowsRead", res.RowsRead, "upserted", res.VectorsUpserted, "resumed", res.Resumed, "failed", res.Failed,
		"tokens", res.Tokens, "requests", res.Requests, "retries", res.Retries, "rateLimited", res.RateLimited,
		"duration", time.Since(start).Round(time.Millisecond), "error", errString(err))
	return res, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// readHeader reads the object's first record: the chunk checks its mapping against the header of
// the very object it reads (pinned to the same ETag). The header lies before the first data row,
// so it is within [0, dataStart). A gzip object is decompressed from its start.
func readHeader(ctx context.Context, obj *source.Object, compression string, dataStart int64, delim rune) ([]string, error) {
	if dataStart <= 0 {
		return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("chunk offset %d leaves no room for the CSV header", dataStart))
	}
	body, err := obj.OpenChunk(ctx, compression, 0, dataStart)
	if err != nil {
		return nil, err
	}
	// Only the header record is read; closing the body early abandons the rest of the range.
	defer body.Close()
	header, _, err := csvplan.ReadHeader(body, delim, 0)
	var he *csvplan.HeaderError
	switch {
	case errors.As(err, &he):
		return nil, worker.Permanent(worker.ReasonHeaderMismatch, fmt.Errorf("s3://%s/%s: %w", obj.Bucket, obj.Key, err))
	case err != nil:
		return nil, fmt.Errorf("read CSV header of s3://%s/%s: %w", obj.Bucket, obj.Key, err)
	}
	return header, nil
}

// maxFailRowBytes is the longest row a chunk reads with overlongText: fail. Any longer row holds
// a text over mapping.MaxTextBytes (failed without being sanitized) unless a megabyte of other
// columns makes it long, so it can only fail: the reader counts it and skips its bytes instead of
// holding megabytes, and it is dead-lettered as too_many_tokens with its position.
const maxFailRowBytes = mapping.MaxTextBytes + 1<<20

// maxRowBytes is the reader's row limit: with truncate every row up to csvplan's limit is read,
// since its text is cut, not failed.
func maxRowBytes(spec v1alpha1.MappingSpec) int {
	if spec.OverlongText == mapping.OverlongTruncate {
		return csvplan.DefaultMaxRowBytes
	}
	return maxFailRowBytes
}

// item is a mapped row on its way through the pipeline; fields are kept for the dead letter.
type item struct {
	rec    mapping.Record
	fields []string
	hash   string // content hash (internal/incremental), written to metadata
}

type embedJob struct {
	batch embedding.Batch
	items []item
}

type upsertJob struct {
	items []item
	outs  []embedding.Output
}

type pipeline struct {
	emb      *embedding.Embedder
	up       *pinecone.Upserter
	mapper   *mapping.Mapper
	fails    *failures
	progress func(int64)
	dups     map[int64]int64 // duplicate row → the row whose vector is kept

	maxRow int // rows longer than this are not read into memory (see maxRowBytes)

	upserted, tokens, requests atomic.Int64

	// Incremental sync: the content hash covers the model and the vectors' dimension; rows
	// stored with the same hash are skipped.
	model       string
	dimension   int
	hashes      bool   // spec.sync is set: vectors carry content_hash
	owner       string // spec.sync is set: vectors carry their owner (ownership.Key), the id prefix
	incremental bool
	skipped     atomic.Int64

	// A retry: rows stored with this task's id (and content hash) are not embedded again.
	resume  bool
	taskID  string
	resumed atomic.Int64

	// Batch mode (batchmode.go): submit takes the embed stage's batches in the submission pass;
	// collected answers them from the Batch API's results in the upsert pass.
	submit    func(ctx context.Context, job embedJob) error
	collected func(ctx context.Context, b embedding.Batch) ([]embedding.Output, []embedding.InputError, error)
}

// run drives the stages until the reader is exhausted or a stage fails; the first error cancels
// the others.
func (p *pipeline) run(ctx context.Context, rd *csvplan.Reader) error {
	g, ctx := errgroup.WithContext(ctx)
	mapped := make(chan []item, 4)
	batches := make(chan embedJob, 1)
	embedded := make(chan upsertJob, 1)

	g.Go(func() error {
		defer close(mapped)
		return p.readAndMap(ctx, rd, mapped)
	})
	toBatch := mapped
	if p.incremental || p.resume {
		changed := make(chan []item, 4)
		g.Go(func() error {
			defer close(changed)
			return p.skipStored(ctx, mapped, changed)
		})
		toBatch = changed
	}
	g.Go(func() error {
		defer close(batches)
		return p.batch(ctx, toBatch, batches)
	})
	var embedders sync.WaitGroup
	workers := embedWorkers
	if p.submit != nil {
		workers = 1 // batch files take rows in order: a restarted pod resumes after the last one
	}
	for range workers {
		embedders.Add(1)
		g.Go(func() error {
			defer embedders.Done()
			return p.embed(ctx, batches, embedded)
		})
	}
	g.Go(func() error {
		embedders.Wait()
		close(embedded)
		return nil
	})
	for range upsertWorkers {
		g.Go(func() error { return p.upsert(ctx, embedded) })
	}
	return g.Wait()
}

func send[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readAndMap reads rows and maps them; malformed rows and rows the mapping rejects fail here.
func (p *pipeline) readAndMap(ctx context.Context, rd *csvplan.Reader, out chan<- []item) error {
	slice := make([]item, 0, rowsPerSlice)
	for rd.Next() {
		row := rd.Row()
		if row.Err != nil {
			reason, detail := row.Err.Reason, row.Err.Detail
			if reason == csvplan.ReasonRowTooLong && p.maxRow == maxFailRowBytes {
				reason, detail = embedding.ReasonTooManyTokens, fmt.Sprintf(
					"the row at byte %d of the object is longer than %d bytes: with spec.mapping.overlongText: fail no row this long can be embedded (its text would be over %d bytes, far past 8,191 tokens; or a quote is never closed), so it is not read into memory and this dead letter keeps its position, not its fields; overlongText: truncate embeds the start of its text",
					row.Offset, maxFailRowBytes, mapping.MaxTextBytes)
			}
			if err := p.fails.add(ctx, row.Num, row.Fields, reason, detail); err != nil {
				return err
			}
			continue
		}
		if first, ok := p.dups[row.Num]; ok {
			if err := p.skipDuplicate(ctx, row, first); err != nil {
				return err
			}
			continue
		}
		rec, rerr := p.mapper.Map(row.Num, row.Fields)
		if rerr != nil {
			if err := p.fails.add(ctx, row.Num, row.Fields, rerr.Reason, rerr.Detail); err != nil {
				return err
			}
			continue
		}
		it := item{rec: rec, fields: row.Fields}
		if p.hashes {
			// The owner marker is content: a vector written before it existed hashes
			// differently, so the next run rewrites it with the marker.
			it.rec.Metadata = ownership.Stamp(it.rec.Metadata, p.owner)
			rec = it.rec
			it.hash = incremental.Hash(rec, p.model, p.dimension)
		}
		slice = append(slice, it)
		if len(slice) == rowsPerSlice {
			if err := send(ctx, out, slice); err != nil {
				return err
			}
			slice = make([]item, 0, rowsPerSlice)
		}
	}
	if len(slice) > 0 {
		return send(ctx, out, slice)
	}
	return nil
}

// batch packs mapped rows into embeddings requests (counting their tokens); a text the model
// cannot take fails its row.
func (p *pipeline) batch(ctx context.Context, in <-chan []item, out chan<- embedJob) error {
	b := p.emb.NewBatcher()
	var pending []item
	for slice := range in {
		for _, it := range slice {
			full, bad := b.Add(embedding.Input{ID: it.rec.Row, Text: it.rec.Text})
			if bad != nil {
				if err := p.fails.add(ctx, it.rec.Row, it.fields, bad.Reason, bad.Detail); err != nil {
					return err
				}
				continue
			}
			if full != nil {
				// The full batch is exactly the rows added before this one.
				if len(full.Inputs) != len(pending) {
					return fmt.Errorf("batcher returned %d inputs for %d pending rows", len(full.Inputs), len(pending))
				}
				if err := send(ctx, out, embedJob{batch: *full, items: pending}); err != nil {
					return err
				}
				pending = make([]item, 0, len(full.Inputs))
			}
			pending = append(pending, it)
		}
	}
	if last := b.Flush(); last != nil {
		return send(ctx, out, embedJob{batch: *last, items: pending})
	}
	return nil
}

func (p *pipeline) embed(ctx context.Context, in <-chan embedJob, out chan<- upsertJob) error {
	for job := range in {
		if p.submit != nil {
			// Batch mode, submission pass: the rows go into batch files, nothing is upserted.
			if err := p.submit(ctx, job); err != nil {
				return err
			}
			continue
		}
		var outs []embedding.Output
		var refused []embedding.InputError
		var err error
		if p.collected != nil {
			outs, refused, err = p.collected(ctx, job.batch)
		} else {
			outs, refused, err = p.emb.EmbedBatch(ctx, job.batch)
			p.requests.Add(1)
			p.tokens.Add(int64(job.batch.Tokens))
		}
		if err != nil {
			return err
		}
		items, err := p.dropRefused(ctx, job.items, refused)
		if err != nil {
			return err
		}
		if len(outs) != len(items) {
			return fmt.Errorf("embeddings: %d vectors for %d rows", len(outs), len(items))
		}
		for i := range outs {
			if outs[i].ID != items[i].rec.Row {
				return fmt.Errorf("embeddings: vector for row %d where row %d was expected", outs[i].ID, items[i].rec.Row)
			}
		}
		if len(items) == 0 {
			continue
		}
		if err := send(ctx, out, upsertJob{items: items, outs: outs}); err != nil {
			return err
		}
	}
	return nil
}

// dropRefused fails the rows the embeddings API refused and returns the others, in order.
func (p *pipeline) dropRefused(ctx context.Context, items []item, refused []embedding.InputError) ([]item, error) {
	if len(refused) == 0 {
		return items, nil
	}
	byRow := make(map[int64]embedding.InputError, len(refused))
	for _, r := range refused {
		byRow[r.ID] = r
	}
	kept := make([]item, 0, len(items)-len(refused))
	for _, it := range items {
		if r, ok := byRow[it.rec.Row]; ok {
			if err := p.fails.add(ctx, it.rec.Row, it.fields, r.Reason, r.Detail); err != nil {
				return nil, err
			}
			continue
		}
		kept = append(kept, it)
	}
	return kept, nil
}

// upsert writes one embedded batch, namespace by namespace; vectors Pinecone refuses fail their
// rows.
func (p *pipeline) upsert(ctx context.Context, in <-chan upsertJob) error {
	for job := range in {
		byNS := map[string][]pinecone.Vector{}
		rowsNS := map[string][]item{}
		var order []string
		for i, it := range job.items {
			if p.hashes {
				it.rec.Metadata = incremental.WithHash(it.rec.Metadata, it.hash)
			}
			md, err := it.rec.MetadataStruct()
			if err != nil {
				if err := p.fails.add(ctx, it.rec.Row, it.fields, ReasonInvalidMetadata, err.Error()); err != nil {
					return err
				}
				continue
			}
			ns := it.rec.Namespace
			if _, ok := byNS[ns]; !ok {
				order = append(order, ns)
			}
			byNS[ns] = append(byNS[ns], pinecone.Vector{ID: it.rec.ID, Values: job.outs[i].Vector, Metadata: md})
			rowsNS[ns] = append(rowsNS[ns], it)
		}
		for _, ns := range order {
			vecs, rows := byNS[ns], rowsNS[ns]
			rejected, err := p.up.Upsert(ctx, ns, vecs)
			if err != nil {
				return err
			}
			for _, r := range rejected {
				it := rows[r.Index]
				if err := p.fails.add(ctx, it.rec.Row, it.fields, r.Reason, r.Detail); err != nil {
					return err
				}
			}
			n := int64(len(vecs) - len(rejected))
			p.upserted.Add(n)
			if p.progress != nil {
				p.progress(n)
			}
		}
	}
	return nil
}

// failures counts failed rows, keeps a few samples and writes them to the dead letter. Stages
// call it concurrently.
type failures struct {
	mu       sync.Mutex
	dl       *deadletter.Writer
	log      logr.Logger
	progress func(int64)
	n        int64
	skipped  int64
	samples  []worker.FailedRow
}

// loggedFailures is how many failed rows are logged one by one; the rest are only counted.
const loggedFailures = 20

func (f *failures) add(ctx context.Context, row int64, fields []string, reason, detail string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if len(f.samples) < worker.MaxSamples {
		f.samples = append(f.samples, worker.FailedRow{Row: row, Reason: reason, Detail: detail})
	}
	if f.n <= loggedFailures {
		f.log.Info("row failed", "row", row, "reason", reason, "detail", detail)
	}
	return f.deadLetter(ctx, row, fields, reason, detail)
}

// deadLetter counts the row as done for progress and writes it to the dead letters, if any.
// The caller holds f.mu.
func (f *failures) deadLetter(ctx context.Context, row int64, fields []string, reason, detail string) error {
	if f.progress != nil {
		f.progress(1)
	}
	if f.dl == nil {
		return nil
	}
	if err := f.dl.Add(ctx, row, fields, reason, detail); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}

func (f *failures) count() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *failures) sampled() []worker.FailedRow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]worker.FailedRow(nil), f.samples...)
}
