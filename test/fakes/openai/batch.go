package openai

// Files and Batches: OpenAI's Batch API for embeddings at its wire protocol, so that a batch
// client is tested through the real go-openai SDK (CreateFileBytes, CreateBatch, RetrieveBatch,
// CancelBatch, ListBatch, GetFileContent, DeleteFile).
//
// A batch moves validating → in_progress → finalizing → completed. Validation checks every line
// (JSON, unique custom_id, POST to the batch's endpoint, one model) and the limits (BatchLimits);
// a batch that breaks one ends failed with errors.data naming the line, as the API does. Lines are
// executed in a shuffled order (the API does not keep input order) and each one goes through the
// same validation, refusal hooks and encoding as POST /v1/embeddings: a line the online endpoint
// would answer with an error lands in the error file with that status and body. Output and error
// files are generated when read, so a million-line backfill does not hold gigabytes of vectors.
//
// Progress: by default a batch advances one step each time it is retrieved or listed (with
// SetBatchLinesPerPoll bounding the lines executed per step), so a poller drives it without any
// wall-clock wait. HoldBatches stops that; StepBatch, FinishBatch, ExpireBatch and FailBatch then
// move a batch explicitly. ExpireNextBatch makes the next created batch expire after a number of
// lines, with the rest reported as batch_expired in its error file. A cancel moves the batch to
// cancelling and, on the next step, to cancelled, keeping the lines already executed.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BatchLimits are the Batch API's limits. DefaultBatchLimits holds the published values.
type BatchLimits struct {
	// MaxRequests is the most lines (requests) in one batch input file.
	MaxRequests int
	// MaxInputs is the most embedding inputs across all lines of one batch.
	MaxInputs int
	// MaxFileBytes is the largest file accepted for purpose "batch".
	MaxFileBytes int64
	// MaxEnqueuedTokens caps, per model, the tokens of batches not yet finished (validating,
	// in_progress, finalizing, cancelling) plus the batch being validated; 0 is unlimited.
	MaxEnqueuedTokens int64
}

// DefaultBatchLimits are OpenAI's published limits: 50,000 requests per file, 50,000 embedding
// inputs per batch, 200 MB per file, and the tier-1 enqueued-token cap of text-embedding-3-small
// (3,000,000).
var DefaultBatchLimits = BatchLimits{
	MaxRequests:       50_000,
	MaxInputs:         50_000,
	MaxFileBytes:      200 << 20,
	MaxEnqueuedTokens: 3_000_000,
}

// BatchStats are the Files and Batches counters since Start.
type BatchStats struct {
	Requests        int64 // requests to /v1/files and /v1/batches
	FilesUploaded   int64 // files created by POST /v1/files
	FilesDeleted    int64 // files deleted, uploaded or generated
	BatchesCreated  int64 // batches created by POST /v1/batches
	BatchesCanceled int64 // cancel requests accepted
	LinesEmbedded   int64 // lines executed with a 200 answer
	LinesFailed     int64 // lines executed with an error answer
	LinesExpired    int64 // lines reported batch_expired
	Inputs          int64 // embedding inputs of the lines embedded
	Tokens          int64 // tokens billed for the lines embedded
	BytesUploaded   int64 // bytes of uploaded file contents
	BytesDownloaded int64 // bytes of file contents served
}

// Batch states, as the API spells them.
const (
	BatchValidating = "validating"
	BatchFailed     = "failed"
	BatchInProgress = "in_progress"
	BatchFinalizing = "finalizing"
	BatchCompleted  = "completed"
	BatchExpired    = "expired"
	BatchCancelling = "cancelling"
	BatchCancelled  = "cancelled"
)

type fakeFile struct {
	id       string
	name     string
	purpose  string
	created  int64
	data     []byte     // uploaded content
	batch    *fakeBatch // set for a generated output or error file
	errorsOf bool       // the error file of batch
}

func (f *fakeFile) size() int {
	if f.batch == nil {
		return len(f.data)
	}
	return -1 // generated; sized when written
}

