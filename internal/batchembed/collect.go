package batchembed

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"sync"

	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// outLine is a line of an output or error file.
type outLine struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// finishedElsewhere reads the stored record and returns ErrSteppedBack when another writer has
// finished this generation (or started the next) since this runner read it; nil otherwise.
func (r *Runner) finishedElsewhere(ctx context.Context) error {
	stored, _, found, err := r.cfg.Store.Load(ctx)
	if err != nil || !found {
		return nil // the caller's own error stands
	}
	if stored.Generation > r.rec.Generation || (stored.Generation == r.rec.Generation && stored.Done && !r.rec.Done) {
		return fmt.Errorf("%w (the stored record is at generation %d, done %t; this pod's at %d)",
			ErrSteppedBack, stored.Generation, stored.Done, r.rec.Generation)
	}
	return nil
}

// readLines streams a file's JSONL lines to fn.
func (r *Runner) readLines(ctx context.Context, fileID string, fn func(outLine) error) error {
	raw, err := r.cfg.Client.GetFileContent(ctx, fileID)
	if err != nil {
		if apiStatus(err) == http.StatusNotFound {
			// Another pod of the chunk may have finished meanwhile and deleted the files: then
			// this pod steps back (retryable), instead of failing the chunk permanently.
			if serr := r.finishedElsewhere(ctx); serr != nil {
				return fmt.Errorf("read file %s: %w", fileID, serr)
			}
		}
		return r.classify("read file "+fileID, err)
	}
	defer raw.Close()
	cr := &countReader{r: raw}
	sc := bufio.NewScanner(cr)
	// A line holds one vector: 3,072 float32s are 16 KiB in base64, as JSON floats under 64 KiB.
	sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("file %s: a line is not JSON: %w", fileID, err)
		}
		if err := fn(l); err != nil {
			return fmt.Errorf("file %s: %w", fileID, err)
		}
	}
	r.stats.BytesDown += cr.n
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read file %s: %w", fileID, err)
	}
	return nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// RowError is why a row was not embedded.
type RowError struct {
	Reason, Detail string
}

// Results are the chunk's vectors, in a spool file with one fixed-size slot per row, and the
// rows that failed.
type Results struct {
	f        *os.File
	first    int64
	rows     int64
	dims     int
	present  []uint64 // bit per row
	errs     map[int64]RowError
	failed   []failedRange // failed or cancelled batches, latest pass first
	buf      []byte        // Collect's scratch (one goroutine)
	Embedded int64         // rows with a vector
}

var lookupBufs = sync.Pool{New: func() any { return new([]byte) }}

type failedRange struct {
	first, last int64
	err         RowError
}

// Collect reads every finished batch's output and error files into Results for the rows
// first..first+rows-1 with vectors of dims dimensions. Run it once Wait reports no resubmission;
// it is idempotent (a killed pod collects again).
func (r *Runner) Collect(ctx context.Context, first, rows int64, dims int) (*Results, error) {
	if err := r.own(ctx); err != nil {
		return nil, err
	}
	path, err := r.spoolPath("vectors")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create vector spool: %w", err)
	}
	_ = os.Remove(path) // unlinked: the space is freed when the file is closed, whatever happens
	res := &Results{f: f, first: first, rows: rows, dims: dims, present: make([]uint64, (rows+63)/64),
		errs: map[int64]RowError{}, buf: make([]byte, 4*dims)}
	lastPass := len(r.rec.Passes) - 1
	// Later passes first: a row that expired in pass 0 and was embedded in pass 1 keeps pass 1's
	// answer, and an answer once recorded is not overwritten.
	batches := append([]Batch(nil), r.rec.Batches...)
	sort.SliceStable(batches, func(i, j int) bool { return batches[i].Pass > batches[j].Pass })
	for _, b := range batches {
		if !Terminal(b.State) {
			res.Close()
			return nil, fmt.Errorf("batch %s is %s: collect after Wait", b.ID, b.State)
		}
		switch b.State {
		case "failed":
			res.failed = append(res.failed, failedRange{b.FirstRow, b.LastRow, RowError{ReasonFailed, "the batch failed: " + b.Reason}})
		case "cancelled":
			res.failed = append(res.failed, failedRange{b.FirstRow, b.LastRow, RowError{ReasonCancelled, "the batch " + b.ID + " was cancelled before this line ran"}})
		}
		if b.OutputFileID != "" {
			if err := r.readLines(ctx, b.OutputFileID, func(l outLine) error { return res.output(r, l) }); err != nil {
				res.Close()
				return nil, err
			}
		}
		if b.ErrorFileID != "" {
			final := b.Pass == lastPass
			if err := r.readLines(ctx, b.ErrorFileID, func(l outLine) error { return res.errorLine(r, l, final) }); err != nil {
				res.Close()
				return nil, err
			}
		}
	}
	return res, nil
}

func (res *Results) slot(row int64) (int64, bool) {
	i := row - res.first
	return i, i >= 0 && i < res.rows
}

func (res *Results) has(i int64) bool { return res.present[i/64]&(1<<(i%64)) != 0 }

