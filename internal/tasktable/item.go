package tasktable

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
)

// Attribute names of the item (DESIGN §7).
const (
	attrTaskID   = "task_id"
	attrStatus   = "status"
	attrVersion  = "version"
	attrChunks   = "chunks"
	attrUpdated  = "updated_at"
	attrComplete = "completed_at"
	attrProcess  = "chunks_processing"
	attrK8s      = "k8s"
	attrUID      = "uid" // inside k8s: the owning CsvIngestion
)

// itemDoc is the stored form of a task. Writes marshal it (without TaskID and Chunks, which are
// the key and the per-key map); reads unmarshal whole items into it.
type itemDoc struct {
	TaskID             string    `dynamodbav:"task_id,omitempty"`
	Status             string    `dynamodbav:"status"`
	TaskType           string    `dynamodbav:"task_type"`
	Parameters         paramsDoc `dynamodbav:"parameters"`
	TotalRecords       int64     `dynamodbav:"total_records"`
	ProcessedRecords   int64     `dynamodbav:"processed_records"`
	FailedRecords      int64     `dynamodbav:"failed_records"`
	ChunksTotal        int64     `dynamodbav:"chunks_total"`
	ChunksCompleted    int64     `dynamodbav:"chunks_completed"`
	ChunksFailed       int64     `dynamodbav:"chunks_failed"`
	ChunksProcessing   int64     `dynamodbav:"chunks_processing"`
	ProgressPercentage float64   `dynamodbav:"progress_percentage"`
	VectorsUpserted    int64     `dynamodbav:"vectors_upserted"`
	DeletedRecords     int64     `dynamodbav:"deleted_records,omitempty"`
	Batch              *batchDoc `dynamodbav:"batch,omitempty"`
	ErrorMessage       string    `dynamodbav:"error_message,omitempty"`
	CreatedAt          string    `dynamodbav:"created_at,omitempty"`
	UpdatedAt          string    `dynamodbav:"updated_at,omitempty"`
	StartedAt          string    `dynamodbav:"started_at,omitempty"`
	CompletedAt        string    `dynamodbav:"completed_at,omitempty"`
	K8s                *k8sDoc   `dynamodbav:"k8s,omitempty"`
	Version            int64     `dynamodbav:"version"`
	// ExpiresAt is when DynamoDB TTL may delete the item (unix seconds; AttrExpiresAt).
	ExpiresAt int64               `dynamodbav:"expires_at,omitempty"`
	Chunks    map[string]chunkDoc `dynamodbav:"chunks,omitempty"`
}

type paramsDoc struct {
	DataSource string `dynamodbav:"data_source,omitempty"`
	S3Key      string `dynamodbav:"s3_key,omitempty"`
	QuestionID int64  `dynamodbav:"question_id,omitempty"`
	Namespace  string `dynamodbav:"namespace,omitempty"`
	ChunkSize  int64  `dynamodbav:"chunk_size,omitempty"`
	BatchSize  int64  `dynamodbav:"batch_size,omitempty"`
	StartDate  string `dynamodbav:"start_date,omitempty"`
	EndDate    string `dynamodbav:"end_date,omitempty"`
}

type batchDoc struct {
	Batches     int64 `dynamodbav:"batches"`
	Validating  int64 `dynamodbav:"validating,omitempty"`
	InProgress  int64 `dynamodbav:"in_progress,omitempty"`
	Finalizing  int64 `dynamodbav:"finalizing,omitempty"`
	Completed   int64 `dynamodbav:"completed,omitempty"`
	Failed      int64 `dynamodbav:"failed,omitempty"`
	Expired     int64 `dynamodbav:"expired,omitempty"`
	Cancelled   int64 `dynamodbav:"cancelled,omitempty"`
	Lines       int64 `dynamodbav:"lines"`
	LinesDone   int64 `dynamodbav:"lines_done"`
	LinesFailed int64 `dynamodbav:"lines_failed,omitempty"`
}

