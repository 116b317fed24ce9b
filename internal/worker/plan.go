package worker

import (
	"encoding/json"
	"fmt"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// MaxChunks bounds a plan so it fits in one ConfigMap (≈ 12 bytes an offset, far below 1 MiB) and
// the controller's bookkeeping stays small. A bigger file needs a larger rowsPerChunk.
const MaxChunks = 50000

// Plan is what the planner learned of the object, written to ConfigMap <name>-plan.
type Plan struct {
	Bucket      string   `json:"bucket"`
	Key         string   `json:"key"`
	ETag        string   `json:"etag"`
	SizeBytes   int64    `json:"sizeBytes"`
	Compression string   `json:"compression"` // none | gzip (as found, never auto)
	Header      []string `json:"header"`
	// DataOffset is where the first data row starts (after the header line).
	TotalRows    int64 `json:"totalRows"`
	RowsPerChunk int64 `json:"rowsPerChunk"`
	// Offsets has one entry per chunk plus the end: chunk i covers [Offsets[i], Offsets[i+1]).
	// Offsets are in the decompressed byte stream.
	Offsets         []int64 `json:"offsets"`
	EstimatedTokens int64   `json:"estimatedTokens"`
	// EstimatedCostUSD as a decimal string, e.g. "0.30".
	EstimatedCostUSD string `json:"estimatedCostUSD"`
	// BlankRows counts blank lines skipped; they are not rows.
	BlankRows int64 `json:"blankRows,omitempty"`
	// VectorSpace is the outcome of the planner's vector-space guard; nil when it did not run.
	// Its tokens are included in EstimatedTokens.
	VectorSpace *v1alpha1.VectorSpaceStatus `json:"vectorSpace,omitempty"`
	// Staged, when set, is the uncompressed UTF-8 copy of the object the planner wrote (the
	// object was gzip or not UTF-8). Offsets are positions in it, and chunks read it, not Key.
	Staged *StagedObject `json:"staged,omitempty"`
	// Duplicates, when set, lists the rows whose vector (namespace and id) an earlier row already
	// has; chunks skip them and dead-letter them as duplicate_id.
	Duplicates *StagedObject `json:"duplicates,omitempty"`
	// DuplicateRows is how many rows Duplicates lists.
	DuplicateRows int64 `json:"duplicateRows,omitempty"`
	// SourceWarning, when set, says why the source looks cut short (a Metabase export at its row
	// limit, or without its final newline): rows may be missing. With deleteMissing the planner
	// fails instead (reason SourceTruncated).
	SourceWarning string `json:"sourceWarning,omitempty"`
	// SyncEstimate is a dry run's preview of spec.sync (rows to embed, skip, vectors to delete).
	SyncEstimate *v1alpha1.SyncEstimate `json:"syncEstimate,omitempty"`
}

// StagedObject is an object the planner wrote, in the bucket of the source (or of
// metabase.stageTo), pinned to its ETag.
type StagedObject struct {
	Key       string `json:"key"`
	ETag      string `json:"etag"`
	SizeBytes int64  `json:"sizeBytes,omitempty"`
}

// StagedKeys lists the keys of what the planner staged, for cleanup.
func (p *Plan) StagedKeys() []string {
	var keys []string
	for _, o := range []*StagedObject{p.Staged, p.Duplicates} {
		if o != nil && o.Key != "" {
			keys = append(keys, o.Key)
		}
	}
	return keys
}

// Chunks is the number of chunks in the plan.
func (p *Plan) Chunks() int {
	if len(p.Offsets) == 0 {
		return 0
	}
	return len(p.Offsets) - 1
}

// Chunk returns chunk i's byte range and rows.
func (p *Plan) Chunk(i int) (ChunkArgs, error) {
	if i < 0 || i >= p.Chunks() {
		return ChunkArgs{}, fmt.Errorf("chunk %d out of range [0,%d)", i, p.Chunks())
	}
	first := int64(i) * p.RowsPerChunk
	rows := p.RowsPerChunk
	if first+rows > p.TotalRows {
		rows = p.TotalRows - first
	}
	args := ChunkArgs{
		Index:    i,
		Offset:   p.Offsets[i],
		Length:   p.Offsets[i+1] - p.Offsets[i],
		FirstRow: first,
		Rows:     rows,
		ETag:     p.ETag,
		// The plan records what it found; an old plan without it was read as plain text.
		Compression: p.Compression,
	}
	if p.Staged != nil {
		args.Key, args.ETag, args.Compression = p.Staged.Key, p.Staged.ETag, "none"
	}
	if p.Duplicates != nil {
		args.DuplicatesKey, args.DuplicatesETag = p.Duplicates.Key, p.Duplicates.ETag
	}
	return args, nil
}

// Whole is the whole file as one range to read (the sync step reads every row's id): the first
// chunk's start to the last chunk's end, all rows. Duplicates are left out: a duplicate row has
// the id of a row that is read anyway.
func (p *Plan) Whole() ChunkArgs {
	a := ChunkArgs{ETag: p.ETag, Compression: p.Compression, Rows: p.TotalRows}
	if n := p.Chunks(); n > 0 {
		a.Offset, a.Length = p.Offsets[0], p.Offsets[n]-p.Offsets[0]
	}
	if p.Staged != nil {
		a.Key, a.ETag, a.Compression = p.Staged.Key, p.Staged.ETag, "none"
	}
	return a
}

// Validate checks the plan is self-consistent.
func (p *Plan) Validate() error {
	n := p.Chunks()
	if p.RowsPerChunk <= 0 {
		return fmt.Errorf("plan: rowsPerChunk %d must be positive", p.RowsPerChunk)
	}
	if want := (p.TotalRows + p.RowsPerChunk - 1) / p.RowsPerChunk; int64(n) != want {
		return fmt.Errorf("plan: %d chunks for %d rows of %d, want %d", n, p.TotalRows, p.RowsPerChunk, want)
	}
	if n > MaxChunks {
		return fmt.Errorf("plan: %d chunks is more than %d; raise spec.chunking.rowsPerChunk", n, MaxChunks)
	}
	for i := 1; i < len(p.Offsets); i++ {
		if p.Offsets[i] < p.Offsets[i-1] {
			return fmt.Errorf("plan: offsets not increasing at chunk %d", i)
		}
	}
	return nil
}

// Encode returns the plan JSON.
func (p *Plan) Encode() (string, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode plan: %w", err)
	}
	return string(b), nil
}

// DecodePlan parses and validates a plan.
func DecodePlan(s string) (*Plan, error) {
	var p Plan
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("decode plan: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}
