package batchembed

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Record is a chunk's batches, kept durably (Store) and rewritten after every step that creates
// something at OpenAI or sees a batch change state, so that a restarted pod resumes instead of
// submitting again and never loses a finished batch.
type Record struct {
	Version   int    `json:"version"`
	Ingestion string `json:"ingestion"` // UID
	Chunk     int    `json:"chunk"`
	// Generation counts finished runs of this chunk: a chunk run again after one finished starts
	// new batches (their metadata names the generation), not the old ones.
	Generation int `json:"generation"`
	// Passes: pass 0 submits every row; pass n resubmits the rows that expired in pass n-1.
	Passes []Pass `json:"passes"`
	// Batches in creation order.
	Batches []Batch `json:"batches"`
	// Done: the chunk's vectors are upserted and its files deleted.
	Done bool `json:"done,omitempty"`
}

// Pass is one submission pass over the chunk's rows.
type Pass struct {
	// NextRow: rows below it are in a batch of this pass (submission resumes from it).
	NextRow int64 `json:"nextRow"`
	// Submitted: every row of the pass is in a batch.
	Submitted bool `json:"submitted,omitempty"`
}

// Batch is one batch of a chunk as last seen.
type Batch struct {
	Pass  int `json:"pass"`
	Index int `json:"index"` // within the pass
	// Try counts creations refused for the enqueued-token cap (the same input file again).
	Try          int    `json:"try,omitempty"`
	ID           string `json:"id,omitempty"`
	InputFileID  string `json:"inputFileID"`
	OutputFileID string `json:"outputFileID,omitempty"`
	ErrorFileID  string `json:"errorFileID,omitempty"`
	State        string `json:"state"` // OpenAI's status; "uploaded" before the batch exists
	FirstRow     int64  `json:"firstRow"`
	LastRow      int64  `json:"lastRow"`
	Lines        int    `json:"lines"`
	Bytes        int64  `json:"bytes"`
	Tokens       int64  `json:"tokens"`
	Completed    int    `json:"completed,omitempty"`
	Failed       int    `json:"failed,omitempty"`
	// Reason is why a failed batch failed: the provider's code and message.
	Reason string `json:"reason,omitempty"`
	// Claim names the writer (Runner) that is creating the batch, and ClaimedAt (Unix seconds,
	// its clock) since when: set by a conditional write before CreateBatch, so that of two pods
	// of one chunk only one creates it; the other waits for its id (or takes a claim older than
	// Config.ClaimTimeout over: its writer died between claiming and recording the batch).
	Claim     string `json:"claim,omitempty"`
	ClaimedAt int64  `json:"claimedAt,omitempty"`
}

// StateUploaded is a batch whose input file is uploaded but which is not created yet.
const StateUploaded = "uploaded"

// Terminal says whether OpenAI will not change a batch in this state any more.
func Terminal(state string) bool {
	switch state {
	case "completed", "failed", "expired", "cancelled":
		return true
	}
	return false
}

// ErrSteppedBack is a pod that lost a race to another pod of its chunk that already finished the
// chunk's batches (or started their next generation): it stops; the Job retries if it must.
var ErrSteppedBack = errors.New("another pod of this chunk finished its batches, or the cleanup of a cancelled run ended them; this pod stops")

// merged is the outcome of merging a record this writer holds with the one stored.
type merged struct {
	rec Record
	// orphanFiles are input files this writer uploaded for batches the stored record already
	// has from another writer: nobody will create their batches; delete them.
	orphanFiles []string
	// duplicates are batches this writer created that the stored record already has, created by
	// another writer from its claim: cancel them (never collected, so no row is upserted twice).
	duplicates []string
}

