// Package batchembed embeds a chunk's rows through OpenAI's Batch API (half the online price):
// it writes the rows' texts as JSONL batch files within every limit of the API, uploads them,
// creates the batches, polls them, resubmits the lines that expired (a bounded number of times)
// and collects the vectors by custom_id into a spool file indexed by row, so the caller can read
// them back in row order and upsert them through the same code as the online path.
//
// Durability: every step that creates something at OpenAI is followed at once by a write of the
// chunk's Record (Store), and every batch carries metadata naming the ingestion, chunk and batch,
// so a pod killed at any point resumes: an uploaded file is reused, a batch created just before
// the kill is found again by listing batches, and a finished batch is collected, never submitted
// twice.
package batchembed

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Limits bound one batch. The published values are DefaultLimits.
type Limits struct {
	// MaxLines is the most requests (lines) per batch file: 50,000.
	MaxLines int
	// MaxInputs is the most embedding inputs across a batch: 50,000. One row is one line of one
	// input, so it bounds lines too.
	MaxInputs int
	// MaxFileBytes is the largest batch file: 200 MB.
	MaxFileBytes int64
	// MaxEnqueuedTokens bounds the tokens of this chunk's open batches (the per-model cap on
	// enqueued tokens is the organisation's; the caller gives each chunk its share). 0: no bound.
	MaxEnqueuedTokens int64
}

// DefaultLimits are OpenAI's published limits for one batch.
var DefaultLimits = Limits{MaxLines: 50_000, MaxInputs: 50_000, MaxFileBytes: 200 << 20}

// Defaults of Config.
const (
	DefaultPollInterval = 30 * time.Second
	DefaultMaxResubmits = 3
	// maxTries bounds how often one input file is submitted again after the API refused the
	// batch for the organisation's enqueued-token cap.
	maxTries = 100
)

// Row failure reasons of rows the Batch API did not embed (dead-letter reasons).
const (
	ReasonRefused   = "embedding_refused" // a 4xx line: the online path's reason for a refused input
	ReasonLine      = "batch_line_failed" // any other error line
	ReasonExpired   = "batch_expired"     // still expired after MaxResubmits resubmissions
	ReasonFailed    = "batch_failed"      // the whole batch failed
	ReasonCancelled = "batch_cancelled"   // the batch was cancelled before the line ran
	ReasonMissing   = "batch_result_missing"
)

// Metadata keys every batch carries, so a batch created by a pod killed before it could record
// it is found again.
const (
	MetaIngestion = "vectordb_ingestion"
	MetaChunk     = "vectordb_chunk"
	MetaBatch     = "vectordb_batch"
)

// Config configures a Runner for one chunk.
type Config struct {
	// Client is go-openai for batches and file contents; APIKey, BaseURL and HTTPClient serve
	// the streaming upload (go-openai holds a whole file, twice, in memory to upload it).
	Client     *openai.Client
	APIKey     string
	BaseURL    string // e.g. https://api.openai.com/v1
	HTTPClient *http.Client

	Model      string
	Dimensions int // sent when > 0

	Ingestion string // the CsvIngestion's UID
	Chunk     int

	Limits       Limits
	MaxResubmits int           // resubmission passes for expired lines; 0: DefaultMaxResubmits, <0: none
	PollInterval time.Duration // 0: DefaultPollInterval

	// SpoolDir holds the batch files being written and the collected vectors.
	SpoolDir string
	Store    Store
	Log      logr.Logger
	// Sleep waits between polls; nil: a timer that ends with ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock of batch claims; nil: time.Now.
	Now func() time.Time
	// Writer names this runner in the record's batch claims (the pod's name); "": a random id.
	Writer string
	// ClaimTimeout is how old another writer's claim on a batch must be before this one takes
	// it over (that writer died between claiming and recording the batch); 0:
	// DefaultClaimTimeout. Creating a batch (the lookup by metadata and CreateBatch) is bounded
	// by half of it, so a live claimant never outlasts its claim.
	ClaimTimeout time.Duration
	// Report, when set, is called with the record's Summary whenever it changed, at most once
	// per poll (live batch state for the manager). It must be quick and must not fail the
	// chunk: it is best effort.
	Report func(ctx context.Context, s v1alpha1.BatchStatus)
}

