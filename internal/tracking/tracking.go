// Package tracking mirrors CsvIngestions into their DynamoDB task tables: it turns a written status
// into the task item of DESIGN §7 and keeps one table client per table.
package tracking

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
)

// Tables implements controllers.Tracker over any number of task tables.
type Tables struct {
	// EndpointOverride replaces every spec's endpoint (local stacks). The policy still applies to
	// what the spec names, so a spec behaves the same here as on a cluster without the override.
	EndpointOverride string
	// Retention of task items (tasktable.Config.Retention): DynamoDB TTL deletes them then.
	Retention time.Duration

	policy Policy

	mu      sync.Mutex
	clients map[string]*tasktable.Client
	order   []string // keys of clients, oldest first
}

var _ controllers.Tracker = (*Tables)(nil)

// MaxClients bounds the table clients kept at once (one per table, region and endpoint); the
// oldest is dropped when a new one is needed, so specs naming ever new tables cannot grow the
// manager's memory. A dropped client costs one extra call on its table's next write.
const MaxClients = 64

// New returns a tracker limited by policy; endpoint, when set, overrides every table's endpoint.
func New(endpoint string, policy Policy) (*Tables, error) {
	p, err := policy.compile()
	if err != nil {
		return nil, err
	}
	return &Tables{EndpointOverride: endpoint, policy: p, clients: map[string]*tasktable.Client{}}, nil
}

// Client returns the table client for a spec's tracking settings, or a *RefusedError when the
// policy does not allow them.
func (t *Tables) Client(ctx context.Context, d *v1alpha1.DynamoDBTracking) (*tasktable.Client, error) {
	if err := t.policy.Check(d); err != nil {
		return nil, err
	}
	cfg := tasktable.Config{Table: d.Table, Region: d.Region, Endpoint: d.Endpoint, Retention: t.Retention}
	if t.EndpointOverride != "" {
		cfg.Endpoint = t.EndpointOverride
	}
	key := cfg.Table + "|" + cfg.Region + "|" + cfg.Endpoint
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.clients[key]; c != nil {
		return c, nil
	}
	c, err := tasktable.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if len(t.order) >= MaxClients {
		delete(t.clients, t.order[0])
		t.order = t.order[1:]
	}
	t.clients[key] = c
	t.order = append(t.order, key)
	return c, nil
}

// clientCount is how many table clients are kept (tests).
func (t *Tables) clientCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.clients)
}

// Sync writes obj's task item at its TrackingVersion with the given chunk entries.
func (t *Tables) Sync(ctx context.Context, obj *v1alpha1.CsvIngestion, chunks map[int]controllers.ChunkOutcome) error {
	c, err := t.Client(ctx, obj.Spec.Tracking.DynamoDB)
	if err != nil {
		return err
	}
	entries := make(map[int]tasktable.ChunkEntry, len(chunks))
	for i, o := range chunks {
		entries[i] = tasktable.ChunkEntry{
			Status: o.Status, StartRow: o.StartRow, EndRow: o.EndRow, ProcessedRecords: o.Processed,
			FailedRecords: o.Failed, VectorsUpserted: o.Vectors, ErrorMessage: o.Error,
		}
	}
	err = c.Put(ctx, TaskOf(obj), entries)
	if errors.Is(err, tasktable.ErrStale) {
		// The item already holds this state or a newer one (another writer got there first).
		return nil
	}
	if err != nil {
		return refusal(fmt.Errorf("task %s in %s: %w", obj.EffectiveTaskID(), c.Table(), err))
	}
	return nil
}

// Cancelled marks a running task cancelled.
func (t *Tables) Cancelled(ctx context.Context, obj *v1alpha1.CsvIngestion, at time.Time) error {
	c, err := t.Client(ctx, obj.Spec.Tracking.DynamoDB)
	var refused *RefusedError
	if errors.As(err, &refused) {
		// Nothing of this ingestion's was ever written there; its TrackingDegraded condition said
		// why while it ran. Waiting for the finalizer timeout would change nothing.
		return nil
	}
	if err != nil {
		return err
	}
	err = c.MarkCancelled(ctx, obj.EffectiveTaskID(), string(obj.UID), obj.Status.TrackingVersion+1, at)
	if errors.Is(err, tasktable.ErrFinished) || errors.Is(err, tasktable.ErrStale) {
		return nil
	}
	if errors.Is(err, tasktable.ErrNotFound) {
		// Never mirrored: write the item as cancelled so the legacy API can still answer for it.
		task := TaskOf(obj)
		task.Status = taskstatus.FromPhase(v1alpha1.PhaseCancelled)
		task.CompletedAt = at
		task.Version = obj.Status.TrackingVersion + 1
		err = c.Put(ctx, task, nil)
	}
	if errors.Is(err, tasktable.ErrOwnedElsewhere) {
		// Another ingestion's item: not this one's to cancel (see the TrackingDegraded condition).
		return nil
	}
	return err
}

