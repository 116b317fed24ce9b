package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// maxTaskIDLen bounds task ids looked up; longer ones cannot exist (the CRD allows 128).
const maxTaskIDLen = 256

// StatusResponse is the body of GET /api/v1/status/{task_id} and an element of GET /api/v1/tasks.
type StatusResponse struct {
	TaskID      string   `json:"task_id"`
	Status      string   `json:"status"`
	Progress    Progress `json:"progress"`
	StartedAt   *string  `json:"started_at"`
	CompletedAt *string  `json:"completed_at"`
	// Error is the Failed condition's message of a failed task, else null.
	Error *string `json:"error"`
	// Result is set once the task is finished.
	Result   *Result  `json:"result"`
	Metadata Metadata `json:"metadata"`
}

// Progress of a task.
type Progress struct {
	TotalRecords     int64 `json:"total_records"`
	ProcessedRecords int64 `json:"processed_records"`
	FailedRecords    int64 `json:"failed_records"`
	ChunksTotal      int64 `json:"chunks_total"`
	ChunksCompleted  int64 `json:"chunks_completed"`
	ChunksProcessing int64 `json:"chunks_processing"`
	ChunksFailed     int64 `json:"chunks_failed"`
	// CurrentChunk is the lowest index of a chunk being processed, or null.
	CurrentChunk *int64 `json:"current_chunk"`
	// Percentage is processed/total records (chunks finished/total while rows are unknown), 0–100.
	Percentage float64 `json:"percentage"`
}

// Result is the outcome of a finished task.
type Result struct {
	TotalRecords     int64  `json:"total_records"`
	ProcessedRecords int64  `json:"processed_records"`
	FailedRecords    int64  `json:"failed_records"`
	SkippedRecords   int64  `json:"skipped_records"`
	VectorsUpserted  int64  `json:"vectors_upserted"`
	ChunksTotal      int64  `json:"chunks_total"`
	ChunksCompleted  int64  `json:"chunks_completed"`
	ChunksFailed     int64  `json:"chunks_failed"`
	Message          string `json:"message,omitempty"`
}

// Metadata describes what the task was asked to do.
type Metadata struct {
	TaskType   string     `json:"task_type"`
	Parameters parameters `json:"parameters"`
	CreatedAt  string     `json:"created_at"`
	// Namespace is the Pinecone namespace.
	Namespace string `json:"namespace"`
	// Kubernetes names the CsvIngestion (DESIGN §7's k8s), when known.
	Kubernetes *K8sRef `json:"k8s,omitempty"`
}

// K8sRef names the CsvIngestion of a task.
type K8sRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	taskID, obj, ok := s.lookupTask(w, r)
	if !ok {
		return
	}
	if obj != nil {
		active, err := s.activeChunks(ctx, client.InNamespace(obj.Namespace), client.MatchingLabels{worker.LabelUID: string(obj.UID)})
		if err != nil {
			s.log.Error(err, "finding the current chunk", "taskID", taskID, "requestID", info(ctx).id)
		}
		writeJSON(w, http.StatusOK, fromIngestion(obj, active[obj.UID]))
		return
	}
	if s.deps.Tasks != nil {
		t, chunks, err := s.deps.Tasks.Get(ctx, taskID)
		switch {
		case err == nil && !s.itemVisible(t, callerOf(ctx).scope):
			// Another namespace's task: as unknown as a task that never was.
		case err == nil:
			writeJSON(w, http.StatusOK, fromTaskItem(t, chunks))
			return
		case !errors.Is(err, tasktable.ErrNotFound):
			s.log.Error(err, "reading the task table", "taskID", taskID, "requestID", info(ctx).id)
			writeError(w, http.StatusServiceUnavailable, "Task table unavailable; try again later")
			return
		}
	}
	writeError(w, http.StatusNotFound, "Task not found")
}

func plausibleTaskID(id string) bool {
	return id != "" && len(id) <= maxTaskIDLen && printable(id)
}

// IndexTaskID is the cache index of CsvIngestions by every id a task is looked up by: the task
// id (spec.taskID, else the uid, as EffectiveTaskID), status.taskID and the uid. The manager
// registers it (RegisterIndexes) so a lookup reads one index entry, not a list of the cluster.
const IndexTaskID = "shim.ingestion.vectordb.io/task-id"