// lineResult is one executed line: where it sits in the input file and how it ended.
type lineResult struct {
	start, end int // byte range of the line in the input file
	status     int // HTTP status; 0 = batch_expired
	body       []byte
	dims       int // SetDimensionOverride at execution, or 0
}

type batchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

type fakeBatch struct {
	id, endpoint, window string
	input                *fakeFile
	output, errFile      *fakeFile
	status               string
	metadata             map[string]string
	created              int64
	times                map[string]int64
	errs                 []batchError

	lines             [][2]int // byte ranges of the input lines, in execution order
	next              int      // lines[:next] are executed
	results           []lineResult
	model             string
	tokens            int64 // estimated tokens, counted against the enqueued cap while open
	expireAfter       int   // expire once this many lines are executed; -1 never
	completed, failed int
}

// batchState is the Files/Batches state, guarded by Server.mu.
type batchState struct {
	limits     BatchLimits
	files      map[string]*fakeFile
	batches    map[string]*fakeBatch
	order      []string // batch ids, oldest first
	hold       bool
	perPoll    int
	expireNext int // -1 none
	seq        uint64
	stats      BatchStats
	rnd        *rand.Rand
}

func (s *Server) bstate() *batchState {
	if s.b == nil {
		s.b = &batchState{
			limits: DefaultBatchLimits, files: map[string]*fakeFile{}, batches: map[string]*fakeBatch{},
			expireNext: -1, rnd: rand.New(rand.NewPCG(1, 2)),
		}
	}
	return s.b
}

// SetBatchLimits replaces the Batch API limits (tests shrink them so that several batches are
// needed); a zero field keeps the published default.
func (s *Server) SetBatchLimits(l BatchLimits) {
	d := DefaultBatchLimits
	if l.MaxRequests > 0 {
		d.MaxRequests = l.MaxRequests
	}
	if l.MaxInputs > 0 {
		d.MaxInputs = l.MaxInputs
	}
	if l.MaxFileBytes > 0 {
		d.MaxFileBytes = l.MaxFileBytes
	}
	if l.MaxEnqueuedTokens != 0 {
		d.MaxEnqueuedTokens = max(0, l.MaxEnqueuedTokens) // negative: unlimited
	}
	s.mu.Lock()
	s.bstate().limits = d
	s.mu.Unlock()
}

// HoldBatches stops (on) or restarts (off) batches advancing when they are retrieved or listed.
func (s *Server) HoldBatches(on bool) {
	s.mu.Lock()
	s.bstate().hold = on
	s.mu.Unlock()
}

// SetBatchLinesPerPoll bounds the lines an in-progress batch executes per step; 0 executes all.
func (s *Server) SetBatchLinesPerPoll(n int) {
	s.mu.Lock()
	s.bstate().perPoll = max(0, n)
	s.mu.Unlock()
}

// ExpireNextBatch makes the next batch created expire once it has executed after lines: those
// stay in its output file, the rest are reported batch_expired in its error file.
func (s *Server) ExpireNextBatch(after int) {
	s.mu.Lock()
	s.bstate().expireNext = max(0, after)
	s.mu.Unlock()
}

// BatchStats returns a copy of the Files and Batches counters.
func (s *Server) BatchStats() BatchStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bstate().stats
}

// BatchIDs lists the batches' ids, oldest first.
func (s *Server) BatchIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bstate().order)
}

// BatchStatus is a batch's state ("" for an unknown id).
func (s *Server) BatchStatus(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.bstate().batches[id]; b != nil {
		return b.status
	}
	return ""
}

