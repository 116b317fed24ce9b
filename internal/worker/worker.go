// Package worker is the contract between the controller and the embedder: how a worker pod is
// told what to do (arguments and environment), the plan the planner writes, the exit codes, and the
// result JSON a worker leaves in its termination message. Both sides import it, so neither can drift.
package worker

import (
	"encoding/json"
	"fmt"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Exit codes of the embedder. A Job's podFailurePolicy fails the Job at once on ExitPermanent;
// ExitRetryable counts against backoffLimit.
const (
	ExitOK        = 0
	ExitRetryable = 1
	ExitUsage     = 2
	ExitPermanent = 42
)

// Environment variables a worker pod gets. Secret values come from secretKeyRef, never inline.
const (
	// EnvIngestion holds the JSON of an Ingestion (no secret values, only references).
	EnvIngestion = "VECTORDB_INGESTION"

	EnvOpenAIAPIKey       = "OPENAI_API_KEY"
	EnvPineconeAPIKey     = "PINECONE_API_KEY"
	EnvMetabaseAPIKey     = "METABASE_API_KEY"
	EnvAWSAccessKeyID     = "AWS_ACCESS_KEY_ID"
	EnvAWSSecretKey       = "AWS_SECRET_ACCESS_KEY"
	EnvTerminationLog     = "VECTORDB_TERMINATION_LOG"
	DefaultTerminationLog = "/dev/termination-log"
)

// Ingestion is what a worker needs to know of its CsvIngestion.
type Ingestion struct {
	Name      string                    `json:"name"`
	Namespace string                    `json:"namespace"`
	UID       string                    `json:"uid"`
	TaskID    string                    `json:"taskID"`
	Spec      v1alpha1.CsvIngestionSpec `json:"spec"`
}

// FromObject builds the worker's view of a CsvIngestion.
func FromObject(obj *v1alpha1.CsvIngestion) Ingestion {
	return Ingestion{
		Name:      obj.Name,
		Namespace: obj.Namespace,
		UID:       string(obj.UID),
		TaskID:    obj.EffectiveTaskID(),
		Spec:      obj.Spec,
	}
}

// ObjectID names the S3 objects the ingestion writes (the staged Metabase export and copies, the
// duplicate-id list, dead letters): its task id and its UID, so two ingestions given one
// spec.taskID never write, read or clean up each other's objects. Without a UID (a local run)
// or when the task id is the UID, it is the task id alone.
func (in Ingestion) ObjectID() string {
	if in.UID == "" || in.TaskID == in.UID {
		return in.TaskID
	}
	if in.TaskID == "" {
		return in.UID
	}
	return in.TaskID + "-" + in.UID
}

// Encode returns the JSON for EnvIngestion.
func (in Ingestion) Encode() (string, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return "", fmt.Errorf("encode ingestion: %w", err)
	}
	return string(b), nil
}

// DecodeIngestion parses EnvIngestion.
func DecodeIngestion(s string) (Ingestion, error) {
	var in Ingestion
	if s == "" {
		return in, fmt.Errorf("%s is empty", EnvIngestion)
	}
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return in, fmt.Errorf("decode %s: %w", EnvIngestion, err)
	}
	return in, nil
}

// Names of children, deterministic so a restarted controller finds what it created. Job names
// must fit a label value (63 characters, the Job controller labels pods with them); ConfigMap
// names may be DNS subdomains (253). A longer name is cut and given a hash of the whole.
func PlanJobName(ingestion string) string { return BoundedName(ingestion, "-plan", MaxJobName) }
func PlanConfigMapName(ingestion string) string {
	return BoundedName(ingestion, "-plan", MaxConfigMapName)
}
func CleanupJobName(ingestion string) string { return BoundedName(ingestion, "-cleanup", MaxJobName) }
func SyncJobName(ingestion string) string    { return BoundedName(ingestion, "-sync", MaxJobName) }
func ChunkJobName(ingestion string, index int) string {
	return BoundedName(ingestion, fmt.Sprintf("-chunk-%d", index), MaxJobName)
}