// TaskIDs are the index values of IndexTaskID for obj.
func TaskIDs(obj client.Object) []string {
	c, ok := obj.(*v1alpha1.CsvIngestion)
	if !ok {
		return nil
	}
	out := []string{c.EffectiveTaskID()}
	for _, id := range []string{c.Status.TaskID, string(c.UID)} {
		if id != "" && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// RegisterIndexes adds the shim's cache indexes; call it before the cache starts.
func RegisterIndexes(ctx context.Context, fi client.FieldIndexer) error {
	if err := fi.IndexField(ctx, &v1alpha1.CsvIngestion{}, IndexTaskID, TaskIDs); err != nil {
		return fmt.Errorf("indexing CsvIngestions by task id: %w", err)
	}
	return nil
}

// findIngestion finds the CsvIngestion of a task id among the namespaces of scope, or nil: by the
// task-id index of the cache, and last by the name the shim gives it, read from the API server,
// for a task created a moment ago that the cache (on this replica or another) has not seen yet.
// A task in a namespace outside scope is not found, whoever asks how.
func (s *Server) findIngestion(ctx context.Context, taskID string, scope apikeys.Scope) (*v1alpha1.CsvIngestion, error) {
	var best *v1alpha1.CsvIngestion
	consider := func(items []v1alpha1.CsvIngestion) {
		for i := range items {
			c := &items[i]
			if !scope.Allows(c.Namespace) {
				continue
			}
			// Task ids are unique in practice; if not, the oldest holder keeps it, deterministically.
			if best == nil || olderThan(c, best) {
				best = c
			}
		}
	}
	byID := client.MatchingFields{IndexTaskID: taskID}
	if scope.All() {
		var list v1alpha1.CsvIngestionList
		if err := s.deps.Client.List(ctx, &list, byID); err != nil {
			return nil, fmt.Errorf("looking up CsvIngestions of task %s: %w", taskID, err)
		}
		consider(list.Items)
	} else {
		for _, ns := range s.visibleNamespaces(scope) {
			var list v1alpha1.CsvIngestionList
			if err := s.deps.Client.List(ctx, &list, client.InNamespace(ns), byID); err != nil {
				return nil, fmt.Errorf("looking up CsvIngestions of task %s in %s: %w", taskID, ns, err)
			}
			consider(list.Items)
		}
	}
	if best != nil {
		return best, nil
	}
	name := NamePrefix + taskID
	ns := s.cfg.Defaults.Namespace
	if s.deps.APIReader == nil || ns == "" || !scope.Allows(ns) || len(validation.IsDNS1123Subdomain(name)) > 0 {
		return nil, nil
	}
	var c v1alpha1.CsvIngestion
	err := s.deps.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &c)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading CsvIngestion %s/%s: %w", ns, name, err)
	case c.EffectiveTaskID() != taskID:
		return nil, nil
	}
	return &c, nil
}

// itemVisible reports whether a task-table item (a task whose resource is gone) is in scope: the
// namespace its resource was in, or, for an item without one (written by the old service), the
// API's own namespace, where the API creates its tasks.
func (s *Server) itemVisible(t *tasktable.Task, scope apikeys.Scope) bool {
	ns := t.K8s.Namespace
	if ns == "" {
		ns = s.cfg.Defaults.Namespace
	}
	return scope.Allows(ns)
}

func olderThan(a, b *v1alpha1.CsvIngestion) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// activeChunks maps an ingestion's uid to the lowest index of its chunk Jobs that have a pod
// running, over the chunk Jobs selected by opts.
func (s *Server) activeChunks(ctx context.Context, opts ...client.ListOption) (map[types.UID]int64, error) {
	var jobs batchv1.JobList
	opts = append(opts, client.MatchingLabels{worker.LabelRole: worker.RoleChunk})
	if err := s.deps.Client.List(ctx, &jobs, opts...); err != nil {
		return nil, fmt.Errorf("listing chunk Jobs: %w", err)
	}
	out := map[types.UID]int64{}
	for _, j := range jobs.Items {
		if j.Status.Active == 0 {
			continue
		}
		idx, err := strconv.ParseInt(j.Labels[worker.LabelChunk], 10, 64)
		uid := types.UID(j.Labels[worker.LabelUID])
		if err != nil || idx < 0 || uid == "" {
			continue
		}
		if cur, ok := out[uid]; !ok || idx < cur {
			out[uid] = idx
		}
	}
	return out, nil
}

