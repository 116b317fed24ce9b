package v1alpha1

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CsvIngestionSpec says which CSV to read, how its rows become vectors, and where they go.
// Fixed once the resource exists (set at creation or never): the task id, source, mapping,
// target, tracking, dead letter, the embedding model, dimensions and endpoint, rowsPerChunk,
// dryRun, and the worker's image and service account. Changing them would mix vectors, failed
// rows or task items of two configurations, or turn a dry run into a paid one. Suspend, cancel
// (one way), parallelism, the rate budgets and the worker's resources, node selector and
// tolerations may change while it runs.
//
// +kubebuilder:validation:XValidation:rule="has(self.taskID) == has(oldSelf.taskID) && (!has(self.taskID) || self.taskID == oldSelf.taskID)",message="spec.taskID is immutable: it cannot be added, changed or removed after creation (it keys the task item in DynamoDB and the REST API); create a new CsvIngestion for a new task"
// +kubebuilder:validation:XValidation:rule="has(self.tracking) == has(oldSelf.tracking) && (!has(self.tracking) || self.tracking == oldSelf.tracking)",message="spec.tracking is immutable: it cannot be added, changed or removed after creation; create a new CsvIngestion to track elsewhere"
// +kubebuilder:validation:XValidation:rule="!(has(oldSelf.cancel) && oldSelf.cancel) || (has(self.cancel) && self.cancel)",message="spec.cancel cannot be unset: a cancelled ingestion stays cancelled; create a new CsvIngestion to run again"
// +kubebuilder:validation:XValidation:rule="(has(self.dryRun) && self.dryRun) == (has(oldSelf.dryRun) && oldSelf.dryRun)",message="spec.dryRun is immutable: a dry run cannot become a real run or the reverse; create a new CsvIngestion without dryRun to ingest"
// +kubebuilder:validation:XValidation:rule="!has(self.embedding.mode) || self.embedding.mode != 'batch' || has(self.deadLetter)",message="spec.embedding.mode batch needs spec.deadLetter: each chunk records its batches next to its dead letters, so that a restarted pod never submits a batch twice or loses a finished one"
// +kubebuilder:validation:XValidation:rule="has(self.deadLetter) == has(oldSelf.deadLetter) && (!has(self.deadLetter) || self.deadLetter == oldSelf.deadLetter)",message="spec.deadLetter is immutable: it cannot be added, changed or removed after creation, so all failed rows of an ingestion land in one place; create a new CsvIngestion for another location"
// +kubebuilder:validation:XValidation:rule="has(self.worker) && has(self.worker.image) ? (has(oldSelf.worker) && has(oldSelf.worker.image) && self.worker.image == oldSelf.worker.image) : !(has(oldSelf.worker) && has(oldSelf.worker.image))",message="spec.worker.image is immutable: every chunk of an ingestion runs the same embedder; create a new CsvIngestion to use another image"
// +kubebuilder:validation:XValidation:rule="!has(self.sync) || !has(self.sync.deleteMissing) || !self.sync.deleteMissing || (has(self.mapping.idPrefix) && size(self.mapping.idPrefix) > 0)",message="spec.sync.deleteMissing needs spec.mapping.idPrefix: only vectors whose ids start with the prefix (this ingestion's ids) may be deleted, and without a prefix every vector of the namespace would be in scope"
// +kubebuilder:validation:XValidation:rule="!has(self.sync) || !has(self.sync.adoptUnmarked) || !self.sync.adoptUnmarked || (has(self.sync.deleteMissing) && self.sync.deleteMissing)",message="spec.sync.adoptUnmarked only applies with spec.sync.deleteMissing"
// +kubebuilder:validation:XValidation:rule="has(self.worker) && has(self.worker.queueName) ? (has(oldSelf.worker) && has(oldSelf.worker.queueName) && self.worker.queueName == oldSelf.worker.queueName) : !(has(oldSelf.worker) && has(oldSelf.worker.queueName))",message="spec.worker.queueName is immutable: Kueue admits the chunk Jobs of a run through one LocalQueue; create a new CsvIngestion to use another queue"
// +kubebuilder:validation:XValidation:rule="has(self.worker) && has(self.worker.serviceAccountName) ? (has(oldSelf.worker) && has(oldSelf.worker.serviceAccountName) && self.worker.serviceAccountName == oldSelf.worker.serviceAccountName) : !(has(oldSelf.worker) && has(oldSelf.worker.serviceAccountName))",message="spec.worker.serviceAccountName is immutable: the worker's identity (S3, DynamoDB, plan ConfigMap) is fixed for the run; create a new CsvIngestion to run as another service account"
type CsvIngestionSpec struct {
	// TaskID is the key of this ingestion in the DynamoDB task table and the REST API
	// (/api/v1/status/<taskID>), and part of its S3 dead-letter and staging keys. Letters,
	// digits and . _ : - only, starting with a letter or digit, at most 128 characters, e.g.
	// q239:2025-01-10. Defaults to metadata.uid. Fixed at creation.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._:-]*$')",message="spec.taskID may only hold letters, digits and . _ : - and must start with a letter or digit (no '/', spaces or control characters): it is a DynamoDB key, a REST path segment (/api/v1/status/<taskID>) and part of S3 keys"
	TaskID string `json:"taskID,omitempty"`

	// Source is the CSV to ingest.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.source is immutable; create a new CsvIngestion for another file"
	Source SourceSpec `json:"source"`

	// Mapping says how a row becomes an id, a text and metadata.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.mapping is immutable; create a new CsvIngestion for another mapping"
	Mapping MappingSpec `json:"mapping"`

	// Embedding names the OpenAI(-compatible) embedding model and the rate budgets.
	Embedding EmbeddingSpec `json:"embedding"`

	// Target is where the vectors go.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.target is immutable; create a new CsvIngestion for another index"
	Target TargetSpec `json:"target"`

	// Chunking controls how the file is split into Jobs.
	// +optional
	// +kubebuilder:default={}
	Chunking ChunkingSpec `json:"chunking,omitempty"`

	// Tracking mirrors the task into a DynamoDB task table. Fixed at creation.
	// +optional
	Tracking *TrackingSpec `json:"tracking,omitempty"`

	// DeadLetter is where failed rows are written, as CSV with the reason. It uses the source's S3
	// connection (for a Metabase source, that of stageTo). Fixed at creation.
	// +optional
	DeadLetter *DeadLetterSpec `json:"deadLetter,omitempty"`

	// Worker shapes the pods that do the data work.
	// +optional
	Worker WorkerSpec `json:"worker,omitempty"`

	// DryRun plans and estimates only: rows, tokens, cost and the minimum time the budgets allow.
	// Fixed at creation: a dry run is never turned into a paid run (or the reverse) mid-way.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`

	// Suspend creates no new chunk Jobs and suspends running ones; unset it to resume.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// Cancel ends the ingestion: running Jobs are deleted and the phase becomes Cancelled.
	// +optional
	Cancel bool `json:"cancel,omitempty"`

	// Sync says whether rows already in the index unchanged are embedded again (see SyncSpec).
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.sync is immutable; create a new CsvIngestion to sync differently"
	Sync *SyncSpec `json:"sync,omitempty"`
}