// FileIDs lists the files stored (uploaded and generated), in no particular order.
func (s *Server) FileIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.bstate().files))
	for id := range s.bstate().files {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// StepBatch moves a batch one step, executing up to lines lines when in progress (0: the
// SetBatchLinesPerPoll bound). It reports whether the batch exists.
func (s *Server) StepBatch(id string, lines int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bstate().batches[id]
	if b == nil {
		return false
	}
	s.step(b, lines)
	return true
}

// FinishBatch moves a batch to its end state (completed, expired, cancelled or failed) now.
func (s *Server) FinishBatch(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bstate().batches[id]
	if b == nil {
		return false
	}
	for i := 0; i < 8 && !terminal(b.status); i++ {
		s.step(b, len(b.lines)+1)
	}
	return true
}

// ExpireBatch expires an open batch now: executed lines stay, the rest become batch_expired.
func (s *Server) ExpireBatch(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bstate().batches[id]
	if b == nil || terminal(b.status) {
		return false
	}
	if b.status == BatchValidating {
		s.validateBatch(b)
		if b.status == BatchFailed {
			return true
		}
	}
	s.expire(b)
	return true
}

// FailBatch fails an open batch with code and message, as the API fails a batch it cannot run.
func (s *Server) FailBatch(id, code, message string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.bstate().batches[id]
	if b == nil || terminal(b.status) {
		return false
	}
	b.errs = append(b.errs, batchError{Code: code, Message: message})
	s.finish(b, BatchFailed)
	return true
}

func terminal(st string) bool {
	switch st {
	case BatchFailed, BatchCompleted, BatchExpired, BatchCancelled:
		return true
	}
	return false
}

func (s *Server) newID(prefix string) string {
	st := s.bstate()
	st.seq++
	return fmt.Sprintf("%s%08d", prefix, st.seq)
}

// serveBatchAPI answers /v1/files... and /v1/batches....
func (s *Server) serveBatchAPI(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqID++
	s.bstate().stats.Requests++
	id, unauth := s.reqID, s.unauth
	s.mu.Unlock()
	w.Header().Set("X-Request-Id", "req_fake_"+strconv.FormatUint(id, 10))
	if status, body := s.checkAuth(r, unauth); status != 0 {
		s.reply(w, r, status, body, nil)
		return
	}
	if status, body, hdr := s.injected(); status != 0 {
		s.reply(w, r, status, body, hdr)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // v1, files|batches, id, action
	notFound := func() {
		s.reply(w, r, http.StatusNotFound, errBody(fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path), "invalid_request_error", "", ""), nil)
	}
	switch {
	case parts[1] == "files" && len(parts) == 2 && r.Method == http.MethodPost:
		s.uploadFile(w, r)
	case parts[1] == "files" && len(parts) == 2 && r.Method == http.MethodGet:
		s.listFiles(w, r)
	case parts[1] == "files" && len(parts) == 3 && r.Method == http.MethodGet:
		s.withFile(w, r, parts[2], func(f *fakeFile) {
			s.mu.Lock()
			fj := s.fileJSON(f)
			s.mu.Unlock()
			s.replyJSON(w, r, fj)
		})
	case parts[1] == "files" && len(parts) == 3 && r.Method == http.MethodDelete:
		s.deleteFile(w, r, parts[2])
	case parts[1] == "files" && len(parts) == 4 && parts[3] == "content" && r.Method == http.MethodGet:
		s.withFile(w, r, parts[2], func(f *fakeFile) { s.fileContent(w, f) })
	case parts[1] == "batches" && len(parts) == 2 && r.Method == http.MethodPost:
		s.createBatch(w, r)
	case parts[1] == "batches" && len(parts) == 2 && r.Method == http.MethodGet:
		s.listBatches(w, r)
	case parts[1] == "batches" && len(parts) == 3 && r.Method == http.MethodGet:
		s.retrieveBatch(w, r, parts[2])
	case parts[1] == "batches" && len(parts) == 4 && parts[3] == "cancel" && r.Method == http.MethodPost:
		s.cancelBatch(w, r, parts[2])
	default:
		notFound()
	}
}

func (s *Server) replyJSON(w http.ResponseWriter, r *http.Request, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.reply(w, r, http.StatusInternalServerError, errBody("internal error in fake: "+err.Error(), "server_error", "", ""), nil)
		return
	}
	s.reply(w, r, http.StatusOK, b, nil)
}