// fromIngestion is the legacy status of a CsvIngestion. current is its lowest active chunk index
// (0 with no active chunk; only used while chunks are active).
func fromIngestion(c *v1alpha1.CsvIngestion, current int64) StatusResponse {
	st := c.Status
	word := taskstatus.FromPhase(st.Phase)
	p := Progress{
		TotalRecords:     st.Records.Total,
		ProcessedRecords: st.Records.Processed,
		FailedRecords:    st.Records.Failed,
		ChunksTotal:      int64(st.Chunks.Total),
		ChunksCompleted:  int64(st.Chunks.Succeeded),
		ChunksProcessing: int64(st.Chunks.Active),
		ChunksFailed:     int64(st.Chunks.Failed),
	}
	p.Percentage = percentage(p, word)
	if st.Chunks.Active > 0 && !taskstatus.Terminal(word) {
		cur := current
		p.CurrentChunk = &cur
	}
	params := paramsOf(c)
	resp := StatusResponse{
		TaskID:      c.EffectiveTaskID(),
		Status:      word,
		Progress:    p,
		StartedAt:   metaTimeString(st.StartTime),
		CompletedAt: metaTimeString(st.CompletionTime),
		Metadata: Metadata{
			TaskType:   taskType(c),
			Parameters: params,
			CreatedAt:  createdAt(c).UTC().Format(tasktable.TimeFormat),
			Namespace:  c.Spec.Target.Pinecone.Namespace,
			Kubernetes: &K8sRef{Namespace: c.Namespace, Name: c.Name, UID: string(c.UID)},
		},
	}
	if word == taskstatus.Failed {
		msg := st.Message
		if cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionFailed); cond != nil && cond.Message != "" {
			msg = cond.Message
		}
		if msg == "" {
			msg = "failed"
		}
		resp.Error = &msg
	}
	if taskstatus.Terminal(word) {
		res := &Result{
			TotalRecords:     st.Records.Total,
			ProcessedRecords: st.Records.Processed,
			FailedRecords:    st.Records.Failed,
			SkippedRecords:   st.Records.Skipped,
			ChunksTotal:      int64(st.Chunks.Total),
			ChunksCompleted:  int64(st.Chunks.Succeeded),
			ChunksFailed:     int64(st.Chunks.Failed),
			Message:          st.Message,
		}
		if st.Usage != nil {
			res.VectorsUpserted = st.Usage.VectorsUpserted
		}
		resp.Result = res
	}
	return resp
}

// fromTaskItem is the legacy status of a task known only from the task table.
func fromTaskItem(t *tasktable.Task, chunks map[string]tasktable.ChunkEntry) StatusResponse {
	p := Progress{
		TotalRecords:     t.TotalRecords,
		ProcessedRecords: t.ProcessedRecords,
		FailedRecords:    t.FailedRecords,
		ChunksTotal:      t.ChunksTotal,
		ChunksCompleted:  t.ChunksCompleted,
		ChunksProcessing: t.ChunksProcessing,
		ChunksFailed:     t.ChunksFailed,
		Percentage:       math.Round(math.Min(math.Max(t.ProgressPercentage, 0), 100)*100) / 100,
	}
	if !taskstatus.Terminal(t.Status) {
		for k, e := range chunks {
			if e.Status != taskstatus.Processing && e.Status != taskstatus.ProcessingChunks {
				continue
			}
			idx, err := strconv.ParseInt(strings.TrimPrefix(k, "chunk_"), 10, 64)
			if err == nil && (p.CurrentChunk == nil || idx < *p.CurrentChunk) {
				p.CurrentChunk = &idx
			}
		}
	}
	tp := t.Parameters
	resp := StatusResponse{
		TaskID:      t.TaskID,
		Status:      t.Status,
		Progress:    p,
		StartedAt:   timeString(t.StartedAt, !t.StartedAt.IsZero()),
		CompletedAt: timeString(t.CompletedAt, !t.CompletedAt.IsZero()),
		Metadata: Metadata{
			TaskType: t.TaskType,
			Parameters: parameters{
				DataSource: tp.DataSource, S3Key: tp.S3Key, QuestionID: tp.QuestionID, Namespace: tp.Namespace,
				ChunkSize: tp.ChunkSize, BatchSize: tp.BatchSize, StartDate: tp.StartDate, EndDate: tp.EndDate,
			},
			CreatedAt: timeOrEmpty(t.CreatedAt),
			Namespace: tp.Namespace,
		},
	}
	if t.K8s != (tasktable.K8sRef{}) {
		resp.Metadata.Kubernetes = &K8sRef{Namespace: t.K8s.Namespace, Name: t.K8s.Name, UID: t.K8s.UID}
	}
	if t.ErrorMessage != "" {
		msg := t.ErrorMessage
		resp.Error = &msg
	}
	if taskstatus.Terminal(t.Status) {
		resp.Result = &Result{
			TotalRecords:     t.TotalRecords,
			ProcessedRecords: t.ProcessedRecords,
			FailedRecords:    t.FailedRecords,
			VectorsUpserted:  t.VectorsUpserted,
			ChunksTotal:      t.ChunksTotal,
			ChunksCompleted:  t.ChunksCompleted,
			ChunksFailed:     t.ChunksFailed,
		}
	}
	return resp
}

func percentage(p Progress, word string) float64 {
	var pct float64
	switch {
	case p.TotalRecords > 0:
		pct = 100 * float64(p.ProcessedRecords) / float64(p.TotalRecords)
	case p.ChunksTotal > 0:
		pct = 100 * float64(p.ChunksCompleted+p.ChunksFailed) / float64(p.ChunksTotal)
	case word == taskstatus.Completed:
		pct = 100 // an empty file is done
	}
	return math.Round(math.Min(pct, 100)*100) / 100
}

