package ratelease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Live batch state (batch mode): a chunk pod waiting on its Batch API batches posts its batch
// summary (batchembed.Record.Summary) to ReportPath, on the lease service's listener and with
// the lease credential, whenever the summary changes. The leader keeps the latest summary per
// chunk in memory (Reports) and the controller adds the running chunks' summaries to the status.
// Like the leases, the state is soft: a new leader starts empty and re-learns it from the next
// reports (at most one poll interval later).

// ReportPath is where the lease service takes batch reports.
const ReportPath = "/v1/batch-reports"

// BatchReport is one chunk pod's report.
type BatchReport struct {
	Namespace string `json:"namespace"`
	Ingestion string `json:"ingestion"`
	// UID is the ingestion's UID: a report of an earlier ingestion of the same name (whose pods
	// share the credential, which is per name) is never shown for the new one.
	UID   string `json:"uid"`
	Chunk int    `json:"chunk"`
	// Summary is the chunk's batches as its record holds them now.
	Summary v1alpha1.BatchStatus `json:"summary"`
}

// Bounds of the report store: the leader's memory does not grow with what pods send.
const (
	// MaxReportChunk is the largest chunk index taken (the planner's chunk bound).
	MaxReportChunk = 50_000
	// DefaultMaxReportsPerIngestion: at most this many chunks of one ingestion are kept (twice
	// the largest parallelism: a replaced pod's chunk lingers until it expires).
	DefaultMaxReportsPerIngestion = 2_000
	// DefaultMaxReports bounds the entries over all ingestions.
	DefaultMaxReports = 20_000
	// maxReportBatches bounds a report's counts of batches (a chunk cuts far fewer).
	maxReportBatches = 1 << 20
	// maxReportBody bounds a report's body.
	maxReportBody = 4 << 10
	// DefaultReportTTL: a chunk not heard from for this long is forgotten.
	DefaultReportTTL = 10 * time.Minute
)

// ErrTooManyReports refuses a report beyond the store's bounds.
var ErrTooManyReports = errors.New("too many batch reports")

// LiveBatch is the latest report of one chunk.
type LiveBatch struct {
	Summary v1alpha1.BatchStatus
	At      time.Time
}

// Reports keeps the latest batch summary per (namespace/ingestion, chunk). It is an
// http.Handler for ReportPath. Safe for concurrent use.
type Reports struct {
	key               []byte
	ttl               time.Duration
	now               func() time.Time
	log               logr.Logger
	maxPerIng, maxAll int
	swept             time.Time

	mu      sync.Mutex
	byIng   map[string]*ingReports
	entries int
}

// ingReports are one ingestion name's chunks, by the UID their pods named (an earlier
// ingestion of the same name shares the credential; its late reports are kept apart and expire).
type ingReports struct {
	chunks map[chunkKey]LiveBatch
}

type chunkKey struct {
	uid   string
	chunk int
}

// ReportsOptions configure NewReports.
type ReportsOptions struct {
	// Key checks the credentials (the lease server's key). Required.
	Key []byte
	// TTL forgets a chunk not heard from for this long (default DefaultReportTTL); it should be
	// well above the pods' poll interval.
	TTL time.Duration
	Now func() time.Time
	Log logr.Logger
	// MaxPerIngestion and Max bound the chunks kept per ingestion and in all (defaults
	// DefaultMaxReportsPerIngestion, DefaultMaxReports).
	MaxPerIngestion, Max int
}