func (s *Server) badRequest(w http.ResponseWriter, r *http.Request, msg, param string) {
	s.reply(w, r, http.StatusBadRequest, errBody(msg, "invalid_request_error", param, ""), nil)
}

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	limit := s.bstate().limits.MaxFileBytes
	s.mu.Unlock()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		s.badRequest(w, r, "Invalid file format. The request must be multipart/form-data.", "file")
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var purpose, name string
	var data []byte
	var got bool
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.badRequest(w, r, "We could not parse the multipart body of your request: "+err.Error(), "")
			return
		}
		switch p.FormName() {
		case "purpose":
			b, _ := io.ReadAll(io.LimitReader(p, 64))
			purpose = string(b)
		case "file":
			name, got = p.FileName(), true
			data, err = io.ReadAll(io.LimitReader(p, limit+1))
			if err != nil {
				s.badRequest(w, r, "We could not read the uploaded file: "+err.Error(), "file")
				return
			}
			if int64(len(data)) > limit {
				s.badRequest(w, r, fmt.Sprintf("Maximum content size limit (%d) exceeded.", limit), "file")
				return
			}
		}
	}
	switch {
	case !got:
		s.badRequest(w, r, "Missing required parameter: 'file'.", "file")
		return
	case purpose == "":
		s.badRequest(w, r, "Missing required parameter: 'purpose'.", "purpose")
		return
	case purpose != "batch":
		s.badRequest(w, r, fmt.Sprintf("The fake accepts only purpose 'batch', got %q.", purpose), "purpose")
		return
	case len(data) == 0:
		s.badRequest(w, r, "File is empty.", "file")
		return
	}
	s.mu.Lock()
	st := s.bstate()
	f := &fakeFile{id: s.newID("file-fake"), name: name, purpose: purpose, created: time.Now().Unix(), data: data}
	st.files[f.id] = f
	st.stats.FilesUploaded++
	st.stats.BytesUploaded += int64(len(data))
	out := s.fileJSON(f)
	s.mu.Unlock()
	s.replyJSON(w, r, out)
}

type fileJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int    `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

// fileJSON needs s.mu held (or a file no other goroutine sees yet).
func (s *Server) fileJSON(f *fakeFile) fileJSON {
	n := f.size()
	if n < 0 {
		// Generated files are sized by writing them out; only GET /v1/files/{id} asks.
		cw := &countWriter{w: io.Discard}
		bw := bufio.NewWriter(cw)
		_ = s.generate(bw, f.batch, f.batch.results, f.errorsOf)
		_ = bw.Flush()
		n = int(cw.n)
	}
	return fileJSON{ID: f.id, Object: "file", Bytes: n, CreatedAt: f.created, Filename: f.name, Purpose: f.purpose, Status: "processed"}
}

func (s *Server) withFile(w http.ResponseWriter, r *http.Request, id string, fn func(*fakeFile)) {
	s.mu.Lock()
	f := s.bstate().files[id]
	s.mu.Unlock()
	if f == nil {
		s.reply(w, r, http.StatusNotFound, errBody("No such File object: "+id, "invalid_request_error", "id", ""), nil)
		return
	}
	fn(f)
}

func (s *Server) listFiles(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data := make([]fileJSON, 0, len(s.bstate().files))
	for _, f := range s.bstate().files {
		data = append(data, s.fileJSON(f))
	}
	s.mu.Unlock()
	slices.SortFunc(data, func(a, b fileJSON) int { return strings.Compare(a.ID, b.ID) })
	s.replyJSON(w, r, map[string]any{"object": "list", "data": data})
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	st := s.bstate()
	f := st.files[id]
	if f != nil {
		delete(st.files, id)
		st.stats.FilesDeleted++
	}
	s.mu.Unlock()
	if f == nil {
		s.reply(w, r, http.StatusNotFound, errBody("No such File object: "+id, "invalid_request_error", "id", ""), nil)
		return
	}
	s.replyJSON(w, r, map[string]any{"id": id, "object": "file", "deleted": true})
}

// fileContent streams a file. A generated file is written line by line from a snapshot of its
// batch's results (final once the batch has ended), without holding the lock.
func (s *Server) fileContent(w http.ResponseWriter, f *fakeFile) {
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countWriter{w: w}
	if f.batch == nil {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = cw.Write(f.data)
	} else {
		w.WriteHeader(http.StatusOK)
		bw := bufio.NewWriterSize(cw, 64<<10)
		s.mu.Lock()
		b := f.batch
		results := b.results[:len(b.results):len(b.results)]
		s.mu.Unlock()
		_ = s.generate(bw, b, results, f.errorsOf)
		_ = bw.Flush()
	}
	s.mu.Lock()
	s.bstate().stats.BytesDownloaded += cw.n
	s.stats.ByStatus[http.StatusOK]++
	s.mu.Unlock()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// generate writes an output (errorsOf false) or error file's lines for the given results of b.
// It reads only what does not change once b has ended, so it runs without s.mu.
func (s *Server) generate(out *bufio.Writer, b *fakeBatch, results []lineResult, errorsOf bool) error {
	sc := new(scratch)
	for i, res := range results {
		ok := res.status == http.StatusOK
		if ok == errorsOf {
			continue
		}
		line := b.input.data[res.start:res.end]
		var head struct {
			CustomID string          `json:"custom_id"`
			Body     json.RawMessage `json:"body"`
		}
		_ = json.Unmarshal(line, &head) // validated when the batch was
		out.WriteString(`{"id":"batch_req_`)
		out.WriteString(b.id[len("batch_"):])
		out.WriteByte('_')
		out.WriteString(strconv.Itoa(i))
		out.WriteString(`","custom_id":`)
		cid, _ := json.Marshal(head.CustomID)
		out.Write(cid)
		switch {
		case res.status == 0:
			out.WriteString(`,"response":null,"error":{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}`)
		case ok:
			var req embeddingRequest
			_ = json.Unmarshal(head.Body, &req)
			p, _, _ := s.validate(&req)
			if res.dims > 0 {
				p.dims = res.dims
			}
			sc.out = s.encode(sc, req.Model, req.EncodingFormat == "base64", p, func(k int) int { return k })
			out.WriteString(`,"response":{"status_code":200,"request_id":"req_fake_b`)
			out.WriteString(strconv.Itoa(i))
			out.WriteString(`","body":`)
			out.Write(sc.out)
			out.WriteString(`},"error":null}`)
		default:
			out.WriteString(`,"response":{"status_code":`)
			out.WriteString(strconv.Itoa(res.status))
			out.WriteString(`,"request_id":"req_fake_b`)
			out.WriteString(strconv.Itoa(i))
			out.WriteString(`","body":`)
			out.Write(res.body)
			out.WriteString(`},"error":null}`)
		}
		if err := out.WriteByte('\n'); err != nil {
			return err
		}
	}
	return nil
}

type createBatchBody struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
}

func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.badRequest(w, r, "We could not read the body of your request: "+err.Error(), "")
		return
	}
	var req createBatchBody
	if err := json.Unmarshal(body, &req); err != nil {
		s.badRequest(w, r, "We could not parse the JSON body of your request: "+err.Error(), "")
		return
	}
	switch {
	case req.InputFileID == "":
		s.badRequest(w, r, "Missing required parameter: 'input_file_id'.", "input_file_id")
		return
	case req.Endpoint != "/v1/embeddings":
		s.badRequest(w, r, fmt.Sprintf("Invalid value for 'endpoint': the fake supports only '/v1/embeddings', got %q.", req.Endpoint), "endpoint")
		return
	case req.CompletionWindow != "24h":
		s.badRequest(w, r, fmt.Sprintf("Invalid value for 'completion_window': expected '24h', got %q.", req.CompletionWindow), "completion_window")
		return
	case len(req.Metadata) > 16:
		s.badRequest(w, r, "Invalid 'metadata': too many properties. Expected an object with at most 16 properties.", "metadata")
		return
	}
	for k, v := range req.Metadata {
		if len(k) > 64 || len(v) > 512 {
			s.badRequest(w, r, "Invalid 'metadata': keys may be at most 64 characters and values at most 512 characters.", "metadata")
			return
		}
	}
	s.mu.Lock()
	st := s.bstate()
	in := st.files[req.InputFileID]
	if in == nil || in.batch != nil {
		s.mu.Unlock()
		s.reply(w, r, http.StatusNotFound, errBody("No such File object: "+req.InputFileID, "invalid_request_error", "input_file_id", ""), nil)
		return
	}
	now := time.Now().Unix()
	b := &fakeBatch{
		id: s.newID("batch_fake"), endpoint: req.Endpoint, window: req.CompletionWindow, input: in,
		status: BatchValidating, metadata: req.Metadata, created: now, times: map[string]int64{},
		expireAfter: st.expireNext,
	}
	st.expireNext = -1
	st.batches[b.id] = b
	st.order = append(st.order, b.id)
	st.stats.BatchesCreated++
	out := s.batchJSON(b)
	s.mu.Unlock()
	s.replyJSON(w, r, out)
}