// Sync modes.
const (
	SyncFull        = "full"
	SyncIncremental = "incremental"
)

// DefaultMaxDeletePercent is the API default of spec.sync.maxDeletePercent.
const DefaultMaxDeletePercent = 10

// Field limits the CRD enforces that code also needs (a schedule's rendered templates).
const (
	// MaxS3KeyLength is spec.source.s3.key's MaxLength.
	MaxS3KeyLength = 1024
	// MaxMetabaseParameterLength is the longest value of spec.source.metabase.parameters.
	MaxMetabaseParameterLength = 1024
)

// SyncSpec: with spec.sync set (either mode) every vector carries a content hash (of its id,
// namespace, text, the metadata that comes from its row, the model and the dimensions) in
// metadata key content_hash. In incremental mode a chunk
// fetches the stored hashes of each batch's ids first and neither embeds nor upserts rows whose
// hash is unchanged; they count as records.skipped. With deleteMissing, vectors under
// spec.mapping.idPrefix that are no longer in the file are deleted once every chunk succeeded.
type SyncSpec struct {
	// Mode is full (embed every row) or incremental (skip rows whose stored hash is unchanged).
	// +optional
	// +kubebuilder:default=full
	// +kubebuilder:validation:Enum=full;incremental
	Mode string `json:"mode,omitempty"`

	// DeleteMissing deletes, once every chunk has finished and the run would end Completed or
	// PartiallyCompleted, the vectors this source owns under spec.mapping.idPrefix (required with
	// it, in a prefix-free form such as "q1.") in the namespaces the file writes to whose ids are
	// no longer in the file. Every vector an ingestion with spec.sync writes carries its owner,
	// the exact id prefix, in metadata key id_prefix; a <name>-sync Job lists the ids under the
	// prefix, fetches the owner of each one the file lacks, and deletes only those owned by this
	// prefix. Vectors of other sources (another owner, or none) are counted in
	// status.records.leftAlone and left alone. Rows that failed keep their vectors (the ids come
	// from the file); a row without an id stops the step (MissingDeleted reason NoKey). The step
	// waits while another ingestion with the same index, namespace and prefix runs, and is skipped
	// (Superseded) when a newer one already finished. Never after a Failed or Cancelled run,
	// never in a dry run (which reports what it would delete in status.estimate.sync); held while
	// spec.suspend is set.
	// +optional
	DeleteMissing bool `json:"deleteMissing,omitempty"`

	// AdoptUnmarked also deletes vectors without an owner marker whose ids are the id prefix
	// followed by text that contains none of the separators . : / - _ # | (else the id may be
	// another source's nested under this prefix, e.g. "q1.b-7" of prefix "q1.b-"): the
	// vectors this source wrote before the marker existed. Off by default; set it on one run
	// after upgrading (see docs/incremental.md), not on a schedule's template: another writer's
	// unmarked ids of that form would be deleted too.
	// +optional
	AdoptUnmarked bool `json:"adoptUnmarked,omitempty"`

	// Timeout bounds one attempt of the <name>-sync Job. Left unset it is derived from the plan:
	// the rows to read and the vectors to list, at a conservative rate, per namespace listed in
	// parallel (see docs/incremental.md), at least 10m.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="spec.sync.timeout must be a duration of at least 1m, e.g. 2h"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// MaxDeletePercent is the delete guard: when the vectors to delete are more than this
	// percentage of this source's vectors under the id prefix, nothing is deleted and the
	// ingestion fails with reason DeleteGuard (a truncated export must not wipe an index). To
	// delete more, create a new CsvIngestion with a higher value (spec.sync is immutable); 100
	// turns the guard off. 0 only reports: the sync step counts what it would delete, deletes
	// nothing, and the run completes with MissingDeleted False, reason ReportOnly.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxDeletePercent *int32 `json:"maxDeletePercent,omitempty"`
}

// MaxDeletePercentOrDefault is spec.sync.maxDeletePercent, or its default when unset.
func (s *SyncSpec) MaxDeletePercentOrDefault() int32 {
	if s == nil || s.MaxDeletePercent == nil {
		return DefaultMaxDeletePercent
	}
	return *s.MaxDeletePercent
}

// DeletesMissing reports whether the ingestion deletes vectors that left the file.
func (s *CsvIngestionSpec) DeletesMissing() bool {
	return s.Sync != nil && s.Sync.DeleteMissing
}

// SourceSpec is exactly one of s3 or metabase, plus how the CSV is encoded.
// +kubebuilder:validation:XValidation:rule="has(self.s3) != has(self.metabase)",message="set exactly one of spec.source.s3 or spec.source.metabase"
type SourceSpec struct {
	// S3 is a CSV object in S3 or an S3-compatible store.
	// +optional
	S3 *S3Source `json:"s3,omitempty"`

	// Metabase is a saved question whose CSV export is staged to S3 first.
	// +optional
	Metabase *MetabaseSource `json:"metabase,omitempty"`

	// CSV says how the file is encoded.
	// +optional
	// +kubebuilder:default={}
	CSV CSVFormat `json:"csv,omitempty"`
}

// S3Connection says how to reach an S3 store.
type S3Connection struct {
	// Region of the bucket.
	// +optional
	// +kubebuilder:default="us-east-1"
	// +kubebuilder:validation:MaxLength=64
	Region string `json:"region,omitempty"`

	// Endpoint of an S3-compatible store such as MinIO; path-style addressing is used when set.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://`
	Endpoint string `json:"endpoint,omitempty"`

	// CredentialsSecretRef names a Secret with an access key; without it the pod's identity
	// (IRSA, EKS Pod Identity, instance profile) is used.
	// +optional
	CredentialsSecretRef *S3CredentialsSecretRef `json:"credentialsSecretRef,omitempty"`
}