// DefaultClaimTimeout is Config.ClaimTimeout's default.
// (a replacement pod waits this long only when its predecessor died between claiming a batch and
// creating it; one that died after creating it is found by the batch's metadata at once).
const DefaultClaimTimeout = 5 * time.Minute

// maxSaveTries bounds how often one record write is merged and tried again after other pods of
// the chunk wrote first.
const maxSaveTries = 20

// Stats are a runner's counters, for the chunk's result.
type Stats struct {
	BatchesCreated int   // batches this process created
	BatchesAdopted int   // batches found by metadata after a kill
	FilesUploaded  int   // files this process uploaded
	Resubmitted    int   // lines submitted again after they expired
	BytesUploaded  int64 // batch file bytes uploaded
	BytesDown      int64 // output and error file bytes read
	Tokens         int64 // tokens billed for embedded lines
	Polls          int   // batch retrievals
}

// Runner drives one chunk's batches.
type Runner struct {
	cfg   Config
	rec   Record
	stats Stats
	// trusted: batch and file ids this process created, or found at OpenAI to be this chunk's.
	trusted map[string]bool
	// version is the stored record's version this runner last read or wrote.
	version string
	// seen: when this runner first saw each other writer's claim (claimSeen).
	seen map[seenClaim]time.Time
	// claimedAt: when this runner last wrote a claim of its own (real time; create's deadline).
	claimedAt time.Time
	// created, uploaded: the batches this runner created and the files it uploaded (cancelUnknown).
	created, uploaded map[string]bool
	// fileTimes: input files' creation times at OpenAI (find).
	fileTimes map[string]int64
	// reported is the summary last handed to Config.Report (nil: none yet).
	reported *v1alpha1.BatchStatus
}

// Open loads the chunk's record, or starts one. A record of a finished run starts a new
// generation.
func Open(ctx context.Context, cfg Config) (*Runner, error) {
	if cfg.Client == nil || cfg.Store == nil || cfg.Model == "" || cfg.SpoolDir == "" {
		return nil, errors.New("batchembed: Client, Store, Model and SpoolDir are required")
	}
	l := &cfg.Limits
	l.MaxLines = clamp(l.MaxLines, DefaultLimits.MaxLines)
	l.MaxInputs = clamp(l.MaxInputs, DefaultLimits.MaxInputs)
	if l.MaxFileBytes <= 0 || l.MaxFileBytes > DefaultLimits.MaxFileBytes {
		l.MaxFileBytes = DefaultLimits.MaxFileBytes
	}
	if cfg.MaxResubmits == 0 {
		cfg.MaxResubmits = DefaultMaxResubmits
	}
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultPollInterval)
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Writer == "" {
		cfg.Writer = randomWriter()
	}
	cfg.ClaimTimeout = cmp.Or(cfg.ClaimTimeout, DefaultClaimTimeout)
	cfg.BaseURL = cmp.Or(cfg.BaseURL, "https://api.openai.com/v1")
	rec, version, found, err := cfg.Store.Load(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		rec = Record{Version: 1, Ingestion: cfg.Ingestion, Chunk: cfg.Chunk}
	case rec.Ingestion != cfg.Ingestion || rec.Chunk != cfg.Chunk:
		// Its key names this ingestion and chunk: it was written by someone else. No retry mends it.
		return nil, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"batch record is for ingestion %s chunk %d, not %s chunk %d: it was not written by this chunk (delete it to start the chunk's batches afresh)",
			rec.Ingestion, rec.Chunk, cfg.Ingestion, cfg.Chunk))
	case rec.Done:
		rec = Record{Version: 1, Ingestion: cfg.Ingestion, Chunk: cfg.Chunk, Generation: rec.Generation + 1}
	}
	if len(rec.Passes) == 0 {
		rec.Passes = []Pass{{}}
	}
	// The spool directory is made when a file is written (submission, collection): a cleanup
	// pod, which only cancels and deletes, has no writable filesystem.
	return &Runner{cfg: cfg, rec: rec, version: version}, nil
}

