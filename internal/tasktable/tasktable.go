// Package tasktable mirrors an ingestion's task into the DynamoDB task table (DESIGN §7), the item
// the legacy REST API and its clients read. The controller is its only writer.
//
// Ordering: every write carries a monotonic version and is conditional on it. Put of version v
// lands when the item is absent, has no version, holds a version < v, or holds v with the same
// status word: one version names one state (the controller's status.trackingVersion, persisted
// with the status before the mirror), so a re-write of it is idempotent, and it lets a retry
// complete a write whose later calls failed. Every write is also conditional on the item's owner,
// k8s.uid (or on the item being absent): an ingestion never changes another one's item, whatever
// task id it picks (ErrOwnedElsewhere). The status check means an equal version never
// changes the status (a cancellation is not undone). MarkCancelled writes a new state, so it needs
// a version strictly greater than the stored one. A refused write returns ErrStale and changes
// nothing, so an old leader can never move the item backwards.
//
// Chunks: the item's "chunks" map is updated per key (SET chunks.#k = :v), never read, modified and
// written whole. Callers pass only the entries that changed since their last accepted write; a
// process that has not written the task yet (a new leader) passes every entry. After an error
// other than ErrStale the caller keeps its baseline and resends the delta at the same version,
// which completes a partly applied write; ErrStale means a newer state is stored, and its writer
// owns the item from then on.
//
// Bounds: the map holds every chunk when the task has at most MaxWholeChunks chunks, and above
// that only failed chunks, and only while no more than MaxChunkEntries chunks have failed. Chunk
// messages are cut to MaxChunkMessageBytes and the task message to MaxErrorMessageBytes, so the
// item stays near 300 KB at worst, far below DynamoDB's 400 KB.
package tasktable

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// Task types, as the old system named them.
const (
	TaskTypeS3CSV    = "s3_csv_processing"
	TaskTypeMetabase = "metabase_processing"
)

// Bounds of the item (see the package comment).
const (
	MaxWholeChunks       = 1000
	MaxChunkEntries      = 1000
	MaxChunkMessageBytes = 128
	MaxErrorMessageBytes = 2048
)

// TimeFormat is how times are stored: UTC, microseconds, a Z suffix, e.g.
// 2025-01-10T12:00:00.123456Z. It sorts as text, is what the old system's
// datetime.utcnow().isoformat() wrote plus the fixed fraction and the zone, and Python's
// datetime.fromisoformat reads it. Reads also accept the old system's zone-less form as UTC.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// DefaultRegion is used when Config.Region is empty.
const DefaultRegion = "us-east-1"

var (
	// ErrNotFound: no item has this task id.
	ErrNotFound = errors.New("task not found in the task table")
	// ErrStale: the item holds a newer version (or this one with another status); nothing was changed.
	ErrStale = errors.New("stale task write: the item holds a newer state")
	// ErrOwnedElsewhere: the item exists and belongs to another CsvIngestion (its k8s.uid is not the
	// writer's, or it has none): two ingestions share a task id and table. Nothing was changed, and
	// retrying cannot help; the ingestion needs another taskID or table.
	ErrOwnedElsewhere = errors.New("task item belongs to another CsvIngestion (same task id and table, different k8s.uid); nothing was written: give this ingestion another spec.taskID or table")
	// ErrFinished: MarkCancelled found the task already finished; it was left as it is.
	ErrFinished = errors.New("task already finished")
	// ErrUnavailable: the table cannot be used now (missing table, no or rejected credentials,
	// unreachable endpoint, throttled or failing service). Tracking is degraded, not the ingestion.
	ErrUnavailable = errors.New("task table unavailable")
	// ErrInvalid: the caller passed a task or chunk that cannot be written; nothing was written.
	ErrInvalid = errors.New("invalid task")
)

// Config says which table to use and how to reach it.
type Config struct {
	Table string
	// Region defaults to DefaultRegion.
	Region string
	// Endpoint of a DynamoDB-compatible server (dynalite); empty means AWS.
	Endpoint string
	// Credentials; nil means the SDK's default chain (env, shared config, IRSA / Pod Identity, IMDS).
	Credentials aws.CredentialsProvider
	// Retention sets each item's expires_at (the table's TTL attribute) this long after the task
	// ended, or after its last write while it runs; 0: no expires_at.
	Retention time.Duration
}