// S3CredentialsSecretRef names a Secret holding an S3 access key pair.
type S3CredentialsSecretRef struct {
	// Name of the Secret in the ingestion's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// AccessKeyIDKey is the Secret key holding the access key id.
	// +optional
	// +kubebuilder:default="AWS_ACCESS_KEY_ID"
	// +kubebuilder:validation:MaxLength=253
	AccessKeyIDKey string `json:"accessKeyIDKey,omitempty"`

	// SecretAccessKeyKey is the Secret key holding the secret access key.
	// +optional
	// +kubebuilder:default="AWS_SECRET_ACCESS_KEY"
	// +kubebuilder:validation:MaxLength=253
	SecretAccessKeyKey string `json:"secretAccessKeyKey,omitempty"`
}

// SecretKeyRef names one key of a Secret in the ingestion's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key in the Secret.
	// +optional
	// +kubebuilder:default="api-key"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// S3Source is one CSV object.
type S3Source struct {
	// Bucket holding the object.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`

	// Key of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Key string `json:"key"`

	// StageKeyPrefix is where, in the same bucket, the planner writes what it stages: the
	// decompressed UTF-8 copy of a gzip or non-UTF-8 object (<prefix><taskID>-<uid>.utf8.csv) and the
	// list of duplicate-id rows (<prefix><taskID>-<uid>.duplicates). Needed only then; the worker's S3
	// identity must be allowed to write and delete there. Staged objects are deleted when the
	// ingestion ends.
	// +optional
	// +kubebuilder:default="vectordb-staging/"
	// +kubebuilder:validation:MaxLength=512
	StageKeyPrefix string `json:"stageKeyPrefix,omitempty"`

	S3Connection `json:",inline"`
}

// MetabaseSource is a Metabase saved question exported as CSV.
type MetabaseSource struct {
	// URL of the Metabase instance.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://`
	URL string `json:"url"`

	// QuestionID is the saved question (card) id.
	// +kubebuilder:validation:Minimum=1
	QuestionID int64 `json:"questionID"`

	// Parameters fill the question's template tags, e.g. Start_Date; each value at most 1,024
	// characters.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(self[k]) <= 1024)",message="spec.source.metabase.parameters: each value must be at most 1024 characters"
	Parameters map[string]string `json:"parameters,omitempty"`

	// APIKeySecretRef names the Metabase API key.
	APIKeySecretRef SecretKeyRef `json:"apiKeySecretRef"`

	// StageTo is where the export is written before it is planned.
	StageTo S3Stage `json:"stageTo"`

	// ExportRowLimit is the most rows the Metabase instance exports (its MB_DOWNLOAD_ROW_LIMIT;
	// 1,048,575 by default). An export of exactly this many rows, or one whose stream ends
	// without its final newline, is taken as cut short: with spec.sync.deleteMissing planning
	// fails with reason SourceTruncated (the missing rows would be deleted); without it the run
	// goes on with the condition SourceTruncated saying rows may be missing.
	// +optional
	// +kubebuilder:default=1048575
	// +kubebuilder:validation:Minimum=1
	ExportRowLimit int64 `json:"exportRowLimit,omitempty"`
}

// DefaultMetabaseExportRowLimit is Metabase's default download row limit.
const DefaultMetabaseExportRowLimit = 1048575

// S3Stage is a bucket and prefix where a Metabase export is staged.
type S3Stage struct {
	// Bucket to stage into.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`

	// KeyPrefix of the staged object; the object is <keyPrefix><taskID>-<uid>.csv.
	// +optional
	// +kubebuilder:default="staged/"
	// +kubebuilder:validation:MaxLength=512
	KeyPrefix string `json:"keyPrefix,omitempty"`

	S3Connection `json:",inline"`
}

// CSVFormat says how the file is encoded.
type CSVFormat struct {
	// Delimiter is the one-character field separator.
	// +optional
	// +kubebuilder:default=","
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1
	Delimiter string `json:"delimiter,omitempty"`

	// Compression of the object: auto looks at the first bytes (gzip magic) and the key suffix.
	// A gzip object is decompressed once by the planner into a staged copy (see
	// S3Source.stageKeyPrefix) that the chunks read with ranged GETs.
	// +optional
	// +kubebuilder:default=auto
	// +kubebuilder:validation:Enum=auto;none;gzip
	Compression string `json:"compression,omitempty"`

	// Encoding of the text: utf-8 (a BOM is dropped; bytes that are not UTF-8 fail their row as
	// invalid_utf8), latin-1 (ISO 8859-1), windows-1252, or utf-16 (byte order from the BOM,
	// little-endian without one). Any encoding but utf-8 is converted to UTF-8 once by the planner
	// into a staged copy, like gzip.
	// +optional
	// +kubebuilder:default=utf-8
	// +kubebuilder:validation:Enum=utf-8;latin-1;windows-1252;utf-16
	Encoding string `json:"encoding,omitempty"`
}

// MappingSpec says how a row becomes a vector record.
// +kubebuilder:validation:XValidation:rule="has(self.textColumn) != has(self.textTemplate)",message="set exactly one of spec.mapping.textColumn or spec.mapping.textTemplate"
type MappingSpec struct {
	// IDColumn holds the row's id. Left empty, the column named "id" is used when the header has
	// one; otherwise the id is derived from the whole row: the hex of the first 16 bytes of SHA-256
	// over its fields (each as an 8-byte big-endian length and its bytes), so a re-run of the same
	// file writes the same ids, and identical rows are duplicates.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	IDColumn string `json:"idColumn,omitempty"`

	// IDPrefix is put before the id to form the vector id (legacy: "<question_id>.").
	// +optional
	// +kubebuilder:validation:MaxLength=256
	IDPrefix string `json:"idPrefix,omitempty"`

	// TextColumn holds the text to embed.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	TextColumn string `json:"textColumn,omitempty"`

	// TextTemplate is a Go template over the row's columns, e.g. "{{.title}}: {{.body}}".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	TextTemplate string `json:"textTemplate,omitempty"`

	// Sanitize is how text is cleaned: none, basic (HTML, entities, whitespace) or legacy (the old
	// service's sanitize_text exactly: tags, entities, dates rewritten, whitespace, character filter).
	// +optional
	// +kubebuilder:default=basic
	// +kubebuilder:validation:Enum=none;basic;legacy
	Sanitize string `json:"sanitize,omitempty"`

	// NamespaceColumn routes each row to the Pinecone namespace named in that column.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	NamespaceColumn string `json:"namespaceColumn,omitempty"`

	// Metadata says which columns become vector metadata.
	// +optional
	// +kubebuilder:default={}
	Metadata MetadataSpec `json:"metadata,omitempty"`

	// OverlongText is what happens to a text longer than the model takes (8,191 tokens, less a
	// margin of 64): fail dead-letters the row with reason too_many_tokens; truncate embeds the
	// text's first 8,127 tokens, cut at a token boundary.
	// +optional
	// +kubebuilder:default=fail
	// +kubebuilder:validation:Enum=fail;truncate
	OverlongText string `json:"overlongText,omitempty"`
}