func (s *Server) retrieveBatch(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	b := s.bstate().batches[id]
	if b == nil {
		s.mu.Unlock()
		s.reply(w, r, http.StatusNotFound, errBody("No batch found with id '"+id+"'.", "invalid_request_error", "", ""), nil)
		return
	}
	if !s.bstate().hold {
		s.step(b, 0)
	}
	out := s.batchJSON(b)
	s.mu.Unlock()
	s.replyJSON(w, r, out)
}

func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	st := s.bstate()
	b := st.batches[id]
	if b == nil {
		s.mu.Unlock()
		s.reply(w, r, http.StatusNotFound, errBody("No batch found with id '"+id+"'.", "invalid_request_error", "", ""), nil)
		return
	}
	switch b.status {
	case BatchValidating, BatchInProgress, BatchFinalizing:
		b.status = BatchCancelling
		b.times[BatchCancelling] = time.Now().Unix()
		st.stats.BatchesCanceled++
	case BatchCancelling:
	default:
		st := b.status
		s.mu.Unlock()
		s.reply(w, r, http.StatusConflict, errBody(fmt.Sprintf("Cannot cancel a batch with status '%s'.", st), "invalid_request_error", "", ""), nil)
		return
	}
	out := s.batchJSON(b)
	s.mu.Unlock()
	s.replyJSON(w, r, out)
}