// Task is the task item without its chunk map.
type Task struct {
	TaskID   string
	Status   string // a taskstatus word
	TaskType string // TaskTypeS3CSV or TaskTypeMetabase
	// Parameters are what the task was asked to do, as the legacy API reports them.
	Parameters Parameters

	TotalRecords     int64
	ProcessedRecords int64
	FailedRecords    int64
	ChunksTotal      int64
	ChunksCompleted  int64
	ChunksFailed     int64
	ChunksProcessing int64
	// ProgressPercentage is 0–100.
	ProgressPercentage float64
	VectorsUpserted    int64
	// DeletedRecords are the vectors spec.sync.deleteMissing deleted (attribute deleted_records,
	// written only when non-zero; the old system's readers ignore it).
	DeletedRecords int64
	// Batch (batch mode) counts the finished chunks' Batch API batches by state and their lines
	// (attribute batch, a map written only when set; the old system's readers ignore it, and
	// the legacy REST API does not show it).
	Batch        *BatchCounts
	ErrorMessage string

	// Zero times are not stored. Put stores UpdatedAt as now when it is zero.
	CreatedAt   time.Time
	UpdatedAt   time.Time
	StartedAt   time.Time
	CompletedAt time.Time

	K8s K8sRef
	// Version orders writes; see the package comment. Must be > 0 to write.
	Version int64
}

// BatchCounts are a batch-mode task's batches by OpenAI's state, and their lines.
type BatchCounts struct {
	Batches, Validating, InProgress, Finalizing, Completed, Failed, Expired, Cancelled int64
	Lines, LinesDone, LinesFailed                                                      int64
}

// Parameters of a task; empty strings and a zero question id are not stored.
type Parameters struct {
	DataSource string // s3_csv | metabase
	S3Key      string
	QuestionID int64
	Namespace  string
	ChunkSize  int64
	BatchSize  int64
	StartDate  string
	EndDate    string
}

// K8sRef names the CsvIngestion behind the task.
type K8sRef struct {
	Namespace string
	Name      string
	UID       string
}

// ChunkEntry is one entry of the item's chunk map.
type ChunkEntry struct {
	Status           string // a taskstatus word; "failed" entries are the ones kept above MaxWholeChunks
	StartRow         int64
	EndRow           int64
	ProcessedRecords int64
	FailedRecords    int64
	VectorsUpserted  int64
	ErrorMessage     string
}

// ChunkKey is the key of chunk i in the item's chunk map, e.g. chunk_0007.
func ChunkKey(i int) string { return fmt.Sprintf("chunk_%04d", i) }

// Client reads and writes one task table.
type Client struct {
	api       *dynamodb.Client
	table     string
	retention time.Duration

	// withChunks remembers task ids whose item is known to hold a chunk map, so that later writes
	// can SET chunks.#k in their first call (DynamoDB refuses a nested SET whose parent is missing).
	// It is only a hint: a failed write forgets the id and the next one creates the map again.
	mu         sync.Mutex
	withChunks map[string]struct{}
}

// maxRemembered bounds the hint set; forgetting costs one extra call on a task's next write.
const maxRemembered = 10000

// New builds a client for cfg.Table. It does not contact the table; see CheckTable.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Table == "" {
		return nil, fmt.Errorf("task table: %w: no table name", ErrInvalid)
	}
	region := cfg.Region
	if region == "" {
		region = DefaultRegion
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(region)}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("task table %s: loading AWS config: %w: %w", cfg.Table, ErrUnavailable, err)
	}
	api := dynamodb.NewFromConfig(awsCfg, func(o *dynamodb.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return NewFromAPI(api, cfg.Table).WithRetention(cfg.Retention), nil
}

// WithRetention makes the client's writes set expires_at (see Config.Retention); it returns c.
func (c *Client) WithRetention(d time.Duration) *Client {
	c.retention = d
	return c
}

// NewFromAPI builds a client on an existing DynamoDB client.
func NewFromAPI(api *dynamodb.Client, table string) *Client {
	return &Client{api: api, table: table, withChunks: map[string]struct{}{}}
}

// Table is the table's name.
func (c *Client) Table() string { return c.table }

func (c *Client) chunksKnown(taskID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.withChunks[taskID]
	return ok
}

func (c *Client) rememberChunks(taskID string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ok {
		delete(c.withChunks, taskID)
		return
	}
	if len(c.withChunks) >= maxRemembered {
		clear(c.withChunks)
	}
	c.withChunks[taskID] = struct{}{}
}