// MetadataSpec selects and shapes vector metadata.
// +kubebuilder:validation:XValidation:rule="!has(self.format) || self.format != 'legacy' || !has(self.inferTypes) || !self.inferTypes",message="spec.mapping.metadata.inferTypes cannot be used with format legacy: the old service stored every column as a string"
// +kubebuilder:validation:XValidation:rule="!has(self.include) || self.include != 'columns' || (has(self.columns) && size(self.columns) > 0)",message="spec.mapping.metadata.columns must list at least one column when include is columns"
type MetadataSpec struct {
	// Include is all (every column but id and text, less exclude), columns (only those listed) or
	// none.
	// +optional
	// +kubebuilder:default=all
	// +kubebuilder:validation:Enum=all;columns;none
	Include string `json:"include,omitempty"`

	// Columns to include when include is columns.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	Columns []string `json:"columns,omitempty"`

	// Exclude lists columns never put in metadata.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=256
	// +listType=set
	Exclude []string `json:"exclude,omitempty"`

	// InferTypes stores numbers and booleans as such instead of strings.
	// +optional
	InferTypes bool `json:"inferTypes,omitempty"`

	// TextField is the metadata key of the sanitized text; empty leaves the text out.
	// +optional
	// +kubebuilder:default=text
	// +kubebuilder:validation:MaxLength=256
	TextField string `json:"textField,omitempty"`

	// TextMaxChars cuts the text stored in metadata.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=40000
	TextMaxChars int32 `json:"textMaxChars,omitempty"`

	// Format is the shape of the metadata. standard: columns (typed with inferTypes), the fixed
	// fields with chunk_id and record_index as numbers, the id column left out, a CSV column named
	// like a fixed field rejected. legacy: exactly what the old service wrote (docs/migration.md):
	// text, source, s3_key, chunk_id "chunk_%04d", record_index within the chunk, task_id,
	// question_id, row_id as read, processed_at with microseconds, then every other column
	// (the id included) as a string, skipped when empty or already present.
	// +optional
	// +kubebuilder:default=standard
	// +kubebuilder:validation:Enum=standard;legacy
	Format string `json:"format,omitempty"`
}

// EmbeddingSpec names the model and the budgets shared by all of the ingestion's chunks.
// +kubebuilder:validation:XValidation:rule="has(self.model)",message="spec.embedding.model is required: name the model the index's vectors were made with (the old service used text-embedding-ada-002); vectors of two models cannot share an index"
// +kubebuilder:validation:XValidation:rule="self.model == oldSelf.model",message="spec.embedding.model is immutable: vectors of two models cannot share an index"
// +kubebuilder:validation:XValidation:rule="has(self.dimensions) == has(oldSelf.dimensions) && (!has(self.dimensions) || self.dimensions == oldSelf.dimensions)",message="spec.embedding.dimensions is immutable"
// +kubebuilder:validation:XValidation:rule="has(self.baseURL) == has(oldSelf.baseURL) && (!has(self.baseURL) || self.baseURL == oldSelf.baseURL)",message="spec.embedding.baseURL is immutable"
// +kubebuilder:validation:XValidation:rule="(has(self.mode) ? self.mode : 'online') == (has(oldSelf.mode) ? oldSelf.mode : 'online')",message="spec.embedding.mode is immutable: batches already submitted (or rows already embedded online) belong to the run; create a new CsvIngestion to embed the other way"
// +kubebuilder:validation:XValidation:rule="!has(self.batch) || (has(self.mode) && self.mode == 'batch')",message="spec.embedding.batch only applies with spec.embedding.mode: batch"
// +kubebuilder:validation:XValidation:rule="!has(self.dimensions) || self.dimensions == 0 || !self.model.startsWith('text-embedding-ada-')",message="spec.embedding.dimensions is only accepted by models that can shorten their vectors (text-embedding-3-*); text-embedding-ada-002 always returns 1536 dimensions, so leave dimensions unset"
type EmbeddingSpec struct {
	// Model is the embedding model. Required, with no default: vectors of two models (e.g.
	// text-embedding-ada-002 and text-embedding-3-small, both 1,536 dimensions) cannot share an
	// index, so name the model the index already holds (the old service used
	// text-embedding-ada-002). Optional in the schema only so that the rule on embedding answers a
	// missing model with that explanation rather than a bare "Required value".
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Model string `json:"model,omitempty"`

	// Dimensions shortens text-embedding-3-* vectors; 0 keeps the model's size.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=8192
	Dimensions int32 `json:"dimensions,omitempty"`

	// BaseURL of an OpenAI-compatible endpoint; empty means OpenAI.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://`
	BaseURL string `json:"baseURL,omitempty"`

	// APIKeySecretRef names the API key.
	APIKeySecretRef SecretKeyRef `json:"apiKeySecretRef"`

	// RequestsPerMinute is the request budget of the whole ingestion, split across running chunks.
	// With the manager's rate leases on, it is the budget of the key: ingestions with the same
	// key Secret, baseURL and model in the namespace share the smallest one they declare. An
	// EmbeddingBudget claiming the key Secret or namespace and listing the model replaces it
	// (this field then only bounds a chunk before its first lease and after losing the manager).
	// +optional
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	RequestsPerMinute int32 `json:"requestsPerMinute,omitempty"`

	// TokensPerMinute is the token budget of the whole ingestion, split across running chunks
	// (with rate leases: shared with the key's other ingestions, as requestsPerMinute).
	// +optional
	// +kubebuilder:default=1000000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	TokensPerMinute int64 `json:"tokensPerMinute,omitempty"`

	// MaxInputsPerRequest caps the inputs in one embeddings request.
	// +optional
	// +kubebuilder:default=2048
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2048
	MaxInputsPerRequest int32 `json:"maxInputsPerRequest,omitempty"`

	// Mode is online (the embeddings endpoint, within requestsPerMinute and tokensPerMinute) or
	// batch (OpenAI's Batch API: half the price, its own queue quota, results within 24 hours;
	// needs spec.deadLetter, where each chunk records its batches). Immutable.
	// +optional
	// +kubebuilder:default=online
	// +kubebuilder:validation:Enum=online;batch
	Mode string `json:"mode,omitempty"`

	// Batch tunes batch mode.
	// +optional
	Batch *EmbeddingBatchSpec `json:"batch,omitempty"`
}