// merge combines mine (this writer's record, with changes not yet stored) with stored (what the
// store holds now, written by another pod of the chunk). Every fact in a record is monotone, so
// the merge keeps the furthest of each: the longer pass list, the higher NextRow, Submitted and
// Done once set, the batches of both (by pass and index), and of two entries for one batch the
// one further along (a later try, a created batch over an uploaded file, a later state). Of two
// claims or two uploads for one batch the stored one wins: it was written first. Records of
// another chunk, or a stored record that finished this generation (or started the next) while
// mine did not, are errors: mine steps back.
func merge(mine, stored Record) (merged, error) {
	if stored.Ingestion != mine.Ingestion || stored.Chunk != mine.Chunk {
		return merged{}, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"batch record is now for ingestion %s chunk %d, not %s chunk %d: it was not written by this chunk (delete it to start the chunk's batches afresh)",
			stored.Ingestion, stored.Chunk, mine.Ingestion, mine.Chunk))
	}
	switch {
	case stored.Generation < mine.Generation:
		// This writer started the next generation over a finished record; the stored one is
		// that finished record, rewritten late by its last writer.
		return merged{rec: mine}, nil
	case stored.Generation > mine.Generation || (stored.Done && !mine.Done):
		return merged{}, fmt.Errorf("%w (the stored record is at generation %d, done %t; this pod's at %d)",
			ErrSteppedBack, stored.Generation, stored.Done, mine.Generation)
	}
	out := merged{rec: stored}
	rec := &out.rec
	rec.Done = stored.Done || mine.Done
	rec.Passes = nil
	for i := range max(len(mine.Passes), len(stored.Passes)) {
		var p Pass
		for _, from := range [][]Pass{mine.Passes, stored.Passes} {
			if i < len(from) {
				p.NextRow = max(p.NextRow, from[i].NextRow)
				p.Submitted = p.Submitted || from[i].Submitted
			}
		}
		rec.Passes = append(rec.Passes, p)
	}
	type key struct{ pass, index int }
	byKey := map[key]int{}
	rec.Batches = append([]Batch(nil), stored.Batches...)
	for i, b := range rec.Batches {
		byKey[key{b.Pass, b.Index}] = i
	}
	for _, m := range mine.Batches {
		i, ok := byKey[key{m.Pass, m.Index}]
		if !ok {
			rec.Batches = append(rec.Batches, m)
			continue
		}
		b, orphan, dup := mergeBatch(m, rec.Batches[i])
		rec.Batches[i] = b
		if orphan != "" {
			out.orphanFiles = append(out.orphanFiles, orphan)
		}
		if dup != "" {
			out.duplicates = append(out.duplicates, dup)
		}
	}
	// Creation order: passes in turn, a pass's batches by index.
	slices.SortStableFunc(rec.Batches, func(a, b Batch) int {
		return cmp.Or(cmp.Compare(a.Pass, b.Pass), cmp.Compare(a.Index, b.Index))
	})
	return out, nil
}

// mergeBatch merges two entries for one batch (same pass and index): mine and the stored one.
// It returns the entry to keep, an input file of mine nobody will use, and a batch of mine that
// duplicates the stored one.
func mergeBatch(mine, stored Batch) (keep Batch, orphanFile, duplicate string) {
	if mine.Try != stored.Try {
		// A later try replaced the batch refused for the enqueued-token cap (same input file).
		if mine.Try > stored.Try {
			return mine, "", ""
		}
		return stored, "", ""
	}
	switch {
	case mine.ID == "" && stored.ID == "":
		if mine.InputFileID != stored.InputFileID {
			return stored, mine.InputFileID, "" // two uploads: the stored one was recorded first
		}
		keep = stored
		if keep.Claim == "" {
			keep.Claim, keep.ClaimedAt = mine.Claim, mine.ClaimedAt
		}
		return keep, "", ""
	case mine.ID != "" && stored.ID == "":
		// Mine created it (by its claim, or by taking a stale one over): the stored entry has not
		// caught up. A stored upload of another file is then the orphan, but not mine to delete.
		return mine, "", ""
	case mine.ID == "" && stored.ID != "":
		if mine.InputFileID != stored.InputFileID {
			return stored, mine.InputFileID, ""
		}
		return stored, "", ""
	case mine.ID != stored.ID:
		// Two batches for one: only possible when a claim was taken over from a writer that was
		// not dead. The stored one is what the others collect; mine is cancelled.
		orphan := ""
		if mine.InputFileID != stored.InputFileID {
			orphan = mine.InputFileID
		}
		return stored, orphan, mine.ID
	}
	// The same batch seen at two times: keep the later observation.
	if stateRank(mine.State) > stateRank(stored.State) ||
		(stateRank(mine.State) == stateRank(stored.State) && mine.Completed+mine.Failed > stored.Completed+stored.Failed) {
		return mine, "", ""
	}
	return stored, "", ""
}

// stateRank orders a batch's states as OpenAI moves it through them.
func stateRank(state string) int {
	switch state {
	case StateUploaded:
		return 0
	case "validating":
		return 1
	case "in_progress":
		return 2
	case "finalizing":
		return 3
	case "cancelling":
		return 4
	}
	if Terminal(state) {
		return 5
	}
	return 1 // a state this code does not know: after uploaded, before any it knows
}