// NewReports returns an empty store.
func NewReports(o ReportsOptions) (*Reports, error) {
	if len(o.Key) < 16 {
		return nil, errors.New("batch reports: the credential key must be at least 16 bytes")
	}
	if o.TTL <= 0 {
		o.TTL = DefaultReportTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxPerIngestion <= 0 {
		o.MaxPerIngestion = DefaultMaxReportsPerIngestion
	}
	if o.Max <= 0 {
		o.Max = DefaultMaxReports
	}
	return &Reports{key: o.Key, ttl: o.TTL, now: o.Now, log: o.Log, maxPerIng: o.MaxPerIngestion, maxAll: o.Max,
		byIng: map[string]*ingReports{}}, nil
}

// ServeHTTP answers POST ReportPath: 204 when kept.
func (s *Reports) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		httpError(w, http.StatusMethodNotAllowed, "batch reports are sent with POST")
		return
	}
	var rep BatchReport
	if !readAuthenticated(w, r, s.key, maxReportBody, "batch report", "report", &rep, rep.Validate,
		func() (string, string) { return rep.Namespace, rep.Ingestion }) {
		return
	}
	if err := s.Put(rep); err != nil {
		s.log.V(1).Info("batch report refused", "namespace", rep.Namespace, "ingestion", rep.Ingestion, "chunk", rep.Chunk, "reason", err.Error())
		httpError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Validate checks a report's fields.
func (q *BatchReport) Validate() error {
	b := q.Summary
	switch {
	case q.Namespace == "" || q.Ingestion == "" || q.UID == "":
		return errors.New("namespace, ingestion and uid are required")
	case len(q.Namespace) > maxName || len(q.Ingestion) > maxName || len(q.UID) > maxName:
		return fmt.Errorf("namespace, ingestion and uid are at most %d characters", maxName)
	case q.Chunk < 0 || q.Chunk >= MaxReportChunk:
		return fmt.Errorf("chunk %d is out of range: a plan has at most %d chunks", q.Chunk, MaxReportChunk)
	case b.Batches < 0 || b.Validating < 0 || b.InProgress < 0 || b.Finalizing < 0 || b.Completed < 0 ||
		b.Failed < 0 || b.Expired < 0 || b.Cancelled < 0 || b.Lines < 0 || b.LinesDone < 0 || b.LinesFailed < 0:
		return errors.New("summary counts must not be negative")
	case b.Batches > maxReportBatches:
		return fmt.Errorf("summary.batches %d is more than a chunk can cut (%d)", b.Batches, maxReportBatches)
	case int64(b.Validating)+int64(b.InProgress)+int64(b.Finalizing)+int64(b.Completed)+int64(b.Failed)+
		int64(b.Expired)+int64(b.Cancelled) > int64(b.Batches):
		return fmt.Errorf("summary counts %d batches by state, more than its %d batches", int64(b.Validating)+int64(b.InProgress)+
			int64(b.Finalizing)+int64(b.Completed)+int64(b.Failed)+int64(b.Expired)+int64(b.Cancelled), b.Batches)
	case b.Lines > maxCount || b.LinesDone > maxCount || b.LinesFailed > maxCount:
		return fmt.Errorf("summary line counts must be at most %d", int64(maxCount))
	}
	return nil
}

// Put keeps an (authenticated, valid) report as its chunk's latest.
func (s *Reports) Put(rep BatchReport) error {
	now := s.now()
	ing := rep.Namespace + "/" + rep.Ingestion
	s.mu.Lock()
	if now.Sub(s.swept) >= s.ttl/10 {
		s.expire(now)
	}
	e := s.byIng[ing]
	k := chunkKey{uid: rep.UID, chunk: rep.Chunk}
	_, known := e.lookup(k)
	if !known {
		switch {
		case e != nil && len(e.chunks) >= s.maxPerIng:
			s.mu.Unlock()
			return fmt.Errorf("%w: ingestion %s already reports %d chunks", ErrTooManyReports, ing, s.maxPerIng)
		case s.entries >= s.maxAll:
			s.mu.Unlock()
			return fmt.Errorf("%w: the manager keeps at most %d chunks' reports; retry later", ErrTooManyReports, s.maxAll)
		}
	}
	if e == nil {
		e = &ingReports{chunks: map[chunkKey]LiveBatch{}}
		s.byIng[ing] = e
	}
	e.chunks[k] = LiveBatch{Summary: rep.Summary, At: now}
	if !known {
		s.entries++
	}
	s.mu.Unlock()
	return nil
}

func (e *ingReports) lookup(k chunkKey) (LiveBatch, bool) {
	if e == nil {
		return LiveBatch{}, false
	}
	v, ok := e.chunks[k]
	return v, ok
}

// expire drops the chunks not heard from within the TTL. Called with s.mu held.
func (s *Reports) expire(now time.Time) {
	s.swept = now
	for ing, e := range s.byIng {
		for c, v := range e.chunks {
			if now.Sub(v.At) >= s.ttl {
				delete(e.chunks, c)
				s.entries--
			}
		}
		if len(e.chunks) == 0 {
			delete(s.byIng, ing)
		}
	}
}

// Chunks returns the live chunks of an ingestion (by chunk index), reported by pods of the
// ingestion with this UID and not expired. Nil s: none.
func (s *Reports) Chunks(namespace, ingestion, uid string) map[int]LiveBatch {
	if s == nil {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byIng[namespace+"/"+ingestion]
	if e == nil {
		return nil
	}
	out := make(map[int]LiveBatch, len(e.chunks))
	for k, v := range e.chunks {
		if k.uid == uid && now.Sub(v.At) < s.ttl {
			out[k.chunk] = v
		}
	}
	return out
}

// Forget drops an ingestion's reports (it ended or was deleted).
func (s *Reports) Forget(namespace, ingestion string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byIng[namespace+"/"+ingestion]; e != nil {
		s.entries -= len(e.chunks)
		delete(s.byIng, namespace+"/"+ingestion)
	}
}

// Len is the number of chunks kept (tests).
func (s *Reports) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries
}

// ReportURL is the report endpoint beside a lease URL (its path's last ratelease.Path replaced
// by ReportPath; a lease URL with another path gets ReportPath as its path).
func ReportURL(leaseURL string) string {
	if base, ok := strings.CutSuffix(leaseURL, Path); ok {
		return base + ReportPath
	}
	if i := strings.Index(leaseURL, "://"); i >= 0 {
		if j := strings.IndexByte(leaseURL[i+3:], '/'); j >= 0 {
			return leaseURL[:i+3+j] + ReportPath
		}
		return leaseURL + ReportPath
	}
	return leaseURL
}

// Reporter posts a chunk's batch summaries, best effort: a failed report is logged once per
// kind of failure and never fails or slows the chunk (each post is bounded by a short timeout).
type Reporter struct {
	url, cred string
	base      BatchReport
	hc        *http.Client
	log       logr.Logger
	logged    map[string]bool
}

// ReporterTimeout bounds one report.
const ReporterTimeout = 3 * time.Second

// NewReporter reports for one chunk of an ingestion at url (ReportURL of the lease URL). nil
// hc: a client with ReporterTimeout.
func NewReporter(url, credential, namespace, ingestion, uid string, chunk int, hc *http.Client, log logr.Logger) *Reporter {
	if hc == nil {
		hc = &http.Client{Timeout: ReporterTimeout}
	}
	return &Reporter{url: url, cred: credential, hc: hc, log: log, logged: map[string]bool{},
		base: BatchReport{Namespace: namespace, Ingestion: ingestion, UID: uid, Chunk: chunk}}
}

// Report posts sum and says whether the manager took it. It never returns an error: failures
// are logged, once per kind.
func (r *Reporter) Report(ctx context.Context, sum v1alpha1.BatchStatus) bool {
	if r == nil {
		return false
	}
	rep := r.base
	rep.Summary = sum
	body, err := json.Marshal(rep)
	if err != nil {
		r.once("encode", err)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, ReporterTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		r.once("request", err)
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+r.cred)
	resp, err := r.hc.Do(req)
	if err != nil {
		r.once("transport", err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4<<10)).Decode(&e)
		r.once(fmt.Sprintf("http %d", resp.StatusCode), fmt.Errorf("the manager answered %s: %s", resp.Status, e.Error))
		return false
	}
	return true
}

func (r *Reporter) once(kind string, err error) {
	if r.logged[kind] {
		return
	}
	r.logged[kind] = true
	r.log.Info("could not report the batch state to the manager (the status shows this chunk's batches when it ends; logged once)",
		"kind", kind, "error", err.Error())
}