// Embedding modes.
const (
	EmbeddingOnline = "online"
	EmbeddingBatch  = "batch"
)

// EmbeddingBatchSpec tunes batch mode.
type EmbeddingBatchSpec struct {
	// MaxEnqueuedTokens bounds the tokens of the ingestion's batches open at once (split across
	// running chunks): OpenAI caps enqueued tokens per model and organisation (3,000,000 for
	// text-embedding-3-small at tier 1); a batch over the cap fails and is submitted again once
	// others finish, so set it to your tier's cap less what other work enqueues.
	// +optional
	// +kubebuilder:default=3000000
	// +kubebuilder:validation:Minimum=10000
	// +kubebuilder:validation:Maximum=100000000000
	MaxEnqueuedTokens int64 `json:"maxEnqueuedTokens,omitempty"`

	// PollInterval is how often a chunk asks OpenAI about its open batches.
	// +optional
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="spec.embedding.batch.pollInterval must be between 1s and 1h, e.g. 1m"
	PollInterval metav1.Duration `json:"pollInterval,omitempty"`

	// MaxResubmits bounds how often the lines of an expired batch (OpenAI did not run them within
	// 24 hours) are submitted again; lines still expired after that are dead-lettered.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	MaxResubmits *int32 `json:"maxResubmits,omitempty"`
}

// TargetSpec is where vectors are written.
type TargetSpec struct {
	// Pinecone index.
	Pinecone PineconeTarget `json:"pinecone"`
}

// PineconeTarget is a Pinecone index and namespace.
type PineconeTarget struct {
	// Index name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=45
	Index string `json:"index"`

	// Namespace in the index; empty is the default namespace (the old system used v2).
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Namespace string `json:"namespace,omitempty"`

	// Host of the index; found with DescribeIndex when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Host string `json:"host,omitempty"`

	// APIKeySecretRef names the Pinecone API key.
	APIKeySecretRef SecretKeyRef `json:"apiKeySecretRef"`

	// BatchSize is the most vectors in one upsert.
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	BatchSize int32 `json:"batchSize,omitempty"`

	// AllowMixedVectorSpaces skips the vector-space guard. Without it, before the first write
	// into a namespace that already holds vectors, the planner fetches a few stored vectors (ids
	// the file also has, else ids listed under the id prefix or in the namespace), re-embeds their
	// stored text with spec.embedding's model and dimensions, and fails the ingestion (reason
	// VectorSpaceMismatch) when they do not match, or (reason VectorSpaceUnverified) when the
	// namespace holds vectors but none with a stored text to compare.
	// +optional
	AllowMixedVectorSpaces bool `json:"allowMixedVectorSpaces,omitempty"`
}

// ChunkingSpec splits the file into Jobs.
type ChunkingSpec struct {
	// RowsPerChunk is the rows each chunk Job handles; fixed once the resource exists.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.chunking.rowsPerChunk is immutable: the plan depends on it"
	RowsPerChunk int32 `json:"rowsPerChunk,omitempty"`

	// Parallelism is the most chunk Jobs running at once.
	// +optional
	// +kubebuilder:default=4
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	Parallelism int32 `json:"parallelism,omitempty"`

	// ChunkTimeout bounds one attempt of a chunk (the Job's activeDeadlineSeconds).
	// +optional
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="spec.chunking.chunkTimeout must be a positive duration of at least 1s, e.g. 30m"
	ChunkTimeout metav1.Duration `json:"chunkTimeout,omitempty"`

	// RetriesPerChunk is the Job's backoffLimit.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	RetriesPerChunk int32 `json:"retriesPerChunk,omitempty"`

	// MaxFailedRowsPercent of the file's rows may fail and the ingestion still end
	// PartiallyCompleted rather than Failed.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxFailedRowsPercent int32 `json:"maxFailedRowsPercent,omitempty"`
}

// TrackingSpec mirrors the task elsewhere.
type TrackingSpec struct {
	// DynamoDB task table.
	// +optional
	DynamoDB *DynamoDBTracking `json:"dynamoDB,omitempty"`
}

// DynamoDBTracking is a DynamoDB task table (partition key task_id).
type DynamoDBTracking struct {
	// Table name.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=255
	Table string `json:"table"`

	// Region of the table.
	// +optional
	// +kubebuilder:default="us-east-1"
	// +kubebuilder:validation:MaxLength=64
	Region string `json:"region,omitempty"`

	// Endpoint of a DynamoDB-compatible server; empty means AWS.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^https?://`
	Endpoint string `json:"endpoint,omitempty"`
}

// DeadLetterSpec is where failed rows go.
type DeadLetterSpec struct {
	// Bucket for dead-letter objects.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=63
	Bucket string `json:"bucket"`

	// KeyPrefix; objects are <keyPrefix><taskID>-<uid>/chunk-NNNN.csv (the uid keeps two ingestions with one task id apart).
	// +optional
	// +kubebuilder:default="failed/"
	// +kubebuilder:validation:MaxLength=512
	KeyPrefix string `json:"keyPrefix,omitempty"`
}