func timeString(t time.Time, ok bool) *string {
	if !ok || t.IsZero() {
		return nil
	}
	s := t.UTC().Format(tasktable.TimeFormat)
	return &s
}

func metaTimeString(t *metav1.Time) *string {
	if t == nil {
		return nil
	}
	return timeString(t.Time, true)
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(tasktable.TimeFormat)
}

// createdAt is when the task was created: the shim's own record (microseconds, so tasks created
// in the same second still sort newest first), else the resource's creation time.
func createdAt(c *v1alpha1.CsvIngestion) time.Time {
	if s := c.Annotations[AnnotationCreatedAt]; s != "" {
		if t, err := time.Parse(tasktable.TimeFormat, s); err == nil {
			return t
		}
	}
	return c.CreationTimestamp.Time
}

func taskType(c *v1alpha1.CsvIngestion) string {
	if c.Spec.Source.Metabase != nil {
		return tasktable.TaskTypeMetabase
	}
	return tasktable.TaskTypeS3CSV
}

var legacyPrefix = regexp.MustCompile(`^([1-9][0-9]{0,17})\.$`)

// paramsOf is the legacy parameters of a task: as the request gave them when the shim created it,
// else what the spec says (a resource applied with kubectl).
func paramsOf(c *v1alpha1.CsvIngestion) parameters {
	if a := c.Annotations[AnnotationParameters]; a != "" {
		var p parameters
		if err := json.Unmarshal([]byte(a), &p); err == nil {
			return p
		}
	}
	sp := c.Spec
	p := parameters{
		Namespace: sp.Target.Pinecone.Namespace,
		ChunkSize: int64(sp.Chunking.RowsPerChunk),
		BatchSize: int64(sp.Target.Pinecone.BatchSize),
	}
	if m := legacyPrefix.FindStringSubmatch(sp.Mapping.IDPrefix); m != nil {
		p.QuestionID, _ = strconv.ParseInt(m[1], 10, 64)
	}
	switch {
	case sp.Source.Metabase != nil:
		p.DataSource = SourceMetabase
		p.QuestionID = sp.Source.Metabase.QuestionID
		p.StartDate = sp.Source.Metabase.Parameters["Start_Date"]
		p.EndDate = sp.Source.Metabase.Parameters["End_Date"]
	case sp.Source.S3 != nil:
		p.DataSource = SourceS3CSV
		p.S3Key = sp.Source.S3.Key
	}
	return p
}

// writeAPIError answers a failed Kubernetes call: 422 for what the API server refused as invalid,
// 503 when it cannot be reached or is overloaded, 500 otherwise. Details go to the log.
func (s *Server) writeAPIError(w http.ResponseWriter, r *http.Request, err error, what string) {
	ri := info(r.Context())
	s.log.Error(err, what, "requestID", ri.id)
	switch {
	case apierrors.IsInvalid(err):
		writeInvalid(w, []FieldError{{Loc: []string{"body"}, Msg: "the task was refused by the cluster: " + apiMessage(err), Type: "value_error"}})
	case apierrors.IsForbidden(err) && r.Method == http.MethodPost:
		// An admission policy or quota refused the task the request asked for (the operator's
		// creates are checked like anyone's): say which rule, as the API server did.
		writeError(w, http.StatusForbidden, "the task was refused by the cluster: "+apiMessage(err))
	case apierrors.IsNotFound(err):
		writeError(w, http.StatusNotFound, "Task not found")
	case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsServiceUnavailable(err), errors.Is(err, context.DeadlineExceeded), isTransport(err):
		writeError(w, http.StatusServiceUnavailable, "Kubernetes API unavailable; try again later")
	default:
		writeError(w, http.StatusInternalServerError, "Internal server error")
	}
}

func apiMessage(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().Message
	}
	return err.Error()
}

// isTransport reports an error that never got an answer from the API server.
func isTransport(err error) bool {
	var se apierrors.APIStatus
	return !errors.As(err, &se)
}

// lookupTask finds the CsvIngestion of the request's {task_id}; obj is nil when only the task
// table may know it. When ok is false the response has been written.
func (s *Server) lookupTask(w http.ResponseWriter, r *http.Request) (taskID string, obj *v1alpha1.CsvIngestion, ok bool) {
	taskID = r.PathValue("task_id")
	if !plausibleTaskID(taskID) {
		writeError(w, http.StatusNotFound, "Task not found")
		return "", nil, false
	}
	obj, err := s.findIngestion(r.Context(), taskID, callerOf(r.Context()).scope)
	if err != nil {
		s.writeAPIError(w, r, err, "finding task "+strconv.Quote(taskID))
		return "", nil, false
	}
	return taskID, obj, true
}