// Store keeps a chunk's record. Writes are conditional on the version last read or written, so
// that two pods of one chunk at once (a Job's replacement pod while the old one still runs) never
// overwrite each other's facts: the one that loses re-reads and merges (Runner.save, merge).
type Store interface {
	// Load returns the record and its version, or found false when there is none.
	Load(ctx context.Context) (rec Record, version string, found bool, err error)
	// Save writes rec if the stored record is still at version ("": none is stored) and returns
	// the new version. Someone else's write since then is an error that errors.Is ErrConflict.
	Save(ctx context.Context, rec Record, version string) (string, error)
	Delete(ctx context.Context) error
}

// ErrConflict is a conditional record write that lost: another writer changed the record since
// this one read it.
var ErrConflict = errors.New("the batch record changed since it was read (another pod of this chunk wrote it)")

// S3Store keeps the record as a JSON object, next to the chunk's attempt marker and dead letters.
// Its version is the object's ETag; Save is a PUT with If-Match (or If-None-Match: * when there
// is none), which S3 and MinIO answer 412 when the object changed.
type S3Store struct {
	Client      *s3.Client
	Bucket, Key string
}

// Load implements Store.
func (s S3Store) Load(ctx context.Context) (Record, string, bool, error) {
	out, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.Bucket, Key: &s.Key})
	if err != nil {
		var nk *types.NoSuchKey
		if errors.As(err, &nk) {
			return Record{}, "", false, nil
		}
		return Record{}, "", false, fmt.Errorf("read batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, int64(maxRecordBytes)+1))
	if err != nil {
		return Record{}, "", false, fmt.Errorf("read batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	rec, err := decodeRecord(b, "s3://"+s.Bucket+"/"+s.Key)
	return rec, aws.ToString(out.ETag), err == nil, err
}

// maxRecordBytes bounds a stored record read back (a chunk's is a few hundred bytes a batch).
var maxRecordBytes = 64 << 20

// decodeRecord reads a stored record. One that is not JSON, or larger than maxRecordBytes (b
// holds at most one byte more), is a permanent error: no retry mends it.
func decodeRecord(b []byte, where string) (Record, error) {
	if len(b) > maxRecordBytes {
		return Record{}, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"batch record %s is over %d MiB, far more than a chunk's batches take: it was not written by this chunk (delete it to start the chunk's batches afresh)",
			where, maxRecordBytes>>20))
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"batch record %s is not valid JSON (delete it to start the chunk's batches afresh): %w", where, err))
	}
	return rec, nil
}

// Save implements Store.
func (s S3Store) Save(ctx context.Context, rec Record, version string) (string, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return "", fmt.Errorf("encode batch record: %w", err)
	}
	in := &s3.PutObjectInput{Bucket: &s.Bucket, Key: &s.Key, Body: bytes.NewReader(b), ContentType: aws.String("application/json")}
	if version == "" {
		in.IfNoneMatch = aws.String("*")
	} else {
		in.IfMatch = aws.String(version)
	}
	out, err := s.Client.PutObject(ctx, in)
	if err != nil {
		if conditionFailed(err) {
			return "", fmt.Errorf("write batch record s3://%s/%s: %w: %w", s.Bucket, s.Key, ErrConflict, err)
		}
		return "", fmt.Errorf("write batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	if out.ETag == nil || *out.ETag == "" {
		return "", fmt.Errorf("write batch record s3://%s/%s: the store returned no ETag, which conditional writes need", s.Bucket, s.Key)
	}
	if version == "" {
		// A store that ignores the conditions (MinIO before 2024, some S3-compatible stores)
		// would let two pods of a chunk overwrite each other's batches silently: when the record
		// is created, the same bytes are written again under conditions that must fail. The
		// record exists, so If-None-Match: * must be refused, and If-Match of an ETag it cannot
		// have too. Two small PUTs per record, harmless on a store that honours them.
		if err := s.probeConditions(ctx, b); err != nil {
			return "", err
		}
	}
	return *out.ETag, nil
}

// probeETag is an ETag no object has (an MD5 is 32 hex digits).
const probeETag = `"vectordb-conditional-write-probe"`