// WorkerSpec shapes the planner and chunk pods.
type WorkerSpec struct {
	// Image of the embedder; defaults to the operator's configured embedder image. Fixed at
	// creation.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// ServiceAccountName the worker pods run as (S3 and DynamoDB identity, plan ConfigMap writes).
	// Fixed at creation.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Resources of the worker container. When it sets none, the operator's default applies
	// (--worker-resources, Helm value workers.resources); when it sets any, it is used whole.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// NodeSelector of the worker pods.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the worker pods.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// QueueName hands the chunk Jobs to Kueue: they carry the kueue.x-k8s.io/queue-name label
	// with this LocalQueue's name and are created suspended, and Kueue starts each one when it
	// admits it. The operator then never unsuspends nor suspends them: spec.suspend and a lowered
	// parallelism withdraw (delete) the chunk Jobs still queued, and the admitted ones run to
	// the end. The planner, sync and cleanup Jobs are not queued. Fixed at creation.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	QueueName string `json:"queueName,omitempty"`
}

// Phase is where an ingestion is in its life.
// +kubebuilder:validation:Enum=Pending;Planning;ProcessingChunks;Completed;PartiallyCompleted;Failed;Cancelled
type Phase string

const (
	PhasePending            Phase = "Pending"
	PhasePlanning           Phase = "Planning"
	PhaseProcessingChunks   Phase = "ProcessingChunks"
	PhaseCompleted          Phase = "Completed"
	PhasePartiallyCompleted Phase = "PartiallyCompleted"
	PhaseFailed             Phase = "Failed"
	PhaseCancelled          Phase = "Cancelled"
)

// Terminal reports whether no more work will happen in this phase.
func (p Phase) Terminal() bool {
	switch p {
	case PhaseCompleted, PhasePartiallyCompleted, PhaseFailed, PhaseCancelled:
		return true
	}
	return false
}

// Condition types.
const (
	ConditionPlanned          = "Planned"
	ConditionComplete         = "Complete"
	ConditionFailed           = "Failed"
	ConditionSuspended        = "Suspended"
	ConditionTrackingDegraded = "TrackingDegraded"
	// ConditionBlocked is True while the API server refuses what the controller must create or
	// change (a ResourceQuota, an admission webhook, RBAC); it carries the server's message.
	ConditionBlocked = "Blocked"
	// ConditionMissingDeleted follows spec.sync.deleteMissing's step: False with reason Deleting
	// while the <name>-sync Job runs (Waiting or Suspended while it is held), True (reason
	// Deleted) with the counts once it finished, and on every other end of a run with
	// deleteMissing False with the reason nothing or not all was deleted: DeleteGuard, NoKey,
	// ReportOnly, Superseded, SourceTruncated, RunFailed, Cancelled or the Job's failure.
	ConditionMissingDeleted = "MissingDeleted"
	// ConditionSourceTruncated is True when the source looks cut short (a Metabase export at its
	// row limit, or without its final newline) and the run went on without deleteMissing: rows
	// may be missing.
	ConditionSourceTruncated = "SourceTruncated"
	// ConditionBatchCleanup (batch mode) follows the cleanup Job of an ended run: True once it
	// cancelled the open batches and deleted their files at OpenAI, False with what was left
	// behind when it failed.
	ConditionBatchCleanup = "BatchCleanup"
)

// CsvIngestionStatus is derived from the ingestion's Jobs and plan on every reconcile. Its size is
// bounded whatever the size of the file.
type CsvIngestionStatus struct {
	// Phase of the ingestion.
	// +optional
	Phase Phase `json:"phase,omitempty"`

	// TaskID in effect (spec.taskID or metadata.uid).
	// +optional
	TaskID string `json:"taskID,omitempty"`

	// ObservedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Planned, Complete, Failed, Suspended, TrackingDegraded, Blocked, MissingDeleted,
	// SourceTruncated.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Source as planned.
	// +optional
	Source *SourceStatus `json:"source,omitempty"`

	// Plan pins the plan the ingestion started with: once set, a missing or different plan
	// ConfigMap fails the ingestion (reason PlanChanged) instead of planning again.
	// +optional
	Plan *PlanFingerprint `json:"plan,omitempty"`

	// Estimate of the work, from the plan.
	// +optional
	Estimate *Estimate `json:"estimate,omitempty"`

	// Chunks counts chunks by state.
	// +optional
	Chunks ChunkCounts `json:"chunks,omitempty"`

	// Progress is "<finished chunks>/<total chunks>" for kubectl.
	// +optional
	Progress string `json:"progress,omitempty"`

	// CompletedChunks lists finished chunk indexes as compact ranges, e.g. "0-41,43-55".
	// +optional
	CompletedChunks string `json:"completedChunks,omitempty"`

	// FailedChunkIndexes lists every failed chunk index as compact ranges.
	// +optional
	FailedChunkIndexes string `json:"failedChunkIndexes,omitempty"`

	// FailedChunks details failed chunks, at most 50.
	// +optional
	// +kubebuilder:validation:MaxItems=50
	FailedChunks []FailedChunk `json:"failedChunks,omitempty"`

	// Records counts rows.
	// +optional
	Records RecordCounts `json:"records,omitempty"`

	// Usage adds up the chunks' API usage.
	// +optional
	Usage *Usage `json:"usage,omitempty"`

	// Batch (batch mode) adds up the Batch API batches: those of the recorded chunks, as each
	// chunk's pod reported them when it ended, plus batchLive (batches by OpenAI's state and
	// lines done of lines submitted).
	// +optional
	Batch *BatchStatus `json:"batch,omitempty"`

	// BatchLive (batch mode, with rate leases on) is the part of batch that comes from the live
	// reports of chunks still running (each chunk pod reports its batches to the manager's
	// lease service as they change); it is included in batch. The states validating,
	// inProgress and finalizing of running chunks come only from here. Without rate leases a
	// running chunk's batches show once it ends.
	// +optional
	BatchLive *BatchStatus `json:"batchLive,omitempty"`

	// RateBudget (with the manager's rate leases on, online mode) names the budget the chunk pods
	// lease their rates from, as resolved when the controller last started chunks: a declared
	// EmbeddingBudget's model (`embeddingbudget:<name>/<model>`) or the implicit budget of the
	// key (`<namespace>/<secret>:<key>/<baseURL>/<model>`). It is the metrics' budget label; an
	// EmbeddingBudget's status lists what draws from it.
	// +optional
	RateBudget string `json:"rateBudget,omitempty"`

	// VectorSpace is what the planner's vector-space guard found.
	// +optional
	VectorSpace *VectorSpaceStatus `json:"vectorSpace,omitempty"`

	// TrackingVersion increases with every status change mirrored to the task table; the table
	// accepts only writes with a newer version, so a stale writer never moves it backwards.
	// +optional
	TrackingVersion int64 `json:"trackingVersion,omitempty"`

	// StartTime is when the ingestion was first reconciled.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// CompletionTime is when it reached a terminal phase.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// LastProgressTime is when the ingestion last moved: it started, changed phase, recorded a
	// finished chunk or resumed. The stalled-ingestion metric and alert are computed from it.
	// +optional
	LastProgressTime *metav1.Time `json:"lastProgressTime,omitempty"`

	// Message is a human summary of the current state.
	// +optional
	Message string `json:"message,omitempty"`
}