var legacyPrefix = regexp.MustCompile(`^([0-9]+)\.$`)

// QuestionID is the Metabase question, or the legacy "<question_id>." id prefix; 0 when unknown.
func QuestionID(obj *v1alpha1.CsvIngestion) int64 {
	if mb := obj.Spec.Source.Metabase; mb != nil {
		return mb.QuestionID
	}
	if m := legacyPrefix.FindStringSubmatch(obj.Spec.Mapping.IDPrefix); m != nil {
		if q, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			return q
		}
	}
	return 0
}

// TaskOf is the task item of DESIGN §7 for obj's current status.
func TaskOf(obj *v1alpha1.CsvIngestion) tasktable.Task {
	st := &obj.Status
	spec := &obj.Spec
	p := tasktable.Parameters{
		Namespace: spec.Target.Pinecone.Namespace,
		ChunkSize: int64(spec.Chunking.RowsPerChunk),
		BatchSize: int64(spec.Target.Pinecone.BatchSize),
	}
	task := tasktable.Task{
		TaskID:           obj.EffectiveTaskID(),
		Status:           taskstatus.FromPhase(st.Phase),
		TotalRecords:     st.Records.Total,
		ProcessedRecords: st.Records.Processed,
		FailedRecords:    st.Records.Failed,
		DeletedRecords:   st.Records.Deleted,
		ChunksTotal:      int64(st.Chunks.Total),
		ChunksCompleted:  int64(st.Chunks.Succeeded),
		ChunksFailed:     int64(st.Chunks.Failed),
		ChunksProcessing: int64(st.Chunks.Active),
		CreatedAt:        obj.CreationTimestamp.UTC(),
		K8s:              tasktable.K8sRef{Namespace: obj.Namespace, Name: obj.Name, UID: string(obj.UID)},
		Version:          st.TrackingVersion,
	}
	if b := st.Batch; b != nil {
		task.Batch = &tasktable.BatchCounts{Batches: int64(b.Batches), Validating: int64(b.Validating), InProgress: int64(b.InProgress),
			Finalizing: int64(b.Finalizing), Completed: int64(b.Completed), Failed: int64(b.Failed), Expired: int64(b.Expired),
			Cancelled: int64(b.Cancelled), Lines: b.Lines, LinesDone: b.LinesDone, LinesFailed: b.LinesFailed}
	}
	if mb := spec.Source.Metabase; mb != nil {
		task.TaskType = tasktable.TaskTypeMetabase
		p.DataSource = "metabase"
		p.StartDate, p.EndDate = mb.Parameters["Start_Date"], mb.Parameters["End_Date"]
		if st.Source != nil {
			p.S3Key = st.Source.Key
		}
	} else {
		task.TaskType = tasktable.TaskTypeS3CSV
		p.DataSource = "s3_csv"
		if spec.Source.S3 != nil {
			p.S3Key = spec.Source.S3.Key
		}
	}
	p.QuestionID = QuestionID(obj)
	task.Parameters = p
	if st.Records.Total > 0 {
		task.ProgressPercentage = float64(st.Records.Processed+st.Records.Failed+st.Records.Skipped) / float64(st.Records.Total) * 100
	} else if st.Chunks.Total > 0 {
		task.ProgressPercentage = float64(st.Chunks.Succeeded+st.Chunks.Failed) / float64(st.Chunks.Total) * 100
	}
	if task.ProgressPercentage > 100 {
		task.ProgressPercentage = 100
	}
	if st.Phase == v1alpha1.PhaseCompleted || st.Phase == v1alpha1.PhasePartiallyCompleted {
		task.ProgressPercentage = 100
	}
	if st.Usage != nil {
		task.VectorsUpserted = st.Usage.VectorsUpserted
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionFailed); c != nil && c.Status == "True" {
		task.ErrorMessage = c.Message
	}
	if st.StartTime != nil {
		task.StartedAt = st.StartTime.UTC()
	}
	if st.CompletionTime != nil {
		task.CompletedAt = st.CompletionTime.UTC()
	}
	return task
}