// probeConditions checks that the store refuses conditional writes whose condition is false
// (see Save). One it accepts is a permanent error: no retry makes the store safe.
func (s S3Store) probeConditions(ctx context.Context, body []byte) error {
	for _, c := range []struct{ header, match, noneMatch string }{
		{"If-None-Match: *", "", "*"},
		{"If-Match: " + probeETag, probeETag, ""},
	} {
		in := &s3.PutObjectInput{Bucket: &s.Bucket, Key: &s.Key, Body: bytes.NewReader(body), ContentType: aws.String("application/json")}
		if c.match != "" {
			in.IfMatch = aws.String(c.match)
		}
		if c.noneMatch != "" {
			in.IfNoneMatch = aws.String(c.noneMatch)
		}
		_, err := s.Client.PutObject(ctx, in)
		switch {
		case err == nil:
			return worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
				"batch record s3://%s/%s: the object store accepted a write with %s whose condition was false: it ignores S3 conditional writes, which batch mode needs so that two pods of a chunk never overwrite each other's batches (use AWS S3 or a MinIO release from late 2024 on)",
				s.Bucket, s.Key, c.header))
		case !conditionFailed(err):
			return fmt.Errorf("write batch record s3://%s/%s: check that the store honours %s: %w", s.Bucket, s.Key, c.header, err)
		}
	}
	return nil
}

// conditionFailed says whether a conditional PUT lost: 412 Precondition Failed (the object
// changed or, for If-None-Match, exists), 409 ConditionalRequestConflict (S3: another
// conditional write to the key was in flight), or 404 (If-Match on an object deleted meanwhile).
func conditionFailed(err error) bool {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusPreconditionFailed, http.StatusConflict, http.StatusNotFound:
			return true
		}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey":
			return true
		}
	}
	return false
}

// Delete implements Store.
func (s S3Store) Delete(ctx context.Context) error {
	if _, err := s.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.Bucket, Key: &s.Key}); err != nil {
		return fmt.Errorf("delete batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	return nil
}

// own checks, once per runner, that every batch and file the record names is this chunk's at
// OpenAI: a batch's metadata names this ingestion (UID), chunk and batch key, an uploaded file
// not yet in a batch bears the name this chunk gave it. The record lives in the user's bucket:
// a corrupt or forged record must not make the chunk upsert another ingestion's vectors, or
// cancel or delete what is not its own. A batch's file ids are taken from OpenAI, not the record.
func (r *Runner) own(ctx context.Context) error {
	for i := range r.rec.Batches {
		b := &r.rec.Batches[i]
		switch {
		case b.ID != "" && !r.trusted[b.ID]:
			got, err := r.cfg.Client.RetrieveBatch(ctx, b.ID)
			if err != nil {
				return r.classify("retrieve batch "+b.ID, err)
			}
			if key := r.batchKey(*b); !r.ours(got.Metadata, key) {
				return r.foreign(fmt.Errorf("batch %s is not this chunk's batch %s (its metadata names ingestion %q, chunk %q, batch %q)",
					b.ID, key, fmt.Sprint(got.Metadata[MetaIngestion]), fmt.Sprint(got.Metadata[MetaChunk]), fmt.Sprint(got.Metadata[MetaBatch])))
			}
			b.InputFileID = got.InputFileID
			r.update(b, got.Batch)
			r.trust(b.ID, b.InputFileID)
		case b.ID == "" && b.InputFileID != "" && !r.trusted[b.InputFileID]:
			f, err := r.cfg.Client.GetFile(ctx, b.InputFileID)
			if err != nil {
				if apiStatus(err) == http.StatusNotFound {
					continue // gone: nothing to protect, and creating its batch fails
				}
				return r.classify("retrieve file "+b.InputFileID, err)
			}
			if want := r.fileName(*b); f.FileName != want {
				return r.foreign(fmt.Errorf("file %s is not this chunk's batch file %s (it is named %q)", b.InputFileID, want, f.FileName))
			}
			r.trust(b.InputFileID)
		}
	}
	return nil
}

func (r *Runner) ours(m map[string]any, key string) bool {
	return fmt.Sprint(m[MetaIngestion]) == r.cfg.Ingestion && fmt.Sprint(m[MetaChunk]) == strconv.Itoa(r.cfg.Chunk) && fmt.Sprint(m[MetaBatch]) == key
}

func (r *Runner) trust(ids ...string) {
	if r.trusted == nil {
		r.trusted = map[string]bool{}
	}
	for _, id := range ids {
		if id != "" {
			r.trusted[id] = true
		}
	}
}

func (r *Runner) foreign(err error) error {
	return &PermanentError{Reason: worker.ReasonPermanentError, Err: fmt.Errorf(
		"batch record s3 object names what this chunk did not create; it is corrupt or was written by someone else (delete it to start the chunk's batches afresh): %w", err)}
}

// fileName is the name a batch's input file is uploaded under (its first try's key: a batch
// refused for the enqueued-token cap is created again from the same file).
func (r *Runner) fileName(b Batch) string {
	b.Try = 0
	return fmt.Sprintf("vectordb-%s-c%d-%s.jsonl", r.cfg.Ingestion, r.cfg.Chunk, r.batchKey(b))
}