// SourceStatus is the object that was planned.
type SourceStatus struct {
	ETag      string `json:"etag,omitempty"`
	Bucket    string `json:"bucket,omitempty"`
	Key       string `json:"key,omitempty"`
	SizeBytes int64  `json:"sizeBytes,omitempty"`
	TotalRows int64  `json:"totalRows,omitempty"`
}

// PlanFingerprint identifies a plan: the object it was made from and where its chunks start.
type PlanFingerprint struct {
	ETag         string `json:"etag"`
	Rows         int64  `json:"rows"`
	RowsPerChunk int64  `json:"rowsPerChunk"`
	Chunks       int32  `json:"chunks"`
	// OffsetsSHA256 is the hex SHA-256 of the chunk offsets (8-byte little-endian each).
	OffsetsSHA256 string `json:"offsetsSHA256"`
}

// Estimate is what the plan expects the ingestion to cost.
type Estimate struct {
	Tokens  int64  `json:"tokens,omitempty"`
	CostUSD string `json:"costUSD,omitempty"`
	// MinDuration is the floor the rate budgets allow.
	MinDuration string `json:"minDuration,omitempty"`
	Requests    int64  `json:"requests,omitempty"`
	// Mode is spec.embedding.mode. In batch mode CostUSD is at the Batch API's rate (half the
	// online price), Batches is how many batches the run should need, OnlineCostUSD what the
	// same tokens cost online and SavedUSD the difference; the rate budgets do not apply.
	// +optional
	Mode string `json:"mode,omitempty"`
	// +optional
	Batches int64 `json:"batches,omitempty"`
	// +optional
	OnlineCostUSD string `json:"onlineCostUSD,omitempty"`
	// +optional
	SavedUSD string `json:"savedUSD,omitempty"`
	// Sync is what a dry run with spec.sync found: rows to embed and to skip, vectors to delete.
	// +optional
	Sync *SyncEstimate `json:"sync,omitempty"`
}

// SyncEstimate is a dry run's preview of spec.sync against the index as it is now.
type SyncEstimate struct {
	// RowsToEmbed are the rows a run would embed: all of them in full mode; in incremental mode
	// those not stored with the same content hash.
	RowsToEmbed int64 `json:"rowsToEmbed"`
	// RowsToSkip are the rows stored with the same content hash (incremental mode).
	RowsToSkip int64 `json:"rowsToSkip"`
	// Tokens and CostUSD of embedding RowsToEmbed.
	Tokens  int64  `json:"tokens"`
	CostUSD string `json:"costUSD,omitempty"`
	// VectorsUnderPrefix are the vectors listed under spec.mapping.idPrefix (deleteMissing).
	VectorsUnderPrefix int64 `json:"vectorsUnderPrefix,omitempty"`
	// VectorsToDelete are those of them whose ids are not in the file and that this source owns
	// (deleteMissing).
	VectorsToDelete int64 `json:"vectorsToDelete,omitempty"`
	// VectorsLeftAlone are those of them not in the file that belong to another source (another
	// owner marker, or none): they would be left alone.
	VectorsLeftAlone int64 `json:"vectorsLeftAlone,omitempty"`
	// DeleteGuard says whether the delete guard would stop the run: "" (no deleteMissing),
	// Pass or Stop.
	DeleteGuard string `json:"deleteGuard,omitempty"`
	// LookupRequests are the Pinecone requests the preview made (hash fetches and list pages).
	LookupRequests int64 `json:"lookupRequests,omitempty"`
}

// Verdicts of the delete guard in a dry run's SyncEstimate.
const (
	DeleteGuardPass = "Pass"
	DeleteGuardStop = "Stop"
)

// ChunkCounts counts chunks by state.
type ChunkCounts struct {
	Total     int32 `json:"total"`
	Pending   int32 `json:"pending"`
	Active    int32 `json:"active"`
	Succeeded int32 `json:"succeeded"`
	Failed    int32 `json:"failed"`
}

// RecordCounts counts rows.
type RecordCounts struct {
	Total     int64 `json:"total"`
	Processed int64 `json:"processed"`
	Failed    int64 `json:"failed"`
	Skipped   int64 `json:"skipped"`
	// Deleted are the vectors spec.sync.deleteMissing deleted (ids under the prefix that left
	// the file).
	// +optional
	Deleted int64 `json:"deleted,omitempty"`
	// LeftAlone are the vectors under the id prefix, not in the file, that deleteMissing left
	// alone because they belong to another source (another owner marker, or none).
	// +optional
	LeftAlone int64 `json:"leftAlone,omitempty"`
}

// Usage adds up the API usage reported by finished chunks.
type Usage struct {
	VectorsUpserted int64 `json:"vectorsUpserted,omitempty"`
	Tokens          int64 `json:"tokens,omitempty"`
	Requests        int64 `json:"requests,omitempty"`
	Retries         int64 `json:"retries,omitempty"`
	RateLimited     int64 `json:"rateLimited,omitempty"`
}

// Results of the vector-space guard.
const (
	// VectorSpaceMatched: the stored vectors compared agree with the configured model.
	VectorSpaceMatched = "Matched"
	// VectorSpaceMismatch: they do not; the ingestion fails before any write.
	VectorSpaceMismatch = "Mismatch"
	// VectorSpaceSkipped: spec.target.pinecone.allowMixedVectorSpaces is set.
	VectorSpaceSkipped = "Skipped"
	// VectorSpaceNothingToCompare: the namespace holds no vectors; nothing is compared.
	VectorSpaceNothingToCompare = "NothingToCompare"
	// VectorSpaceUnverified: the namespace holds vectors, but none with a stored text to re-embed
	// (neither the file's ids nor those listed); the ingestion fails before any write unless
	// allowMixedVectorSpaces is set.
	VectorSpaceUnverified = "Unverified"
)