func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			s.badRequest(w, r, "Invalid 'limit': integer below minimum value or above maximum value (1 to 100).", "limit")
			return
		}
		limit = n
	}
	after := r.URL.Query().Get("after")
	s.mu.Lock()
	st := s.bstate()
	var data []batchJSON
	started := after == ""
	more := false
	for i := len(st.order) - 1; i >= 0; i-- { // newest first
		id := st.order[i]
		if !started {
			started = id == after
			continue
		}
		if len(data) == limit {
			more = true
			break
		}
		b := st.batches[id]
		if !st.hold {
			s.step(b, 0)
		}
		data = append(data, s.batchJSON(b))
	}
	s.mu.Unlock()
	resp := map[string]any{"object": "list", "data": data, "has_more": more, "first_id": nil, "last_id": nil}
	if data == nil {
		resp["data"] = []batchJSON{}
	} else {
		resp["first_id"], resp["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	s.replyJSON(w, r, resp)
}

type batchJSON struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Errors           *batchErrorsJSON  `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    map[string]int    `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

type batchErrorsJSON struct {
	Object string       `json:"object"`
	Data   []batchError `json:"data"`
}

func (s *Server) batchJSON(b *fakeBatch) batchJSON {
	at := func(st string) *int64 {
		if t, ok := b.times[st]; ok {
			return &t
		}
		return nil
	}
	exp := b.created + 24*3600
	out := batchJSON{
		ID: b.id, Object: "batch", Endpoint: b.endpoint, InputFileID: b.input.id,
		CompletionWindow: b.window, Status: b.status, CreatedAt: b.created,
		InProgressAt: at(BatchInProgress), ExpiresAt: &exp, FinalizingAt: at(BatchFinalizing),
		CompletedAt: at(BatchCompleted), FailedAt: at(BatchFailed), ExpiredAt: at(BatchExpired),
		CancellingAt: at(BatchCancelling), CancelledAt: at(BatchCancelled),
		RequestCounts: map[string]int{"total": len(b.lines), "completed": b.completed, "failed": b.failed},
		Metadata:      b.metadata,
	}
	if b.errs != nil {
		out.Errors = &batchErrorsJSON{Object: "list", Data: b.errs}
	}
	if b.output != nil {
		out.OutputFileID = &b.output.id
	}
	if b.errFile != nil {
		out.ErrorFileID = &b.errFile.id
	}
	return out
}

// step moves b one state on; it needs s.mu held. lines bounds the lines executed (0: perPoll).
func (s *Server) step(b *fakeBatch, lines int) {
	switch b.status {
	case BatchValidating:
		s.validateBatch(b)
	case BatchInProgress:
		if lines == 0 {
			lines = s.bstate().perPoll
		}
		if lines == 0 {
			lines = len(b.lines)
		}
		s.execute(b, lines)
		if b.status == BatchInProgress && b.next == len(b.lines) {
			b.status = BatchFinalizing
			b.times[BatchFinalizing] = time.Now().Unix()
		}
	case BatchFinalizing:
		s.finish(b, BatchCompleted)
	case BatchCancelling:
		s.finish(b, BatchCancelled)
	}
}

// validateBatch checks every line and the limits, then starts the batch or fails it.
func (s *Server) validateBatch(b *fakeBatch) {
	st := s.bstate()
	fail := func(code, msg string, line int) {
		e := batchError{Code: code, Message: msg}
		if line > 0 {
			e.Line = &line
		}
		b.errs = append(b.errs, e)
		s.finish(b, BatchFailed)
	}
	data := b.input.data
	seen := map[string]struct{}{}
	var inputs int
	for start, n := 0, 1; start < len(data); n++ {
		end := bytes.IndexByte(data[start:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += start
		}
		line := bytes.TrimSpace(data[start:end])
		if len(line) > 0 {
			var l struct {
				CustomID string           `json:"custom_id"`
				Method   string           `json:"method"`
				URL      string           `json:"url"`
				Body     embeddingRequest `json:"body"`
			}
			if err := json.Unmarshal(line, &l); err != nil {
				fail("invalid_json_line", fmt.Sprintf("This line is not parseable as valid JSON: %v", err), n)
				return
			}
			switch {
			case l.CustomID == "":
				fail("missing_required_parameter", "Missing required parameter: 'custom_id'.", n)
				return
			case l.Method != http.MethodPost:
				fail("invalid_value", fmt.Sprintf("Invalid value for 'method': expected 'POST', got %q.", l.Method), n)
				return
			case l.URL != b.endpoint:
				fail("mismatched_endpoint", fmt.Sprintf("The url provided for this request does not match the batch endpoint %q.", b.endpoint), n)
				return
			case b.model != "" && l.Body.Model != b.model:
				fail("mismatched_model", "The provided model does not match the model of the other requests in the batch. A batch may use only one model.", n)
				return
			}
			if _, dup := seen[l.CustomID]; dup {
				fail("duplicate_custom_id", fmt.Sprintf("The custom_id for this request is a duplicate of another request: %q.", l.CustomID), n)
				return
			}
			seen[l.CustomID] = struct{}{}
			b.model = l.Body.Model
			texts, counts, err := parseInput(l.Body.Input)
			if err == nil {
				inputs += len(texts)
				for i, t := range texts {
					if counts[i] >= 0 {
						b.tokens += int64(counts[i])
					} else {
						b.tokens += int64(s.count(t))
					}
				}
			}
			b.lines = append(b.lines, [2]int{start + bytes.Index(data[start:end], line), start + bytes.Index(data[start:end], line) + len(line)})
		}
		start = end + 1
	}
	switch {
	case len(b.lines) == 0:
		fail("empty_file", "The batch input file is empty.", 0)
		return
	case len(b.lines) > st.limits.MaxRequests:
		fail("too_many_requests", fmt.Sprintf("The batch input file has %d requests; the maximum is %d requests per batch.", len(b.lines), st.limits.MaxRequests), 0)
		return
	case inputs > st.limits.MaxInputs:
		fail("too_many_inputs", fmt.Sprintf("The batch holds %d embedding inputs; the maximum is %d inputs across all requests of a batch.", inputs, st.limits.MaxInputs), 0)
		return
	}
	if lim := st.limits.MaxEnqueuedTokens; lim > 0 {
		enq := b.tokens
		for _, o := range st.batches {
			if o != b && o.model == b.model && (o.status == BatchInProgress || o.status == BatchFinalizing || o.status == BatchCancelling) {
				enq += o.tokens
			}
		}
		if enq > lim {
			fail("token_limit_exceeded", fmt.Sprintf("Enqueued token limit reached for %s in organization org-fake. Limit: %d enqueued tokens. Please try submitting fewer tasks or wait for some of your in-progress batches to complete.", b.model, lim), 0)
			return
		}
	}
	// The API runs lines in no promised order: shuffle, deterministically.
	st.rnd.Shuffle(len(b.lines), func(i, j int) { b.lines[i], b.lines[j] = b.lines[j], b.lines[i] })
	b.status = BatchInProgress
	b.times[BatchInProgress] = time.Now().Unix()
}

// execute runs up to n more lines of b, as POST /v1/embeddings would answer them.
func (s *Server) execute(b *fakeBatch, n int) {
	st := s.bstate()
	for ; n > 0 && b.next < len(b.lines); n-- {
		if b.expireAfter >= 0 && b.next >= b.expireAfter {
			s.expire(b)
			return
		}
		rng := b.lines[b.next]
		b.next++
		var l struct {
			Body embeddingRequest `json:"body"`
		}
		_ = json.Unmarshal(b.input.data[rng[0]:rng[1]], &l)
		res := lineResult{start: rng[0], end: rng[1], status: http.StatusOK}
		p, status, body := s.validate(&l.Body)
		if status == 0 && s.x.refuse != nil && slices.ContainsFunc(p.texts, s.x.refuse) {
			// As refusedInput, with s.mu already held.
			s.x.refused++
			status, body = http.StatusBadRequest, errBody(s.x.refuseMsg, "invalid_request_error", "", "")
		}
		if status != 0 {
			res.status, res.body = status, body
			b.failed++
			st.stats.LinesFailed++
		} else {
			res.dims = s.dimOverride
			b.completed++
			st.stats.LinesEmbedded++
			st.stats.Inputs += int64(len(p.texts))
			st.stats.Tokens += int64(p.tokens)
		}
		b.results = append(b.results, res)
	}
	if b.expireAfter >= 0 && b.next >= b.expireAfter && b.next < len(b.lines) {
		s.expire(b)
	}
}

// expire reports the lines not yet executed as batch_expired and ends the batch expired.
func (s *Server) expire(b *fakeBatch) {
	for _, rng := range b.lines[b.next:] {
		b.results = append(b.results, lineResult{start: rng[0], end: rng[1]})
		b.failed++
		s.bstate().stats.LinesExpired++
	}
	b.next = len(b.lines)
	s.finish(b, BatchExpired)
}

// finish ends b in state st and creates its output and error files for the lines it executed.
func (s *Server) finish(b *fakeBatch, st string) {
	b.status = st
	b.times[st] = time.Now().Unix()
	var ok, bad bool
	for _, r := range b.results {
		if r.status == http.StatusOK {
			ok = true
		} else {
			bad = true
		}
	}
	state := s.bstate()
	if ok {
		b.output = &fakeFile{id: s.newID("file-fake"), name: "batch_" + b.id + "_output.jsonl", purpose: "batch_output", created: b.times[st], batch: b}
		state.files[b.output.id] = b.output
	}
	if bad {
		b.errFile = &fakeFile{id: s.newID("file-fake"), name: "batch_" + b.id + "_error.jsonl", purpose: "batch_output", created: b.times[st], batch: b, errorsOf: true}
		state.files[b.errFile.id] = b.errFile
	}
}

func isBatchAPI(path string) bool {
	return path == "/v1/files" || strings.HasPrefix(path, "/v1/files/") ||
		path == "/v1/batches" || strings.HasPrefix(path, "/v1/batches/")
}