type k8sDoc struct {
	Namespace string `dynamodbav:"namespace,omitempty"`
	Name      string `dynamodbav:"name,omitempty"`
	UID       string `dynamodbav:"uid,omitempty"`
}

type chunkDoc struct {
	Status           string `dynamodbav:"status"`
	StartRow         int64  `dynamodbav:"start_row"`
	EndRow           int64  `dynamodbav:"end_row"`
	ProcessedRecords int64  `dynamodbav:"processed_records"`
	FailedRecords    int64  `dynamodbav:"failed_records"`
	VectorsUpserted  int64  `dynamodbav:"vectors_upserted"`
	ErrorMessage     string `dynamodbav:"error_message,omitempty"`
}

// topOrder is the order top-level attributes are written in (stable expressions help debugging).
var topOrder = []string{
	"status", "task_type", "parameters", "total_records", "processed_records", "failed_records",
	"chunks_total", "chunks_completed", "chunks_failed", "chunks_processing", "progress_percentage",
	"vectors_upserted", "deleted_records", "batch", "error_message", "created_at", "updated_at", "started_at", "completed_at",
	"k8s", "version", AttrExpiresAt,
}

// AttrExpiresAt is the item's retention attribute (a Number of unix seconds): the table's TTL
// attribute, so DynamoDB deletes a task's item Retention after it ended (or was last written).
const AttrExpiresAt = "expires_at"

// DefaultRetention is how long task items are kept by default (--task-retention).
const DefaultRetention = 90 * 24 * time.Hour

// removedWhenEmpty are state attributes that mirror the newest state exactly: empty means the
// attribute goes away (an error that cleared, a restart). Identity attributes (created_at, k8s)
// are only ever set, so a caller that does not know them does not erase them.
var removedWhenEmpty = map[string]bool{"error_message": true, "started_at": true, "completed_at": true}

// attrUpdate is one top-level action: SET when value is non-nil, REMOVE otherwise.
type attrUpdate struct {
	name  string
	value types.AttributeValue
}

// chunkUpdate is one chunk map entry to SET.
type chunkUpdate struct {
	key   string
	value types.AttributeValue
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(TimeFormat)
}