// Labels on every child (DESIGN §2).
const (
	LabelName   = "ingestion.vectordb.io/name"
	LabelUID    = "ingestion.vectordb.io/uid"
	LabelTaskID = "ingestion.vectordb.io/task-id"
	LabelRole   = "ingestion.vectordb.io/role"
	LabelChunk  = "ingestion.vectordb.io/chunk"
	// LabelReleased marks a chunk's Job and pods whose outcome the controller has recorded and
	// let go of. The manager's cache selects children without it, so finished chunks leave the
	// cache (and a pass's cost) while their objects stay until the Job's TTL for people to read.
	LabelReleased = "ingestion.vectordb.io/released"

	RolePlan  = "plan"
	RoleChunk = "chunk"

	// AnnotationName and AnnotationTaskID keep the full values when the labels had to be hashed
	// (a label value is at most 63 characters from a restricted set; a taskID may hold ':').
	AnnotationName   = "ingestion.vectordb.io/name"
	AnnotationTaskID = "ingestion.vectordb.io/task-id"

	// FinalizerOutcome holds a worker pod until the controller has recorded its outcome (the
	// termination message), so neither PodGC nor a Job's deletion can lose it.
	FinalizerOutcome = "ingestion.vectordb.io/outcome"

	// RoleCleanup deletes what the planner staged once the ingestion has ended.
	RoleCleanup = "cleanup"
	// RoleSync deletes the vectors that left the file (spec.sync.deleteMissing) once every
	// chunk has succeeded.
	RoleSync = "sync"
)

// PlanDataKey is the ConfigMap key holding the plan JSON.
const PlanDataKey = "plan.json"

// ChunkArgs is one chunk's assignment, passed as flags to `embedder chunk`.
type ChunkArgs struct {
	Index    int
	Offset   int64 // byte offset of the chunk's first row in the (decompressed) object
	Length   int64 // bytes of the chunk
	FirstRow int64 // 0-based data row number of the chunk's first row
	Rows     int64
	ETag     string
	// Compression of the object as the planner found it (none | gzip); offsets are positions in
	// the decompressed stream, so a gzip chunk must be read from the start.
	Compression string
	// Key, when set, is the object to read instead of the source's: the planner's staged copy
	// (same bucket). ETag is then the staged copy's.
	Key string
	// DuplicatesKey and DuplicatesETag name the planner's list of duplicate-id rows (same
	// bucket), when the file has any.
	DuplicatesKey, DuplicatesETag string
	// Shares of the ingestion's budgets for this chunk.
	RequestsPerMinute float64
	TokensPerMinute   float64
}

// Flags renders the arguments of `embedder chunk`.
func (c ChunkArgs) Flags() []string { return c.flags("chunk") }

// SyncFlags renders the arguments of `embedder sync`: the same reading arguments, over the
// whole file (see Plan.Whole).
func (c ChunkArgs) SyncFlags() []string { return c.flags(RoleSync) }

func (c ChunkArgs) flags(cmd string) []string {
	flags := []string{
		cmd,
		fmt.Sprintf("--index=%d", c.Index),
		fmt.Sprintf("--offset=%d", c.Offset),
		fmt.Sprintf("--length=%d", c.Length),
		fmt.Sprintf("--first-row=%d", c.FirstRow),
		fmt.Sprintf("--rows=%d", c.Rows),
		"--etag=" + c.ETag,
		fmt.Sprintf("--rpm=%g", c.RequestsPerMinute),
		fmt.Sprintf("--tpm=%g", c.TokensPerMinute),
	}
	if c.Compression != "" {
		flags = append(flags, "--compression="+c.Compression)
	}
	if c.Key != "" {
		flags = append(flags, "--key="+c.Key)
	}
	if c.DuplicatesKey != "" {
		flags = append(flags, "--duplicates-key="+c.DuplicatesKey, "--duplicates-etag="+c.DuplicatesETag)
	}
	return flags
}