func randomWriter() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "w-" + hex.EncodeToString(b)
}

func clamp(v, def int) int {
	if v <= 0 || v > def {
		return def
	}
	return v
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Record returns a copy of the chunk's record as last written.
func (r *Runner) Record() Record {
	rec := r.rec
	rec.Passes = append([]Pass(nil), r.rec.Passes...)
	rec.Batches = append([]Batch(nil), r.rec.Batches...)
	return rec
}

// Stats returns the runner's counters.
func (r *Runner) Stats() Stats { return r.stats }

// save writes the record conditionally on the version last read or written. When another pod
// of the chunk wrote first, it re-reads the record, merges (see merge: nothing either writer
// recorded is lost), cancels a batch of its own the stored record already has from the other
// writer and deletes an input file nobody will use, and writes again. A stored record that
// finished the chunk's batches while this one did not is ErrSteppedBack.
func (r *Runner) save(ctx context.Context) error {
	for try := 1; ; try++ {
		v, err := r.cfg.Store.Save(ctx, r.rec, r.version)
		if err == nil {
			r.version = v
			return nil
		}
		if !errors.Is(err, ErrConflict) || try >= maxSaveTries {
			return fmt.Errorf("record the chunk's batches: %w", err)
		}
		r.cfg.Log.Info("another pod of this chunk wrote its batch record first; merging", "try", try)
		if err := r.refresh(ctx); err != nil {
			return fmt.Errorf("record the chunk's batches: %w", err)
		}
	}
}

// refresh reads the stored record and merges this runner's into it (see save).
func (r *Runner) refresh(ctx context.Context) error {
	stored, v, found, err := r.cfg.Store.Load(ctx)
	if err != nil {
		return err
	}
	if !found {
		r.version = "" // deleted under us: write ours whole
		return nil
	}
	m, err := merge(r.rec, stored)
	if err != nil {
		if errors.Is(err, ErrSteppedBack) {
			r.cancelUnknown(ctx, stored)
		}
		return err
	}
	for _, id := range m.duplicates {
		r.cfg.Log.Info("another pod of this chunk created the same batch; cancelling this pod's copy", "batch", id)
		if _, err := r.cfg.Client.CancelBatch(ctx, id); err != nil {
			if st := apiStatus(err); st != http.StatusConflict && st != http.StatusBadRequest && st != http.StatusNotFound {
				return r.classify("cancel duplicate batch "+id, err)
			}
		}
	}
	for _, id := range m.orphanFiles {
		if err := r.cfg.Client.DeleteFile(ctx, id); err != nil && apiStatus(err) != http.StatusNotFound {
			return r.classify("delete unused batch file "+id, err)
		}
	}
	r.rec, r.version = m.rec, v
	return nil
}

// cancelUnknown cancels the open batches this runner created that stored (a record another pod
// finished, or of a later generation) does not hold: nobody will poll, collect or cancel them, so
// they would run, billed, for up to a day (a batch created while the cleanup of a cancelled run
// finished). Best effort: this runner is stepping back with ErrSteppedBack anyway.
func (r *Runner) cancelUnknown(ctx context.Context, stored Record) {
	known := map[string]bool{}
	for _, b := range stored.Batches {
		if stored.Generation == r.rec.Generation {
			known[b.ID], known[b.InputFileID] = true, true
		}
	}
	for _, b := range r.rec.Batches {
		if b.ID == "" || !r.created[b.ID] || known[b.ID] || Terminal(b.State) {
			continue
		}
		r.cfg.Log.Info("cancelling a batch this pod created that the finished record does not hold", "batch", b.ID)
		if _, err := r.cfg.Client.CancelBatch(ctx, b.ID); err != nil {
			r.cfg.Log.Error(r.classify("cancel batch "+b.ID, err), "could not cancel a batch nobody else knows of", "batch", b.ID)
		}
	}
	// Files this runner uploaded that no entry of the finished record holds: nobody else will
	// delete them (the batches made from them, if any, were just cancelled).
	for id := range r.uploaded {
		if known[id] {
			continue
		}
		r.cfg.Log.Info("deleting a batch file this pod uploaded that the finished record does not hold", "file", id)
		if err := r.cfg.Client.DeleteFile(ctx, id); err != nil && apiStatus(err) != http.StatusNotFound {
			r.cfg.Log.Error(r.classify("delete file "+id, err), "could not delete a batch file nobody else knows of", "file", id)
		}
	}
}

// batchAt returns the record's entry for a batch (pass and index), which merges may move.
func (r *Runner) batchAt(pass, index int) (int, *Batch) {
	for i := range r.rec.Batches {
		if b := &r.rec.Batches[i]; b.Pass == pass && b.Index == index {
			return i, b
		}
	}
	return -1, nil
}

// customID names a row in a batch line: the chunk and the row number, all the collector needs.
func customID(chunk int, row int64) string {
	return "c" + strconv.Itoa(chunk) + "-r" + strconv.FormatInt(row, 10)
}

// parseCustomID is customID's inverse.
func parseCustomID(id string, chunk int) (int64, error) {
	var c int
	var row int64
	if _, err := fmt.Sscanf(id, "c%d-r%d", &c, &row); err != nil || customID(c, row) != id || c < 0 || row < 0 {
		return 0, fmt.Errorf("custom_id %q is not one of ours", id)
	}
	if c != chunk {
		return 0, fmt.Errorf("custom_id %q belongs to chunk %d, not %d", id, c, chunk)
	}
	return row, nil
}

func (r *Runner) batchKey(b Batch) string {
	return fmt.Sprintf("g%d.p%d.b%d.t%d", r.rec.Generation, b.Pass, b.Index, b.Try)
}

// spoolPath names a file in the spool directory, making the directory.
func (r *Runner) spoolPath(name string) (string, error) {
	if err := os.MkdirAll(r.cfg.SpoolDir, 0o700); err != nil {
		return "", fmt.Errorf("batch spool directory: %w", err)
	}
	return filepath.Join(r.cfg.SpoolDir, fmt.Sprintf("chunk-%d-%s", r.cfg.Chunk, name)), nil
}

// apiStatus is the HTTP status of an OpenAI error, or 0.
func apiStatus(err error) int {
	var e *openai.APIError
	if errors.As(err, &e) {
		return e.HTTPStatusCode
	}
	var re *openai.RequestError
	if errors.As(err, &re) {
		return re.HTTPStatusCode
	}
	return 0
}

// lineJSON is one line of a batch file.
type lineJSON struct {
	CustomID string   `json:"custom_id"`
	Method   string   `json:"method"`
	URL      string   `json:"url"`
	Body     lineBody `json:"body"`
}

type lineBody struct {
	Model          string   `json:"model"`
	Input          []string `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
	Dimensions     int      `json:"dimensions,omitempty"`
}

func (r *Runner) line(row int64, text string) ([]byte, error) {
	b, err := json.Marshal(lineJSON{
		CustomID: customID(r.cfg.Chunk, row), Method: http.MethodPost, URL: string(openai.BatchEndpointEmbeddings),
		Body: lineBody{Model: r.cfg.Model, Input: []string{text}, EncodingFormat: "base64", Dimensions: r.cfg.Dimensions},
	})
	if err != nil {
		return nil, fmt.Errorf("encode batch line for row %d: %w", row, err)
	}
	return append(b, '\n'), nil
}
