// Package planner is `embedder plan`: it reads the ingestion's CSV object once (staging a Metabase
// export into S3 first), checks the header against the mapping, records a row-aligned byte offset
// every rowsPerChunk rows, counts rows, estimates tokens with the model's tokenizer and the cost,
// and writes the plan to the ConfigMap the controller fans chunks out from.
package planner

import (
	"bytes"
	"cmp"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/duplicates"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/vectorspace"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// DefaultRowsPerChunk is the API default of spec.chunking.rowsPerChunk.
const DefaultRowsPerChunk = 1000

// Data-source names, as the legacy metadata field `source` and the task table spell them.
const (
	SourceS3       = "s3_csv"
	SourceMetabase = "metabase"
)

// Deps are the planner's connections. Zero values are built from the ingestion and the
// environment.
type Deps struct {
	// S3 reaches the source bucket. nil: built from the source's S3 connection with the
	// AWS_* environment (or the pod's identity).
	S3 *s3.Client
	// HTTPClient calls Metabase. nil: a client with a 30-minute timeout (an export can be large).
	HTTPClient *http.Client
	// MetabaseAPIKey is the value of METABASE_API_KEY.
	MetabaseAPIKey string
	// RowsPerChunk overrides spec.chunking.rowsPerChunk when positive (`embedder run`).
	RowsPerChunk int64
	// Guard checks the target's vector space against some of the file's rows (see package
	// vectorspace) before anything is written. nil: no guard runs (tests of the plan alone);
	// `embedder plan` and `embedder run` always set it.
	Guard Guard
	// SyncPreview, when set, previews spec.sync in a dry run (rows to embed and to skip,
	// vectors to delete; package syncrun). It is used only when the spec is a dry run with
	// spec.sync; the estimate lands in the plan and then in status.estimate.sync.
	SyncPreview SyncPreview
	Log         logr.Logger
}

// SyncPreview is fed the file's rows in a dry run with spec.sync.
type SyncPreview interface {
	Start(ctx context.Context, header []string) error
	Row(ctx context.Context, row int64, fields []string) error
	Finish(ctx context.Context) (*v1alpha1.SyncEstimate, error)
}

// Guard runs the vector-space check over candidate rows of the file.
type Guard func(ctx context.Context, cands []vectorspace.Candidate) (*v1alpha1.VectorSpaceStatus, error)

// Location is where an ingestion's CSV object lives.
type Location struct {
	Conn   v1alpha1.S3Connection
	Bucket string
	Key    string
	// Kind is SourceS3 or SourceMetabase.
	Kind string
}

// Locate returns the object an ingestion reads: the S3 object, or for Metabase the staged export
// at <stageTo.keyPrefix><taskID>-<uid>.csv (worker.Ingestion.ObjectID; where source.StageMetabase writes it), so chunk workers find
// it without the plan.
func Locate(ing worker.Ingestion) (Location, error) {
	src := ing.Spec.Source
	switch {
	case src.S3 != nil && src.Metabase != nil:
		return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.source: set s3 or metabase, not both"))
	case src.S3 != nil:
		if src.S3.Bucket == "" || src.S3.Key == "" {
			return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.source.s3: bucket and key are required"))
		}
		return Location{Conn: src.S3.S3Connection, Bucket: src.S3.Bucket, Key: src.S3.Key, Kind: SourceS3}, nil
	case src.Metabase != nil:
		if src.Metabase.StageTo.Bucket == "" {
			return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.source.metabase.stageTo.bucket is required"))
		}
		if ing.ObjectID() == "" {
			return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("the ingestion has no task id to name the staged Metabase export"))
		}
		return Location{Conn: src.Metabase.StageTo.S3Connection, Bucket: src.Metabase.StageTo.Bucket,
			Key: src.Metabase.StageTo.KeyPrefix + ing.ObjectID() + ".csv", Kind: SourceMetabase}, nil
	}
	return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.source: set s3 or metabase"))
}