// parseTime reads TimeFormat, any RFC 3339 time, and the old system's zone-less isoformat() (UTC).
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q is not ISO-8601", s)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func (t *Task) validate() error {
	var problems []string
	if t.TaskID == "" {
		problems = append(problems, "task id is empty")
	} else if len(t.TaskID) > 2048 {
		problems = append(problems, "task id is longer than 2048 bytes")
	}
	if !taskstatus.Valid(t.Status) {
		problems = append(problems, fmt.Sprintf("status %q is not one of %s", t.Status, strings.Join(taskstatus.All(), ", ")))
	}
	if t.TaskType != TaskTypeS3CSV && t.TaskType != TaskTypeMetabase {
		problems = append(problems, fmt.Sprintf("task type %q is not %s or %s", t.TaskType, TaskTypeS3CSV, TaskTypeMetabase))
	}
	if t.Version <= 0 {
		problems = append(problems, "version must be > 0")
	}
	if t.K8s.UID == "" {
		problems = append(problems, "k8s uid is empty (every write is conditional on its owner)")
	}
	for name, n := range map[string]int64{
		"total_records": t.TotalRecords, "processed_records": t.ProcessedRecords, "failed_records": t.FailedRecords,
		"chunks_total": t.ChunksTotal, "chunks_completed": t.ChunksCompleted, "chunks_failed": t.ChunksFailed,
		"chunks_processing": t.ChunksProcessing, "vectors_upserted": t.VectorsUpserted, "deleted_records": t.DeletedRecords,
	} {
		if n < 0 {
			problems = append(problems, fmt.Sprintf("%s is negative (%d)", name, n))
		}
	}
	if t.ProgressPercentage < 0 || t.ProgressPercentage > 100 || t.ProgressPercentage != t.ProgressPercentage {
		problems = append(problems, fmt.Sprintf("progress_percentage %v is not within 0-100", t.ProgressPercentage))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("task %q: %w: %s", t.TaskID, ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// topLevel turns t into the top-level actions of a write; retention > 0 sets expires_at to that
// long after the task completed (or, while it runs, after this write).
func topLevel(t Task, now time.Time, retention ...time.Duration) ([]attrUpdate, error) {
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	doc := itemDoc{
		Status:   t.Status,
		TaskType: t.TaskType,
		Parameters: paramsDoc{
			DataSource: t.Parameters.DataSource, S3Key: t.Parameters.S3Key, QuestionID: t.Parameters.QuestionID,
			Namespace: t.Parameters.Namespace, ChunkSize: t.Parameters.ChunkSize, BatchSize: t.Parameters.BatchSize,
			StartDate: t.Parameters.StartDate, EndDate: t.Parameters.EndDate,
		},
		TotalRecords: t.TotalRecords, ProcessedRecords: t.ProcessedRecords, FailedRecords: t.FailedRecords,
		ChunksTotal: t.ChunksTotal, ChunksCompleted: t.ChunksCompleted, ChunksFailed: t.ChunksFailed,
		ChunksProcessing: t.ChunksProcessing, ProgressPercentage: t.ProgressPercentage,
		VectorsUpserted: t.VectorsUpserted, DeletedRecords: t.DeletedRecords,
		ErrorMessage: truncate(t.ErrorMessage, MaxErrorMessageBytes),
		CreatedAt:    formatTime(t.CreatedAt), UpdatedAt: formatTime(t.UpdatedAt),
		StartedAt: formatTime(t.StartedAt), CompletedAt: formatTime(t.CompletedAt),
		Version: t.Version,
	}
	if t.K8s != (K8sRef{}) {
		doc.K8s = &k8sDoc{Namespace: t.K8s.Namespace, Name: t.K8s.Name, UID: t.K8s.UID}
	}
	if b := t.Batch; b != nil {
		d := batchDoc(*b)
		doc.Batch = &d
	}
	if len(retention) > 0 && retention[0] > 0 {
		base := t.CompletedAt
		if base.IsZero() {
			base = t.UpdatedAt
		}
		doc.ExpiresAt = base.Add(retention[0]).Unix()
	}
	m, err := attributevalue.MarshalMap(doc)
	if err != nil {
		return nil, fmt.Errorf("task %q: encoding: %w", t.TaskID, err)
	}
	var out []attrUpdate
	for _, name := range topOrder {
		if v, ok := m[name]; ok {
			out = append(out, attrUpdate{name: name, value: v})
		} else if removedWhenEmpty[name] {
			out = append(out, attrUpdate{name: name})
		}
	}
	return out, nil
}

// selectChunks validates the delta and keeps the entries the bounds allow, in index order.
func selectChunks(t Task, chunks map[int]ChunkEntry) ([]chunkUpdate, error) {
	if len(chunks) == 0 {
		return nil, nil
	}
	idx := make([]int, 0, len(chunks))
	for i, e := range chunks {
		if i < 0 || int64(i) >= t.ChunksTotal {
			return nil, fmt.Errorf("task %q: %w: chunk %d is outside 0..chunks_total-1 (chunks_total %d)", t.TaskID, ErrInvalid, i, t.ChunksTotal)
		}
		if !taskstatus.Valid(e.Status) {
			return nil, fmt.Errorf("task %q: %w: chunk %d status %q is not one of %s", t.TaskID, ErrInvalid, i, e.Status, strings.Join(taskstatus.All(), ", "))
		}
		if e.StartRow < 0 || e.EndRow < e.StartRow || e.ProcessedRecords < 0 || e.FailedRecords < 0 || e.VectorsUpserted < 0 {
			return nil, fmt.Errorf("task %q: %w: chunk %d has negative counts or end_row < start_row", t.TaskID, ErrInvalid, i)
		}
		idx = append(idx, i)
	}
	sort.Ints(idx)
	whole := t.ChunksTotal <= MaxWholeChunks
	// Above MaxWholeChunks only failed chunks are kept, and none once more than MaxChunkEntries
	// have failed: failed is final for a chunk, so the entries ever written are a subset of the
	// failed set at a time it had at most MaxChunkEntries members.
	if !whole && t.ChunksFailed > MaxChunkEntries {
		return nil, nil
	}
	var out []chunkUpdate
	for _, i := range idx {
		e := chunks[i]
		if !whole && e.Status != taskstatus.Failed {
			continue
		}
		v, err := attributevalue.Marshal(chunkDoc{
			Status: e.Status, StartRow: e.StartRow, EndRow: e.EndRow, ProcessedRecords: e.ProcessedRecords,
			FailedRecords: e.FailedRecords, VectorsUpserted: e.VectorsUpserted,
			ErrorMessage: truncate(e.ErrorMessage, MaxChunkMessageBytes),
		})
		if err != nil {
			return nil, fmt.Errorf("task %q: encoding chunk %d: %w", t.TaskID, i, err)
		}
		out = append(out, chunkUpdate{key: ChunkKey(i), value: v})
	}
	return out, nil
}

// decodeItem reads a stored item, including those the old system wrote.
func decodeItem(item map[string]types.AttributeValue) (*Task, map[string]ChunkEntry, error) {
	var doc itemDoc
	if err := attributevalue.UnmarshalMap(item, &doc); err != nil {
		return nil, nil, fmt.Errorf("decoding task item: %w", err)
	}
	t := &Task{
		TaskID: doc.TaskID, Status: doc.Status, TaskType: doc.TaskType,
		Parameters: Parameters{
			DataSource: doc.Parameters.DataSource, S3Key: doc.Parameters.S3Key, QuestionID: doc.Parameters.QuestionID,
			Namespace: doc.Parameters.Namespace, ChunkSize: doc.Parameters.ChunkSize, BatchSize: doc.Parameters.BatchSize,
			StartDate: doc.Parameters.StartDate, EndDate: doc.Parameters.EndDate,
		},
		TotalRecords: doc.TotalRecords, ProcessedRecords: doc.ProcessedRecords, FailedRecords: doc.FailedRecords,
		ChunksTotal: doc.ChunksTotal, ChunksCompleted: doc.ChunksCompleted, ChunksFailed: doc.ChunksFailed,
		ChunksProcessing: doc.ChunksProcessing, ProgressPercentage: doc.ProgressPercentage,
		VectorsUpserted: doc.VectorsUpserted, DeletedRecords: doc.DeletedRecords, ErrorMessage: doc.ErrorMessage, Version: doc.Version,
	}
	if doc.K8s != nil {
		t.K8s = K8sRef{Namespace: doc.K8s.Namespace, Name: doc.K8s.Name, UID: doc.K8s.UID}
	}
	if doc.Batch != nil {
		b := BatchCounts(*doc.Batch)
		t.Batch = &b
	}
	for _, f := range []struct {
		dst *time.Time
		src string
	}{{&t.CreatedAt, doc.CreatedAt}, {&t.UpdatedAt, doc.UpdatedAt}, {&t.StartedAt, doc.StartedAt}, {&t.CompletedAt, doc.CompletedAt}} {
		v, err := parseTime(f.src)
		if err != nil {
			return nil, nil, fmt.Errorf("decoding task item %q: %w", doc.TaskID, err)
		}
		*f.dst = v
	}
	var chunks map[string]ChunkEntry
	if len(doc.Chunks) > 0 {
		chunks = make(map[string]ChunkEntry, len(doc.Chunks))
		for k, c := range doc.Chunks {
			chunks[k] = ChunkEntry{
				Status: c.Status, StartRow: c.StartRow, EndRow: c.EndRow, ProcessedRecords: c.ProcessedRecords,
				FailedRecords: c.FailedRecords, VectorsUpserted: c.VectorsUpserted, ErrorMessage: c.ErrorMessage,
			}
		}
	}
	return t, chunks, nil
}
