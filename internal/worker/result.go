package worker

import (
	"encoding/json"
	"fmt"
	"os"
	"unicode/utf8"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// MaxMessageBytes is the kubelet's limit on a termination message.
const MaxMessageBytes = 4096

// Reasons a worker or a row fails with. Rows also fail with mapping reasons (see the mapping package).
const (
	ReasonPermanentError = "PermanentError"
	ReasonRetryableError = "RetryableError"
	ReasonHeaderMismatch = "HeaderMismatch"
	ReasonSourceChanged  = "SourceChanged"
	ReasonSourceMissing  = "SourceMissing"
	ReasonUnauthorized   = "Unauthorized"
	ReasonQuotaExceeded  = "InsufficientQuota"
	ReasonModelNotFound  = "ModelNotFound"
	ReasonIndexNotFound  = "IndexNotFound"
	ReasonDimension      = "DimensionMismatch"
	ReasonTooManyChunks  = "TooManyChunks"
	// ReasonVectorSpaceMismatch: the namespace holds vectors of another model (the planner's guard).
	ReasonVectorSpaceMismatch = "VectorSpaceMismatch"
	// ReasonVectorSpaceUnverified: the namespace holds vectors, but none the guard could compare.
	ReasonVectorSpaceUnverified = "VectorSpaceUnverified"
	// ReasonDeleteGuard: spec.sync.deleteMissing would delete more than maxDeletePercent of the
	// vectors under the id prefix; nothing was deleted.
	ReasonDeleteGuard = "DeleteGuard"
	// ReasonDeadLetterUnwritable: spec.deadLetter names a location the worker cannot write
	// (AccessDenied, NoSuchBucket). The planner finds it with a probe before any row is embedded;
	// a chunk that meets it later fails permanently rather than paying for its rows again.
	ReasonDeadLetterUnwritable = "DeadLetterUnwritable"
	// ReasonCorruptSource: the object cannot be decoded (a gzip stream that is corrupt or cut
	// short): downloading it again gives the same bytes.
	ReasonCorruptSource = "CorruptSource"
	// ReasonNoKey: a row of the file has no vector id, so the sync step cannot tell its vector
	// from one that left the file; nothing was deleted.
	ReasonNoKey = "NoKey"
	// ReasonSourceTruncated: the source looks cut short (a Metabase export at its row cap, or a
	// stream that ended without its terminator).
	ReasonSourceTruncated = "SourceTruncated"
)

// FailedRow is a sample of a row that failed.
type FailedRow struct {
	Row    int64  `json:"row"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Result is what a worker writes to its termination message. Counters are for this attempt.
type Result struct {
	Role      string `json:"role"` // plan | chunk | cleanup | sync
	Chunk     int    `json:"chunk,omitempty"`
	RowsRead  int64  `json:"rowsRead"`
	Processed int64  `json:"processed"`
	Failed    int64  `json:"failed"`
	Skipped   int64  `json:"skipped"`
	// Resumed rows were upserted by an earlier attempt of the chunk and not embedded again; they
	// are counted in Processed and VectorsUpserted too.
	Resumed         int64 `json:"resumed,omitempty"`
	VectorsUpserted int64 `json:"vectorsUpserted"`
	Tokens          int64 `json:"tokens"`
	Requests        int64 `json:"requests"`
	Retries         int64 `json:"retries"`
	RateLimited     int64 `json:"rateLimited"`
	DurationMillis  int64 `json:"durationMs"`
	// The sync step (role sync): vectors listed under the id prefix, those not in the file, and
	// those deleted.
	Listed  int64 `json:"listed,omitempty"`
	Missing int64 `json:"missing,omitempty"`
	Deleted int64 `json:"deleted,omitempty"`
	// Of Missing: those another source owns (or no one) and were left alone, of which
	// Unmarked carry no owner; Adopted were unmarked and deleted (spec.sync.adoptUnmarked).
	LeftAlone int64 `json:"leftAlone,omitempty"`
	Unmarked  int64 `json:"unmarked,omitempty"`
	Adopted   int64 `json:"adopted,omitempty"`
	// Deletable are the vectors the step found to delete (all deleted unless report only).
	Deletable int64 `json:"deletable,omitempty"`
	// Batch (batch mode): the chunk's batches by state and their lines, from its record.
	Batch         *v1alpha1.BatchStatus `json:"batch,omitempty"`
	Reason        string                `json:"reason,omitempty"`
	Error         string                `json:"error,omitempty"`
	DeadLetterKey string                `json:"deadLetterKey,omitempty"`
	FailedSamples []FailedRow           `json:"failedSamples,omitempty"`
}

// MaxSamples is the most failed-row samples a result carries.
const MaxSamples = 5

// Encode renders the result in at most MaxMessageBytes, dropping samples and cutting strings
// until it fits, so the kubelet never truncates it into invalid JSON.
func (r Result) Encode() []byte {
	if len(r.FailedSamples) > MaxSamples {
		r.FailedSamples = r.FailedSamples[:MaxSamples]
	}
	for i := range r.FailedSamples {
		r.FailedSamples[i].Detail = truncate(r.FailedSamples[i].Detail, 200)
		r.FailedSamples[i].Reason = truncate(r.FailedSamples[i].Reason, 64)
	}
	r.Error = truncate(r.Error, 2048)
	r.Reason = truncate(r.Reason, 64)
	r.DeadLetterKey = truncate(r.DeadLetterKey, 512)
	for {
		b, err := json.Marshal(r)
		if err == nil && len(b) <= MaxMessageBytes {
			return b
		}
		switch {
		case len(r.FailedSamples) > 0:
			r.FailedSamples = r.FailedSamples[:len(r.FailedSamples)-1]
		case len(r.Error) > 64:
			r.Error = truncate(r.Error, len(r.Error)/2)
		default:
			r.DeadLetterKey = ""
			r.Error = truncate(r.Error, 32)
		}
	}
}

// DecodeResult parses a termination message.
func DecodeResult(msg string) (Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return r, fmt.Errorf("decode worker result: %w", err)
	}
	return r, nil
}

// WriteResult writes the result to path (the termination-message path).
func WriteResult(path string, r Result) error {
	if path == "" {
		path = DefaultTerminationLog
	}
	if err := os.WriteFile(path, r.Encode(), 0o644); err != nil {
		return fmt.Errorf("write termination message %s: %w", path, err)
	}
	return nil
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 3 {
		return s[:0]
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