// Delimiter parses spec.source.csv.delimiter: one character, "" meaning ','.
func Delimiter(s string) (rune, error) {
	if s == "" {
		return ',', nil
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError || n != len(s) {
		return 0, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("spec.source.csv.delimiter %q must be exactly one character", s))
	}
	return r, nil
}

// S3Client returns deps.S3, or a client for conn.
func S3Client(ctx context.Context, given *s3.Client, conn v1alpha1.S3Connection) (*s3.Client, error) {
	if given != nil {
		return given, nil
	}
	cl, err := source.NewS3Client(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("S3 client: %w", err)
	}
	return cl, nil
}

// Plan stages (Metabase), scans and estimates the ingestion's object. Errors that no retry can fix
// (missing object, header without the mapped columns, a mapping that does not fit the header, too
// many chunks) are *worker.PermanentError.
func Plan(ctx context.Context, ing worker.Ingestion, deps Deps) (*worker.Plan, error) {
	log := deps.Log
	spec := &ing.Spec
	loc, err := Locate(ing)
	if err != nil {
		return nil, err
	}
	delim, err := Delimiter(spec.Source.CSV.Delimiter)
	if err != nil {
		return nil, err
	}
	rpc := deps.RowsPerChunk
	if rpc <= 0 {
		rpc = int64(spec.Chunking.RowsPerChunk)
	}
	if rpc <= 0 {
		rpc = DefaultRowsPerChunk
	}
	cl, err := S3Client(ctx, deps.S3, loc.Conn)
	if err != nil {
		return nil, err
	}

	var staged source.Staged
	if mb := spec.Source.Metabase; mb != nil {
		hc := deps.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 30 * time.Minute}
		}
		start := time.Now()
		staged, err = source.StageMetabase(ctx, hc, mb, deps.MetabaseAPIKey, cl, ing.ObjectID())
		if err != nil {
			return nil, fmt.Errorf("stage Metabase question %d: %w", mb.QuestionID, err)
		}
		key := staged.Key
		loc.Key = key
		log.Info("staged Metabase export", "question", mb.QuestionID, "bucket", loc.Bucket, "key", key,
			"duration", time.Since(start).Round(time.Millisecond))
	}

	obj, err := source.Head(ctx, cl, loc.Bucket, loc.Key)
	if err != nil {
		return nil, err
	}
	// Where chunks write dead letters must be writable before any row is paid for: found only at
	// a chunk's end, an unwritable location would fail every attempt after its rows were embedded.
	if err := probeDeadLetter(ctx, ing, cl, log); err != nil {
		return nil, err
	}
	rawBody, err := obj.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rawBody.Close()
	body := &countingReader{r: rawBody}
	r, compression, err := source.Decompress(body, spec.Source.CSV.Compression)
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}
	encoding := spec.Source.CSV.Encoding
	if r, err = source.Decode(r, encoding); err != nil {
		return nil, err
	}

	// A gzip or non-UTF-8 object is copied, decompressed and as UTF-8, into a staged object in
	// the same pass that scans it; the plan's offsets are positions in that copy, which chunks
	// read with ranged GETs like any plain file, so the object is inflated once, not per chunk.
	var stager *source.Stager
	var stagedKey string
	if source.NeedsStaging(compression, encoding) {
		prefix, err := stagePrefix(ing)
		if err != nil {
			return nil, err
		}
		if leftover, err := source.ProbeWrite(ctx, cl, loc.Bucket, prefix+".probe"); err != nil {
			return nil, stageError(err, "a probe object where the staged copy goes")
		} else if leftover != nil {
			log.Info("the staging location is writable but the probe could not be deleted (cleanup will fail the same way)", "error", leftover.Error())
		}
		stagedKey = prefix + stagedCopySuffix
		var w io.Writer
		stager, w = source.NewStager(ctx, cl, loc.Bucket, stagedKey)
		r = io.TeeReader(r, w)
		defer func() {
			if stager != nil { // not finished: the plan failed
				stager.Abort(errors.New("planning failed"))
			}
		}()
	}

	header, replay, err := peekHeader(r, delim)
	if err != nil {
		return nil, fmt.Errorf("read header of s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}
	est := &tokens.Estimator{}
	finder := duplicates.NewFinder()
	var preview SyncPreview
	if spec.DryRun && spec.Sync != nil {
		preview = deps.SyncPreview
	}
	var onRow func(int64, [][]byte) error
	var cands []vectorspace.Candidate
	if header != nil {
		// A header the scanner cannot read is left for Scan to report; otherwise check the
		// mapping against it before reading the rest of the file.
		if err := checkRequired(header, RequiredColumns(spec.Mapping, header)); err != nil {
			return nil, worker.Permanent(worker.ReasonHeaderMismatch, err)
		}
		keep := candidates(ing, header, &cands)
		if onRow, err = rowHandler(spec.Mapping, spec.Target.Pinecone.Namespace, header, est, finder, keep); err != nil {
			return nil, worker.Permanent(worker.ReasonHeaderMismatch, err)
		}
		if preview != nil {
			if err := preview.Start(ctx, header); err != nil {
				return nil, fmt.Errorf("dry run of spec.sync: %w", err)
			}
			onRow = previewRows(ctx, preview, onRow)
		}
	}

	start := time.Now()
	res, err := csvplan.Scan(replay, csvplan.Options{
		Delimiter:    delim,
		RowsPerChunk: rpc,
		Required:     RequiredColumns(spec.Mapping, header),
		MaxChunks:    worker.MaxChunks,
		OnRow:        onRow,
	})
	var he *csvplan.HeaderError
	var tm *csvplan.TooManyChunksError
	switch {
	case errors.As(err, &he):
		return nil, worker.Permanent(worker.ReasonHeaderMismatch, fmt.Errorf("s3://%s/%s: %w", loc.Bucket, loc.Key, err))
	case errors.As(err, &tm):
		return nil, worker.Permanent(worker.ReasonTooManyChunks, err)
	case err != nil:
		if stager != nil {
			// A stopped staging upload breaks the scan's reads; its own error says why.
			if uerr := stager.Abort(err); uerr != nil {
				stager = nil
				return nil, stageError(source.Classify(fmt.Sprintf("s3://%s/%s", loc.Bucket, stagedKey), uerr), "the staged copy")
			}
			stager = nil
		}
		if compression == "gzip" && corruptGzip(err, body.n, obj.Size) {
			// The same bytes come back on every attempt: fail once.
			return nil, worker.Permanent(worker.ReasonCorruptSource, fmt.Errorf(
				"s3://%s/%s is not a valid gzip stream (read %d of its %d bytes): %w; upload the file again", loc.Bucket, loc.Key, body.n, obj.Size, err))
		}
		return nil, fmt.Errorf("scan s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}

	vs, err := checkVectorSpace(ctx, ing, deps.Guard, cands)
	if err != nil {
		return nil, err
	}
	guardTokens := int64(0)
	if vs != nil {
		guardTokens = vs.Tokens
		log.Info("vector-space guard", "result", vs.Result, "model", vs.Model, "compared", vs.Compared,
			"minCosine", vs.MinCosine, "tokens", vs.Tokens, "message", vs.Message)
	}

	model := spec.Embedding.Model
	plan := &worker.Plan{
		Bucket:           loc.Bucket,
		Key:              loc.Key,
		ETag:             obj.ETag,
		SizeBytes:        obj.Size,
		Compression:      compression,
		Header:           res.Header,
		TotalRows:        res.TotalRows,
		RowsPerChunk:     rpc,
		Offsets:          res.Offsets,
		EstimatedTokens:  est.Tokens() + guardTokens,
		EstimatedCostUSD: tokens.CostUSD(model, est.Tokens()+guardTokens),
		BlankRows:        res.BlankRows,
		VectorSpace:      vs,
	}
	if mb := spec.Source.Metabase; mb != nil {
		// A cut export planned as complete would lose its last rows, and with deleteMissing
		// delete their vectors.
		if note := source.Truncation(mb, staged, res.TotalRows); note != "" {
			if spec.DeletesMissing() {
				return nil, worker.Permanent(worker.ReasonSourceTruncated, fmt.Errorf("%s; spec.sync.deleteMissing would delete their vectors, so the run stops (export in smaller windows, or raise the instance's limit and spec.source.metabase.exportRowLimit)", note))
			}
			plan.SourceWarning = note
			log.Info("the source looks truncated", "warning", note)
		}
	}
	if stager != nil {
		st, err := stager.Finish(ctx)
		stager = nil
		if err != nil {
			return nil, stageError(err, "the staged copy")
		}
		plan.Staged = &worker.StagedObject{Key: st.Key, ETag: st.ETag, SizeBytes: st.Size}
		log.Info("staged a plain UTF-8 copy for ranged reads", "compression", compression, "encoding", encoding,
			"key", st.Key, "etag", st.ETag, "bytes", st.Size)
	}
	if dups := finder.Duplicates(); len(dups) > 0 {
		if plan.Duplicates, err = writeDuplicates(ctx, ing, cl, loc.Bucket, dups, rpc, len(res.Offsets)-1); err != nil {
			return nil, err
		}
		plan.DuplicateRows = int64(len(dups))
		log.Info("rows repeat an earlier row's vector id; their chunks dead-letter them as duplicate_id, the first occurrence is kept",
			"rows", len(dups), "firstDuplicateRow", dups[0].Row, "sameAsRow", dups[0].First, "list", plan.Duplicates.Key)
	}
	if preview != nil && header != nil {
		if plan.SyncEstimate, err = preview.Finish(ctx); err != nil {
			return nil, err
		}
		se := plan.SyncEstimate
		log.Info("dry run of spec.sync", "rowsToEmbed", se.RowsToEmbed, "rowsToSkip", se.RowsToSkip, "tokens", se.Tokens,
			"costUSD", se.CostUSD, "vectorsUnderPrefix", se.VectorsUnderPrefix, "vectorsToDelete", se.VectorsToDelete,
			"deleteGuard", se.DeleteGuard, "lookupRequests", se.LookupRequests)
	}
	if err := plan.Validate(); err != nil {
		return nil, fmt.Errorf("plan of s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}
	log.Info("planned", "bucket", loc.Bucket, "key", loc.Key, "etag", obj.ETag, "bytes", res.Bytes,
		"compression", compression, "rows", res.TotalRows, "chunks", plan.Chunks(), "blankRows", res.BlankRows,
		"malformedRows", res.MalformedRows, "estimatedTokens", plan.EstimatedTokens, "exactTokens", est.Exact(),
		"estimatedCostUSD", plan.EstimatedCostUSD, "priceKnown", tokens.PriceKnown(model),
		"duration", time.Since(start).Round(time.Millisecond))
	for _, s := range res.MalformedSamples {
		log.Info("malformed row (it will be dead-lettered by its chunk)", "row", s.Row, "offset", s.Offset, "reason", s.Reason, "detail", s.Detail)
	}
	return plan, nil
}

// probeDeadLetter writes and deletes a probe object under spec.deadLetter's prefix (where the
// chunks' dead letters go, through the source's S3 connection). A location the worker cannot
// write fails the plan permanently, before any chunk embeds a row.
func probeDeadLetter(ctx context.Context, ing worker.Ingestion, cl *s3.Client, log logr.Logger) error {
	d := ing.Spec.DeadLetter
	if d == nil || d.Bucket == "" {
		return nil
	}
	// Beside the chunks' dead letters (worker.Ingestion.ObjectID).
	id := cmp.Or(ing.ObjectID(), "probe")
	key := d.KeyPrefix + id + "/.write-probe"
	leftover, err := source.ProbeWrite(ctx, cl, d.Bucket, key)
	if err != nil {
		if p, ok := worker.AsPermanent(err); ok {
			return worker.Permanent(worker.ReasonDeadLetterUnwritable, fmt.Errorf(
				"spec.deadLetter: cannot write to s3://%s/%s: %w. Nothing was embedded: set spec.deadLetter.bucket (and keyPrefix) to a location the worker's S3 identity can write (s3:PutObject), or remove spec.deadLetter",
				d.Bucket, d.KeyPrefix, p.Err))
		}
		return fmt.Errorf("spec.deadLetter: %w", err)
	}
	if leftover != nil {
		log.Info("the dead-letter location is writable; the probe object could not be deleted", "error", leftover.Error())
	}
	return nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// corruptGzip tells a gzip stream that is corrupt from a download that broke: a bad checksum,
// header or deflate data is in the object; a stream cut short is, when the whole object was read.
func corruptGzip(err error, read, size int64) bool {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrChecksum), errors.Is(err, gzip.ErrHeader), errors.As(err, &corrupt):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF):
		return size > 0 && read >= size
	}
	return false
}

// checkVectorSpace runs the guard unless the spec allows mixed vector spaces, and turns a
// mismatch, or a non-empty namespace it could not compare, into the permanent error that fails
// the ingestion before any chunk writes.
func checkVectorSpace(ctx context.Context, ing worker.Ingestion, guard Guard, cands []vectorspace.Candidate) (*v1alpha1.VectorSpaceStatus, error) {
	if ing.Spec.Target.Pinecone.AllowMixedVectorSpaces {
		return &v1alpha1.VectorSpaceStatus{
			Result:  v1alpha1.VectorSpaceSkipped,
			Model:   ing.Spec.Embedding.Model,
			Message: "the vector-space guard was skipped: spec.target.pinecone.allowMixedVectorSpaces is true",
		}, nil
	}
	if guard == nil {
		return nil, nil
	}
	vs, err := guard(ctx, cands)
	if err != nil {
		return nil, err
	}
	switch vs.Result {
	case v1alpha1.VectorSpaceMismatch:
		return vs, worker.Permanent(worker.ReasonVectorSpaceMismatch, errors.New(vs.Message))
	case v1alpha1.VectorSpaceUnverified:
		return vs, worker.Permanent(worker.ReasonVectorSpaceUnverified, errors.New(vs.Message))
	}
	return vs, nil
}

// candidates returns the scan's hook that keeps the first vectorspace.MaxCandidates rows with
// an id and a text as the guard's candidates: their vector ids and namespaces as the chunks will
// compute them, and their text.
func candidates(ing worker.Ingestion, header []string, out *[]vectorspace.Candidate) func(fields [][]byte, id, ns, text string) {
	m := ing.Spec.Mapping
	idName := m.IDColumn
	if idName == "" {
		idName = mapping.DefaultIDColumn
	}
	idCol, nsCol := -1, -1
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF") // as mapping.New reads the header
		}
		if h == idName && idCol < 0 {
			idCol = i
		}
		if m.NamespaceColumn != "" && h == m.NamespaceColumn && nsCol < 0 {
			nsCol = i
		}
	}
	def := ing.Spec.Target.Pinecone.Namespace
	return func(fields [][]byte, id, ns, text string) {
		if len(*out) >= vectorspace.MaxCandidates {
			return
		}
		if id == "" { // the text-column path: compute what mapping.Map would
			if idCol < 0 || idCol >= len(fields) {
				return
			}
			raw := strings.TrimSpace(string(fields[idCol]))
			if raw == "" {
				return
			}
			id, ns = m.IDPrefix+raw, def
			if nsCol >= 0 && nsCol < len(fields) {
				if v := strings.TrimSpace(string(fields[nsCol])); v != "" {
					ns = v
				}
			}
		}
		if ns == "" {
			ns = def // the template path's mapper was built without the target namespace
		}
		if strings.TrimSpace(text) == "" {
			return
		}
		*out = append(*out, vectorspace.Candidate{ID: id, Namespace: ns, Text: text})
	}
}

// RequiredColumns are the columns the mapping names directly: idColumn (resolved against the
// header, see mapping.ResolveIDColumn: none when the id is derived from the row), textColumn,
// namespaceColumn and, with include: columns, metadata.columns. Columns a textTemplate refers to
// are checked by mapping.New, which parses the template. header may be nil (not read yet).
func RequiredColumns(m v1alpha1.MappingSpec, header []string) []string {
	var req []string
	add := func(c string) {
		for _, have := range req {
			if have == c {
				return
			}
		}
		req = append(req, c)
	}
	if id := mapping.ResolveIDColumn(m, header); id != "" {
		add(id)
	}
	if m.TextColumn != "" {
		add(m.TextColumn)
	}
	if m.NamespaceColumn != "" {
		add(m.NamespaceColumn)
	}
	if m.Metadata.Include == mapping.IncludeColumns {
		excluded := map[string]bool{}
		for _, c := range m.Metadata.Exclude {
			excluded[c] = true
		}
		for _, c := range m.Metadata.Columns {
			if !excluded[c] {
				add(c)
			}
		}
	}
	return req
}

// checkRequired reports missing or repeated required columns the way csvplan.Scan does.
func checkRequired(header, required []string) error {
	seen := make(map[string]int, len(header))
	for _, h := range header {
		seen[h]++
	}
	var missing, dup []string
	for _, c := range required {
		switch seen[c] {
		case 0:
			missing = append(missing, c)
		case 1:
		default:
			dup = append(dup, c)
		}
	}
	if len(missing) > 0 || len(dup) > 0 {
		return &csvplan.HeaderError{Header: header, Missing: missing, Duplicate: dup}
	}
	return nil
}

// rowHandler returns the scan's per-row callback. It feeds the token estimator with the text that
// will be embedded (the text column sanitized as the chunks will sanitize it, or the rendered
// textTemplate: the same mapping.Mapper the chunks run, so costs match) and records each row's
// vector key (namespace, id) to find duplicate ids, and hands the first rows to keep (the
// vector-space guard's candidates). Compiling the mapping against the header
// here also fails a mapping that cannot work at planning, not in every chunk.
func rowHandler(spec v1alpha1.MappingSpec, namespace string, header []string, est *tokens.Estimator, finder *duplicates.Finder, keep func(fields [][]byte, id, ns, text string)) (func(int64, [][]byte) error, error) {
	// The target namespace as the chunks' mapper has it: a row without a namespace column value
	// goes there, so its vector key is the same as a row naming that namespace.
	m, err := mapping.New(spec, header, mapping.Fixed{DefaultNamespace: namespace})
	if err != nil {
		return nil, err
	}
	san, err := mapping.NewSanitizer(spec.Sanitize)
	if err != nil {
		return nil, err
	}
	col := -1
	for i, h := range header {
		if spec.TextTemplate == "" && h == spec.TextColumn {
			col = i
			break
		}
	}
	strs := make([]string, len(header))
	return func(row int64, fields [][]byte) error {
		for i, f := range fields {
			strs[i] = string(f)
		}
		key, kerr := m.Key(row, strs)
		if kerr != nil {
			return nil // the chunk fails this row; it has no vector to duplicate
		}
		finder.Add(row, key.Namespace, key.ID)
		if col >= 0 && len(fields[col]) > mapping.MaxTextBytes {
			// Never sanitized by the chunk either (see mapping.MaxTextBytes): the estimator
			// charges it one input by its length alone, without copying it.
			est.Add(fields[col])
		} else if col >= 0 {
			text, serr := san.Sanitize(strs[col])
			if serr != nil {
				return nil // the chunk fails this row: nothing to embed
			}
			est.Add([]byte(text))
			keep(nil, key.ID, key.Namespace, text)
		} else if rec, rerr := m.Map(row, strs); rerr == nil {
			est.Add([]byte(rec.Text))
			keep(nil, rec.ID, rec.Namespace, rec.Text)
		}
		return nil
	}, nil
}

// stagePrefix is where the planner stages objects for ing, in the bucket Locate returns:
// spec.source.s3.stageKeyPrefix (default vectordb-staging/) or metabase.stageTo.keyPrefix, then
// the task id and uid (worker.Ingestion.ObjectID). Keys are <prefix><taskID>-<uid>.utf8.csv and
// <prefix><taskID>-<uid>.duplicates.
func stagePrefix(ing worker.Ingestion) (string, error) {
	id := ing.ObjectID()
	if id == "" {
		return "", worker.Permanent(worker.ReasonPermanentError, errors.New("the ingestion has no task id or uid to name staged objects"))
	}
	src := ing.Spec.Source
	switch {
	case src.S3 != nil:
		p := src.S3.StageKeyPrefix
		if p == "" {
			p = DefaultStageKeyPrefix
		}
		return p + id, nil
	case src.Metabase != nil:
		return src.Metabase.StageTo.KeyPrefix + id, nil
	}
	return "", worker.Permanent(worker.ReasonPermanentError, errors.New("spec.source: set s3 or metabase"))
}

// What the planner stages, after stagePrefix: the UTF-8 copy and the duplicate-id list.
const (
	stagedCopySuffix = ".utf8.csv"
	duplicatesSuffix = ".duplicates"
)

// stagedKeys are every key the planner may stage for ing (whether it did or not).
func stagedKeys(ing worker.Ingestion) ([]string, error) {
	prefix, err := stagePrefix(ing)
	if err != nil {
		return nil, err
	}
	return []string{prefix + stagedCopySuffix, prefix + duplicatesSuffix}, nil
}

// DefaultStageKeyPrefix is the API default of spec.source.s3.stageKeyPrefix.
const DefaultStageKeyPrefix = "vectordb-staging/"

// writeDuplicates stores the duplicate list (see package duplicates) and returns it pinned.
func writeDuplicates(ctx context.Context, ing worker.Ingestion, cl *s3.Client, bucket string, dups []duplicates.Row, rpc int64, chunks int) (*worker.StagedObject, error) {
	prefix, err := stagePrefix(ing)
	if err != nil {
		return nil, err
	}
	body, err := duplicates.Encode(dups, rpc, chunks)
	if err != nil {
		return nil, err
	}
	key := prefix + duplicatesSuffix
	ct := "application/octet-stream"
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(body), ContentType: &ct}); err != nil {
		return nil, stageError(source.Classify(fmt.Sprintf("s3://%s/%s", bucket, key), err), "the duplicate-id list")
	}
	obj, err := source.Head(ctx, cl, bucket, key)
	if err != nil {
		return nil, stageError(err, "the duplicate-id list")
	}
	return &worker.StagedObject{Key: key, ETag: obj.ETag, SizeBytes: obj.Size}, nil
}