func (res *Results) output(r *Runner, l outLine) error {
	row, err := parseCustomID(l.CustomID, r.cfg.Chunk)
	if err != nil {
		return err
	}
	i, ok := res.slot(row)
	if !ok {
		return fmt.Errorf("row %d of custom_id %q is outside the chunk", row, l.CustomID)
	}
	if res.has(i) {
		return nil // a later pass answered first
	}
	if l.Response == nil || l.Response.StatusCode != 200 {
		return res.errorLine(r, l, true)
	}
	vecs, tokens, err := embedding.DecodeResponse(l.Response.Body)
	if err != nil {
		return fmt.Errorf("row %d: %w", row, err)
	}
	if len(vecs) != 1 {
		return fmt.Errorf("row %d: %d vectors for one input", row, len(vecs))
	}
	if len(vecs[0]) != res.dims {
		return worker.Permanent(worker.ReasonDimension, fmt.Errorf(
			"model %s returned a vector of %d dimensions, the index expects %d", r.cfg.Model, len(vecs[0]), res.dims))
	}
	for k, v := range vecs[0] {
		binary.LittleEndian.PutUint32(res.buf[4*k:], math.Float32bits(v))
	}
	if _, err := res.f.WriteAt(res.buf, i*int64(len(res.buf))); err != nil {
		return fmt.Errorf("write vector spool: %w", err)
	}
	res.present[i/64] |= 1 << (i % 64)
	delete(res.errs, row)
	res.Embedded++
	r.stats.Tokens += int64(tokens)
	return nil
}

// errorLine records a failed line; a batch_expired line of a pass that is resubmitted is not a
// failure (the next pass answers it).
func (res *Results) errorLine(r *Runner, l outLine, final bool) error {
	row, err := parseCustomID(l.CustomID, r.cfg.Chunk)
	if err != nil {
		return err
	}
	i, ok := res.slot(row)
	if !ok {
		return fmt.Errorf("row %d of custom_id %q is outside the chunk", row, l.CustomID)
	}
	if res.has(i) {
		return nil
	}
	if _, seen := res.errs[row]; seen {
		return nil
	}
	switch {
	case l.Error != nil && l.Error.Code == "batch_expired":
		if final {
			res.errs[row] = RowError{ReasonExpired, fmt.Sprintf("batch_expired: %s (after %d resubmissions)", l.Error.Message, max(0, r.cfg.MaxResubmits))}
		}
	case l.Error != nil:
		res.errs[row] = RowError{ReasonLine, l.Error.Code + ": " + l.Error.Message}
	case l.Response != nil:
		var body struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(l.Response.Body, &body)
		code := body.Error.Type
		if body.Error.Code != nil {
			code = *body.Error.Code
		}
		// Answers about the request rather than the row fail the chunk, as online: a model that
		// does not exist, a key refused.
		switch st := l.Response.StatusCode; {
		case st == http.StatusNotFound || code == "model_not_found":
			return worker.Permanent(worker.ReasonModelNotFound, fmt.Errorf("model %s: HTTP %d %s: %s", r.cfg.Model, st, code, body.Error.Message))
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			return worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("HTTP %d %s: %s", st, code, body.Error.Message))
		}
		reason := ReasonLine
		if st := l.Response.StatusCode; st >= 400 && st < 500 && st != 429 {
			reason = ReasonRefused
		}
		res.errs[row] = RowError{reason, fmt.Sprintf("HTTP %d %s: %s", l.Response.StatusCode, code, body.Error.Message)}
	default:
		return fmt.Errorf("row %d: error line with neither response nor error", row)
	}
	return nil
}

// Lookup returns row's vector (into dst when it has room), or why the row has none. Once
// Collect has returned, Lookup may be called from several goroutines at once (the pipeline's
// embed stage runs a few): it reads the spool with its own buffer.
func (res *Results) Lookup(row int64, dst []float32) ([]float32, *RowError, error) {
	i, ok := res.slot(row)
	if !ok {
		return nil, nil, fmt.Errorf("row %d is outside the chunk", row)
	}
	if res.has(i) {
		bp := lookupBufs.Get().(*[]byte)
		defer lookupBufs.Put(bp)
		if cap(*bp) < 4*res.dims {
			*bp = make([]byte, 4*res.dims)
		}
		buf := (*bp)[:4*res.dims]
		if _, err := res.f.ReadAt(buf, i*int64(len(buf))); err != nil {
			return nil, nil, fmt.Errorf("read vector spool: %w", err)
		}
		if cap(dst) < res.dims {
			dst = make([]float32, res.dims)
		}
		dst = dst[:res.dims]
		for k := range dst {
			dst[k] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*k:]))
		}
		return dst, nil, nil
	}
	if e, ok := res.errs[row]; ok {
		return nil, &e, nil
	}
	for _, f := range res.failed {
		if row >= f.first && row <= f.last {
			e := f.err
			return nil, &e, nil
		}
	}
	return nil, &RowError{ReasonMissing, "no batch answered this row"}, nil
}

// Failures is the number of rows with an error line.
func (res *Results) Failures() int { return len(res.errs) }

// Close frees the spool.
func (res *Results) Close() error {
	if res == nil || res.f == nil {
		return nil
	}
	err := res.f.Close()
	res.f = nil
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("close vector spool: %w", err)
	}
	return nil
}
