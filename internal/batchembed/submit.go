package batchembed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Pending returns the pass that still has rows to submit, and which rows belong to it: every
// row for pass 0, the rows that expired in the previous pass for a resubmission. Rows below
// from are already in a batch of the pass. ok is false when every pass is submitted.
func (r *Runner) Pending(ctx context.Context) (pass int, from int64, want func(row int64) bool, ok bool, err error) {
	pass = len(r.rec.Passes) - 1
	p := r.rec.Passes[pass]
	if p.Submitted {
		return 0, 0, nil, false, nil
	}
	if pass == 0 {
		return 0, p.NextRow, func(int64) bool { return true }, true, nil
	}
	if err := r.own(ctx); err != nil {
		return 0, 0, nil, false, err
	}
	expired, err := r.expiredRows(ctx, pass-1)
	if err != nil {
		return 0, 0, nil, false, err
	}
	return pass, p.NextRow, func(row int64) bool { _, ok := expired[row]; return ok }, true, nil
}

// expiredRows are the rows reported batch_expired by the expired batches of pass.
func (r *Runner) expiredRows(ctx context.Context, pass int) (map[int64]struct{}, error) {
	rows := map[int64]struct{}{}
	for _, b := range r.rec.Batches {
		if b.Pass != pass || b.State != "expired" || b.ErrorFileID == "" {
			continue
		}
		err := r.readLines(ctx, b.ErrorFileID, func(l outLine) error {
			if l.Error == nil || l.Error.Code != "batch_expired" {
				return nil
			}
			row, err := parseCustomID(l.CustomID, r.cfg.Chunk)
			if err != nil {
				return err
			}
			rows[row] = struct{}{}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// Submitter writes one pass's rows into batch files and submits each one as it fills.
type Submitter struct {
	r     *Runner
	pass  int
	f     *os.File
	w     *bufio.Writer
	cur   Batch
	bytes int64
}

// Submitter starts writing rows of pass (from Pending).
func (r *Runner) Submitter(pass int) *Submitter {
	return &Submitter{r: r, pass: pass}
}

// Add adds a row with its text and token count. Rows must come in increasing order; rows below
// the pass's NextRow are ignored (an earlier pod submitted them).
func (s *Submitter) Add(ctx context.Context, row int64, text string, tokens int) error {
	r := s.r
	if row < r.rec.Passes[s.pass].NextRow {
		return nil
	}
	line, err := r.line(row, text)
	if err != nil {
		return err
	}
	if int64(len(line)) > r.cfg.Limits.MaxFileBytes {
		return fmt.Errorf("row %d: its batch line is %d bytes, over the %d-byte batch file limit", row, len(line), r.cfg.Limits.MaxFileBytes)
	}
	l := r.cfg.Limits
	if s.f != nil && (s.cur.Lines+1 > l.MaxLines || s.cur.Lines+1 > l.MaxInputs ||
		s.bytes+int64(len(line)) > l.MaxFileBytes ||
		(l.MaxEnqueuedTokens > 0 && s.cur.Tokens+int64(tokens) > l.MaxEnqueuedTokens)) {
		if err := s.seal(ctx, row); err != nil {
			return err
		}
		if row < r.rec.Passes[s.pass].NextRow {
			return nil // the seal merged in another pod's batches, which hold this row
		}
	}
	if s.f == nil {
		if err := s.open(row); err != nil {
			return err
		}
	}
	if _, err := s.w.Write(line); err != nil {
		return fmt.Errorf("write batch file: %w", err)
	}
	s.bytes += int64(len(line))
	s.cur.Lines++
	s.cur.Tokens += int64(tokens)
	s.cur.LastRow = row
	return nil
}

// Close submits the last batch file and marks the pass submitted.
func (s *Submitter) Close(ctx context.Context, endRow int64) error {
	if s.f != nil {
		if err := s.seal(ctx, endRow); err != nil {
			return err
		}
	}
	s.r.rec.Passes[s.pass].Submitted = true
	s.r.rec.Passes[s.pass].NextRow = endRow
	return s.r.save(ctx)
}

// Abort drops a batch file being written.
func (s *Submitter) Abort() {
	if s.f != nil {
		_ = s.f.Close()
		_ = os.Remove(s.f.Name())
		s.f = nil
	}
}

func (s *Submitter) open(row int64) error {
	idx := 0
	for _, b := range s.r.rec.Batches {
		if b.Pass == s.pass {
			idx++
		}
	}
	path, err := s.r.spoolPath(fmt.Sprintf("p%d-b%d.jsonl", s.pass, idx))
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create batch file: %w", err)
	}
	s.f, s.w, s.bytes = f, bufio.NewWriterSize(f, 256<<10), 0
	s.cur = Batch{Pass: s.pass, Index: idx, FirstRow: row, State: StateUploaded}
	return nil
}

// seal uploads the file being written, records it, creates its batch and records that; next is
// the first row not in it.
func (s *Submitter) seal(ctx context.Context, next int64) error {
	r := s.r
	defer s.Abort()
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write batch file: %w", err)
	}
	name := r.fileName(s.cur)
	id, err := r.upload(ctx, s.f, name, s.bytes)
	if err != nil {
		return err
	}
	r.trust(id)
	b := s.cur
	b.InputFileID, b.Bytes = id, s.bytes
	r.rec.Batches = append(r.rec.Batches, b)
	r.rec.Passes[s.pass].NextRow = next
	// Recorded before the batch exists: a kill now leaves an uploaded file the next pod reuses.
	if err := r.save(ctx); err != nil {
		return err
	}
	return r.create(ctx, b.Pass, b.Index)
}

// SubmitUploaded creates the batches of files uploaded before a kill (state "uploaded").
func (r *Runner) SubmitUploaded(ctx context.Context) error {
	var todo [][2]int // by pass and index: creating one may merge in other writers' entries
	for _, b := range r.rec.Batches {
		if b.State == StateUploaded {
			todo = append(todo, [2]int{b.Pass, b.Index})
		}
	}
	for _, k := range todo {
		if err := r.create(ctx, k[0], k[1]); err != nil {
			return err
		}
	}
	return nil
}

// create makes the batch (pass, index) exist, once: it waits for room under the enqueued-token
// bound, claims the batch in the record (a conditional write: of two pods of the chunk, one
// claims it and the other waits for its id), looks for a batch with its metadata (created by a
// pod killed before recording it), else creates it, and records it.
func (r *Runner) create(ctx context.Context, pass, index int) error {
	_, b := r.batchAt(pass, index)
	if b == nil {
		return fmt.Errorf("batch p%d.b%d is not in the record", pass, index)
	}
	if b.ID != "" {
		return nil
	}
	if err := r.waitForRoom(ctx, b.Tokens, pass, index); err != nil {
		return err
	}
	if err := r.claim(ctx, pass, index); err != nil {
		return err
	}
	_, b = r.batchAt(pass, index)
	if b.ID != "" {
		return nil // the other writer's batch, merged in while claiming
	}
	key := r.batchKey(*b)
	// Bounded by half the claim's life from when the claim was written (not from now: a pause
	// between the claim and here, a GC or a frozen node, counts), so that no other writer takes
	// the claim over while this one may still create the batch.
	deadline := r.claimedAt.Add(r.cfg.ClaimTimeout / 2)
	if time.Now().After(deadline) {
		return fmt.Errorf("batch %s: not created, this pod's claim on it is older than half the claim timeout (%s; the pod was paused?) and another pod may take it over: %w",
			key, r.cfg.ClaimTimeout, context.DeadlineExceeded)
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	found, err := r.find(cctx, key, b.InputFileID)
	if err != nil {
		return err
	}
	if found != nil {
		r.stats.BatchesAdopted++
		r.cfg.Log.Info("found a batch created before a restart", "batch", found.ID, "key", key)
		r.update(b, *found)
		r.trust(found.ID, found.InputFileID)
		return r.save(ctx)
	}
	resp, err := r.cfg.Client.CreateBatch(cctx, openai.CreateBatchRequest{
		InputFileID: b.InputFileID, Endpoint: openai.BatchEndpointEmbeddings, CompletionWindow: "24h",
		Metadata: map[string]any{MetaIngestion: r.cfg.Ingestion, MetaChunk: strconv.Itoa(r.cfg.Chunk), MetaBatch: key},
	})
	if err != nil {
		return r.classify(fmt.Sprintf("create batch %s", key), err)
	}
	r.stats.BatchesCreated++
	if r.created == nil {
		r.created = map[string]bool{}
	}
	r.created[resp.ID] = true
	r.update(b, resp.Batch)
	r.trust(resp.ID)
	r.cfg.Log.Info("batch created", "batch", b.ID, "key", key, "lines", b.Lines, "tokens", b.Tokens)
	return r.save(ctx)
}

// claim records this writer's claim on batch (pass, index). It returns once the stored record
// holds the claim, or the batch's id (another writer created it); while another writer's claim
// is younger than ClaimTimeout it polls the record.
func (r *Runner) claim(ctx context.Context, pass, index int) error {
	for {
		_, b := r.batchAt(pass, index)
		if b == nil {
			return fmt.Errorf("batch p%d.b%d is not in the record", pass, index)
		}
		now := r.cfg.Now()
		switch {
		case b.ID != "":
			return nil
		case b.Claim != "" && b.Claim != r.cfg.Writer && now.Sub(r.claimSeen(*b, now)) < r.cfg.ClaimTimeout:
			// The claimant may have created the batch and died before recording it (a killed
			// pod's replacement): then the batch is listed with its metadata, and adopted.
			key := r.batchKey(*b)
			found, err := r.find(ctx, key, b.InputFileID)
			if err != nil {
				return err
			}
			if found != nil {
				r.stats.BatchesAdopted++
				r.cfg.Log.Info("found the batch another pod of this chunk created", "batch", found.ID, "key", key, "claim", b.Claim)
				r.update(b, *found)
				r.trust(found.ID, found.InputFileID)
				return r.save(ctx)
			}
			r.cfg.Log.Info("another pod of this chunk is creating the batch; waiting for it", "batch", key, "claim", b.Claim,
				"takeOverAt", r.claimSeen(*b, now).Add(r.cfg.ClaimTimeout).UTC())
			if err := r.cfg.Sleep(ctx, r.cfg.PollInterval); err != nil {
				return err
			}
			if err := r.refresh(ctx); err != nil {
				return err
			}
			continue
		case b.Claim != "" && b.Claim != r.cfg.Writer:
			r.cfg.Log.Info("taking over a stale claim on a batch (its writer stopped before recording it)",
				"batch", r.batchKey(*b), "claim", b.Claim, "claimedAt", time.Unix(b.ClaimedAt, 0).UTC())
		}
		// Ours, unclaimed or stale: claim it. A lost race merges the stored claim in, and the
		// loop looks again. The claim's deadline runs from before the write (real time: the
		// context's clock), since another pod may see the claim as soon as it is stored.
		b.Claim, b.ClaimedAt = r.cfg.Writer, now.Unix()
		r.claimedAt = time.Now()
		if stored, err := r.saveClaim(ctx); err != nil || stored {
			return err
		}
	}
}

// claimSeen is when this runner first saw another writer's claim on b as it is now (its clock).
// A claim's age is measured from there, not from the claim's own timestamp, which is the
// claimant's clock: a pod whose clock runs ahead would take a live claim over at once, one whose
// clock lags never. Seeing it first late only makes the wait longer, never too short.
func (r *Runner) claimSeen(b Batch, now time.Time) time.Time {
	k := seenClaim{pass: b.Pass, index: b.Index, try: b.Try, claim: b.Claim, at: b.ClaimedAt}
	if r.seen == nil {
		r.seen = map[seenClaim]time.Time{}
	}
	t, ok := r.seen[k]
	if !ok {
		t = now
		r.seen[k] = t
	}
	return t
}

// seenClaim is one claim as stored: a claim written again (a takeover, a new try) is a new one.
type seenClaim struct {
	pass, index, try int
	claim            string
	at               int64
}

// saveClaim writes a claim once. A lost race does not write again, as save would: the stored
// record is merged in and claim decides again from it (the stored claim wins, and a claim of
// this writer merged into it is not stored yet).
func (r *Runner) saveClaim(ctx context.Context) (stored bool, err error) {
	v, err := r.cfg.Store.Save(ctx, r.rec, r.version)
	if err == nil {
		r.version = v
		return true, nil
	}
	if !errors.Is(err, ErrConflict) {
		return false, fmt.Errorf("record the chunk's batches: %w", err)
	}
	r.cfg.Log.Info("another pod of this chunk wrote its batch record first; merging before claiming")
	return false, r.refresh(ctx)
}

// find lists batches, newest first, for one whose metadata names this chunk's batch key and that
// was made from inputFile, the file the record holds for it (a claimant creates from that file;
// a batch of an earlier run whose record was deleted has the same key but another file, and
// its vectors are of that run's texts). A batch is listed soon after it is created, and the
// kill it recovers from happened just after, so the newest thousand batches are enough.
func (r *Runner) find(ctx context.Context, key, inputFile string) (*openai.Batch, error) {
	if inputFile == "" {
		return nil, nil
	}
	// Batches are listed newest first, so paging stops at the first batch created before the
	// input file was (both are OpenAI's timestamps: no clock skew): none further on can have
	// been made from it. Without the file's time (deleted) the newest thousand are searched.
	since, err := r.fileCreated(ctx, inputFile)
	if err != nil {
		return nil, err
	}
	pages := 10
	if since > 0 {
		pages = maxFindPages
	}
	limit := 100
	var after *string
	for range pages {
		page, err := r.cfg.Client.ListBatch(ctx, after, &limit)
		if err != nil {
			return nil, r.classify("list batches", err)
		}
		for i := range page.Data {
			m := page.Data[i].Metadata
			if fmt.Sprint(m[MetaIngestion]) == r.cfg.Ingestion && fmt.Sprint(m[MetaChunk]) == strconv.Itoa(r.cfg.Chunk) && fmt.Sprint(m[MetaBatch]) == key &&
				page.Data[i].InputFileID == inputFile {
				return &page.Data[i], nil
			}
			if since > 0 && int64(page.Data[i].CreatedAt) < since {
				return nil, nil
			}
		}
		if !page.HasMore || page.LastID == "" {
			return nil, nil
		}
		after = &page.LastID
	}
	return nil, nil
}

// maxFindPages bounds find's paging (100 batches a page) when it knows where to stop.
const maxFindPages = 200

// fileCreated is when OpenAI created a file (Unix seconds), or 0 when it is gone.
func (r *Runner) fileCreated(ctx context.Context, id string) (int64, error) {
	if t, ok := r.fileTimes[id]; ok {
		return t, nil
	}
	f, err := r.cfg.Client.GetFile(ctx, id)
	if err != nil {
		if apiStatus(err) == http.StatusNotFound {
			return 0, nil
		}
		return 0, r.classify("retrieve file "+id, err)
	}
	if r.fileTimes == nil {
		r.fileTimes = map[string]int64{}
	}
	r.fileTimes[id] = f.CreatedAt
	return f.CreatedAt, nil
}

// upload sends a batch file as a streamed multipart body.
func (r *Runner) upload(ctx context.Context, f *os.File, name string, size int64) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("rewind batch file: %w", err)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := mw.WriteField("purpose", string(openai.PurposeBatch))
		if err == nil {
			var part io.Writer
			if part, err = mw.CreateFormFile("file", name); err == nil {
				if _, err = io.Copy(part, f); err == nil {
					err = mw.Close()
				}
			}
		}
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.BaseURL+"/files", pr)
	if err != nil {
		pr.Close()
		return "", fmt.Errorf("upload batch file: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := r.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("upload batch file %s: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("upload batch file %s: %w", name, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error openai.APIError `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		e.Error.HTTPStatusCode = resp.StatusCode
		return "", r.classify("upload batch file "+name, &e.Error)
	}
	var file openai.File
	if err := json.Unmarshal(body, &file); err != nil || file.ID == "" {
		return "", fmt.Errorf("upload batch file %s: unexpected answer %.200s", name, body)
	}
	r.stats.FilesUploaded++
	r.stats.BytesUploaded += size
	if r.uploaded == nil {
		r.uploaded = map[string]bool{}
	}
	r.uploaded[file.ID] = true
	return file.ID, nil
}

// PermanentError is an answer no retry changes (a bad key, an exhausted quota, a refused
// request). It is also a worker.PermanentError (errors.As finds both), so the embedder exits
// with ExitPermanent and the chunk fails fast with Reason, as online.
type PermanentError struct {
	Status int
	Reason string // a worker.Reason*
	Err    error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// As lets errors.As find the worker.PermanentError the embedder's exit code depends on.
func (e *PermanentError) As(target any) bool {
	if t, ok := target.(**worker.PermanentError); ok {
		*t = &worker.PermanentError{Reason: e.Reason, Err: e.Err}
		return true
	}
	return false
}

// classify wraps err with what. Like the online path (internal/embedding): an exhausted quota
// (a 429 with insufficient_quota) and 4xx answers other than 408, 409 and 429 are permanent;
// the rest is retried. The provider's message is kept, with the API key blanked out of it (the
// real API echoes a masked key, a proxy may echo it whole) and the SDK error dropped.
func (r *Runner) classify(what string, err error) error {
	st := apiStatus(err)
	if st == 0 {
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := err.Error()
	if k := r.cfg.APIKey; k != "" {
		msg = strings.ReplaceAll(msg, k, "[redacted]")
	}
	wrapped := fmt.Errorf("%s: %s", what, msg)
	var code, typ string
	var ae *openai.APIError
	if errors.As(err, &ae) {
		code, typ = fmt.Sprint(ae.Code), ae.Type
	}
	switch {
	case code == "insufficient_quota" || typ == "insufficient_quota":
		return &PermanentError{Status: st, Reason: worker.ReasonQuotaExceeded, Err: wrapped}
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		return &PermanentError{Status: st, Reason: worker.ReasonUnauthorized, Err: wrapped}
	case st >= 400 && st < 500 && st != http.StatusRequestTimeout && st != http.StatusConflict && st != http.StatusTooManyRequests:
		return &PermanentError{Status: st, Reason: worker.ReasonPermanentError, Err: wrapped}
	}
	return wrapped
}

// IsPermanent says whether err is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
