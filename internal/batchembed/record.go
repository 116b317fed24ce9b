package batchembed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

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

// Store keeps a chunk's record.
type Store interface {
	// Load returns the record, or found false when there is none.
	Load(ctx context.Context) (rec Record, found bool, err error)
	Save(ctx context.Context, rec Record) error
	Delete(ctx context.Context) error
}

// S3Store keeps the record as a JSON object, next to the chunk's attempt marker and dead letters.
type S3Store struct {
	Client      *s3.Client
	Bucket, Key string
}

// Load implements Store.
func (s S3Store) Load(ctx context.Context) (Record, bool, error) {
	out, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.Bucket, Key: &s.Key})
	if err != nil {
		var nk *types.NoSuchKey
		if errors.As(err, &nk) {
			return Record{}, false, nil
		}
		return Record{}, false, fmt.Errorf("read batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 64<<20))
	if err != nil {
		return Record{}, false, fmt.Errorf("read batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	rec, err := decodeRecord(b, "s3://"+s.Bucket+"/"+s.Key)
	return rec, err == nil, err
}

// decodeRecord reads a stored record. One that is not JSON is a permanent error: no retry mends
// it.
func decodeRecord(b []byte, where string) (Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"batch record %s is not valid JSON (delete it to start the chunk's batches afresh): %w", where, err))
	}
	return rec, nil
}

// Save implements Store.
func (s S3Store) Save(ctx context.Context, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode batch record: %w", err)
	}
	if _, err := s.Client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.Bucket, Key: &s.Key, Body: bytes.NewReader(b), ContentType: aws.String("application/json"),
	}); err != nil {
		return fmt.Errorf("write batch record s3://%s/%s: %w", s.Bucket, s.Key, err)
	}
	return nil
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
