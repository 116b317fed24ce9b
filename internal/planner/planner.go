// Package planner is `embedder plan`: it reads the ingestion's CSV object once (staging a Metabase
// export into S3 first), checks the header against the mapping, records a row-aligned byte offset
// every rowsPerChunk rows, counts rows, estimates tokens with the model's tokenizer and the cost,
// and writes the plan to the ConfigMap the controller fans chunks out from.
package planner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
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
	Log          logr.Logger
}

// Location is where an ingestion's CSV object lives.
type Location struct {
	Conn   v1alpha1.S3Connection
	Bucket string
	Key    string
	// Kind is SourceS3 or SourceMetabase.
	Kind string
}

// Locate returns the object an ingestion reads: the S3 object, or for Metabase the staged export
// at <stageTo.keyPrefix><taskID>.csv (where source.StageMetabase writes it), so chunk workers find
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
		if ing.TaskID == "" {
			return Location{}, worker.Permanent(worker.ReasonPermanentError, errors.New("the ingestion has no task id to name the staged Metabase export"))
		}
		return Location{Conn: src.Metabase.StageTo.S3Connection, Bucket: src.Metabase.StageTo.Bucket,
			Key: src.Metabase.StageTo.KeyPrefix + ing.TaskID + ".csv", Kind: SourceMetabase}, nil
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

	if mb := spec.Source.Metabase; mb != nil {
		hc := deps.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 30 * time.Minute}
		}
		start := time.Now()
		key, err := source.StageMetabase(ctx, hc, mb, deps.MetabaseAPIKey, cl, ing.TaskID)
		if err != nil {
			return nil, fmt.Errorf("stage Metabase question %d: %w", mb.QuestionID, err)
		}
		loc.Key = key
		log.Info("staged Metabase export", "question", mb.QuestionID, "bucket", loc.Bucket, "key", key,
			"duration", time.Since(start).Round(time.Millisecond))
	}

	obj, err := source.Head(ctx, cl, loc.Bucket, loc.Key)
	if err != nil {
		return nil, err
	}
	body, err := obj.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	r, compression, err := source.Decompress(body, spec.Source.CSV.Compression)
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}

	header, replay, err := peekHeader(r, delim)
	if err != nil {
		return nil, fmt.Errorf("read header of s3://%s/%s: %w", loc.Bucket, loc.Key, err)
	}
	est := &tokens.Estimator{}
	var onRow func(int64, [][]byte) error
	if header != nil {
		// A header the scanner cannot read is left for Scan to report; otherwise check the
		// mapping against it before reading the rest of the file.
		if err := checkRequired(header, RequiredColumns(spec.Mapping)); err != nil {
			return nil, worker.Permanent(worker.ReasonHeaderMismatch, err)
		}
		if onRow, err = estimateRow(spec.Mapping, header, est); err != nil {
			return nil, worker.Permanent(worker.ReasonHeaderMismatch, err)
		}
	}

	start := time.Now()
	res, err := csvplan.Scan(replay, csvplan.Options{
		Delimiter:    delim,
		RowsPerChunk: rpc,
		Required:     RequiredColumns(spec.Mapping),
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
		return nil, fmt.Errorf("scan s3://%s/%s: %w", loc.Bucket, loc.Key, err)
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
		EstimatedTokens:  est.Tokens(),
		EstimatedCostUSD: tokens.CostUSD(model, est.Tokens()),
		BlankRows:        res.BlankRows,
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

// RequiredColumns are the columns the mapping names directly: idColumn (default id), textColumn,
// namespaceColumn and, with include: columns, metadata.columns. Columns a textTemplate refers to
// are checked by mapping.New, which parses the template.
func RequiredColumns(m v1alpha1.MappingSpec) []string {
	id := m.IDColumn
	if id == "" {
		id = mapping.DefaultIDColumn
	}
	req := []string{id}
	add := func(c string) {
		for _, have := range req {
			if have == c {
				return
			}
		}
		req = append(req, c)
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

// estimateRow returns the scan's per-row callback feeding the token estimator with the text that
// will be embedded: the text column, sanitized as the chunks will sanitize it; with a textTemplate,
// the rendered text (the same mapping.Mapper the chunks run, so template and sanitize costs match).
// It also compiles the mapping against the header, so a mapping that cannot work fails the plan,
// not every chunk.
func estimateRow(spec v1alpha1.MappingSpec, header []string, est *tokens.Estimator) (func(int64, [][]byte) error, error) {
	m, err := mapping.New(spec, header, mapping.Fixed{})
	if err != nil {
		return nil, err
	}
	if spec.TextTemplate == "" {
		col := -1
		for i, h := range header {
			if h == spec.TextColumn {
				col = i
				break
			}
		}
		san, err := mapping.NewSanitizer(spec.Sanitize)
		if err != nil {
			return nil, err
		}
		return func(_ int64, fields [][]byte) error {
			est.Add([]byte(san.Sanitize(string(fields[col]))))
			return nil
		}, nil
	}
	strs := make([]string, len(header))
	return func(row int64, fields [][]byte) error {
		for i, f := range fields {
			strs[i] = string(f)
		}
		if rec, rerr := m.Map(row, strs); rerr == nil {
			est.Add([]byte(rec.Text))
		}
		return nil
	}, nil
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