// BatchStatus counts Batch API batches by OpenAI's state, and their lines. Lines counts each
// row sent once (its first submission); a row resubmitted after its batch expired is counted
// again in batches, not in lines.
type BatchStatus struct {
	// Batches created at OpenAI (resubmissions included).
	Batches int32 `json:"batches,omitempty"`
	// By state (OpenAI's batch statuses).
	Validating int32 `json:"validating,omitempty"`
	InProgress int32 `json:"inProgress,omitempty"`
	Finalizing int32 `json:"finalizing,omitempty"`
	Completed  int32 `json:"completed,omitempty"`
	Failed     int32 `json:"failed,omitempty"`
	Expired    int32 `json:"expired,omitempty"`
	Cancelled  int32 `json:"cancelled,omitempty"`
	// Lines submitted (one per row to embed), of which LinesDone were embedded and LinesFailed
	// came back in an error file or with a failed batch.
	Lines       int64 `json:"lines,omitempty"`
	LinesDone   int64 `json:"linesDone,omitempty"`
	LinesFailed int64 `json:"linesFailed,omitempty"`
}

// Add adds o's counts to b. A chunk's counts come from its pod's termination message, which the
// manager does not trust: a negative count adds nothing, and a sum saturates instead of wrapping.
func (b *BatchStatus) Add(o BatchStatus) {
	for _, f := range [][2]*int32{{&b.Batches, &o.Batches}, {&b.Validating, &o.Validating}, {&b.InProgress, &o.InProgress},
		{&b.Finalizing, &o.Finalizing}, {&b.Completed, &o.Completed}, {&b.Failed, &o.Failed}, {&b.Expired, &o.Expired},
		{&b.Cancelled, &o.Cancelled}} {
		*f[0] = int32(min(int64(*f[0])+max(int64(*f[1]), 0), math.MaxInt32))
	}
	for _, f := range [][2]*int64{{&b.Lines, &o.Lines}, {&b.LinesDone, &o.LinesDone}, {&b.LinesFailed, &o.LinesFailed}} {
		if v := max(*f[1], 0); *f[0] > math.MaxInt64-v {
			*f[0] = math.MaxInt64
		} else {
			*f[0] += v
		}
	}
}

// Sub subtracts o's counts from b, none below zero.
func (b *BatchStatus) Sub(o BatchStatus) {
	sub32 := func(x *int32, y int32) { *x = max(*x-y, 0) }
	sub64 := func(x *int64, y int64) { *x = max(*x-y, 0) }
	sub32(&b.Batches, o.Batches)
	sub32(&b.Validating, o.Validating)
	sub32(&b.InProgress, o.InProgress)
	sub32(&b.Finalizing, o.Finalizing)
	sub32(&b.Completed, o.Completed)
	sub32(&b.Failed, o.Failed)
	sub32(&b.Expired, o.Expired)
	sub32(&b.Cancelled, o.Cancelled)
	sub64(&b.Lines, o.Lines)
	sub64(&b.LinesDone, o.LinesDone)
	sub64(&b.LinesFailed, o.LinesFailed)
}

// VectorSpaceStatus is the outcome of the vector-space guard.
type VectorSpaceStatus struct {
	// Result: Matched, Mismatch, Skipped, NothingToCompare or Unverified.
	Result string `json:"result"`
	// Model the stored text was re-embedded with.
	Model string `json:"model,omitempty"`
	// Compared is how many stored vectors were re-embedded and compared.
	Compared int32 `json:"compared,omitempty"`
	// MinCosine is the lowest cosine similarity measured, e.g. "0.9999".
	MinCosine string `json:"minCosine,omitempty"`
	// Tokens the re-embedding used.
	Tokens int64 `json:"tokens,omitempty"`
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// FailedChunk is one chunk that failed.
type FailedChunk struct {
	Index int32 `json:"index"`
	// Rows is the chunk's row range, e.g. "42000-42999".
	Rows   string `json:"rows,omitempty"`
	Reason string `json:"reason,omitempty"`
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// The prefix-free idPrefix rule of deleteMissing is checked on create only (optionalOldSelf; spec.sync
// and spec.mapping are immutable, so no update can break it): ingestions created before the rule
// existed must still be cancellable and suspendable. CsvIngestionTemplate repeats it for schedules.

// CsvIngestion turns a CSV file into vectors in a Pinecone index.
// +kubebuilder:validation:XValidation:rule="oldSelf.hasValue() || !has(self.spec.sync) || !has(self.spec.sync.deleteMissing) || !self.spec.sync.deleteMissing || !has(self.spec.mapping.idPrefix) || size(self.spec.mapping.idPrefix) == 0 || ('.:/-_#|'.contains(self.spec.mapping.idPrefix.substring(size(self.spec.mapping.idPrefix) - 1)) && !self.spec.mapping.idPrefix.substring(0, size(self.spec.mapping.idPrefix) - 1).contains(self.spec.mapping.idPrefix.substring(size(self.spec.mapping.idPrefix) - 1)))",message="spec.sync.deleteMissing needs a prefix-free spec.mapping.idPrefix: it must end with one of . : / - _ # | and that character must not occur earlier in it (e.g. \"q1.\" or \"orders-\", not \"q1\", \"q1.a.\" or \"orders-eu-\"), so that no other source's prefix of that form starts with it (\"q1\" would also list \"q10…\")",fieldPath=".spec.mapping.idPrefix",optionalOldSelf=true
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=csvi,categories=vectordb
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Rows",type=integer,JSONPath=`.status.records.total`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.records.failed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CsvIngestion struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CsvIngestionSpec   `json:"spec,omitempty"`
	Status CsvIngestionStatus `json:"status,omitempty"`
}

// EffectiveTaskID is spec.taskID, or the object's UID when unset.
func (c *CsvIngestion) EffectiveTaskID() string {
	if c.Spec.TaskID != "" {
		return c.Spec.TaskID
	}
	return string(c.UID)
}

// CsvIngestionList is a list of CsvIngestion.
// +kubebuilder:object:root=true
type CsvIngestionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CsvIngestion `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CsvIngestion{}, &CsvIngestionList{})
}