// stageError says what a failed staging write needs when it is about permissions.
func stageError(err error, what string) error {
	if p, ok := worker.AsPermanent(err); ok && p.Reason == worker.ReasonUnauthorized {
		return worker.Permanent(p.Reason, fmt.Errorf("write %s: %w (the worker's S3 identity needs s3:PutObject and s3:DeleteObject under spec.source.s3.stageKeyPrefix)", what, p.Err))
	}
	return fmt.Errorf("write %s: %w", what, err)
}

// peekHeader reads the header record of r (csvplan.ReadHeader: BOM and blank lines skipped) and
// returns it with a reader that replays everything read so far followed by the rest of r, so the
// one streaming pass can check the mapping before scanning. A header csvplan cannot read gives a
// nil header and no error; Scan then reports the problem as a *csvplan.HeaderError.
func peekHeader(r io.Reader, delim rune) ([]string, io.Reader, error) {
	var seen bytes.Buffer
	header, _, err := csvplan.ReadHeader(io.TeeReader(r, &seen), delim, 0)
	if err != nil && !csvplan.IsHeaderError(err) {
		return nil, nil, err
	}
	return header, io.MultiReader(&seen, r), nil
}

// previewRows feeds each row to the dry run's preview of spec.sync after the planner's own
// handler.
func previewRows(ctx context.Context, preview SyncPreview, next func(int64, [][]byte) error) func(int64, [][]byte) error {
	var strs []string
	return func(row int64, fields [][]byte) error {
		if err := next(row, fields); err != nil {
			return err
		}
		strs = strs[:0]
		for _, f := range fields {
			strs = append(strs, string(f))
		}
		return preview.Row(ctx, row, strs)
	}
}
