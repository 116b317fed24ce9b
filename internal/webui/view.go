package webui

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/deadletter"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// What the pages show is built field by field from the resource here, never by sending the spec
// or status whole: a field added to the API later cannot reach a page unless it is added here.
// Secrets appear only as the names of the Secrets that hold them.

// Summary is one row of the list page.
type Summary struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Phase     string `json:"phase"`
	TaskID    string `json:"taskID"`
	Suspended bool   `json:"suspended"`
	Cancelled bool   `json:"cancelled"`
	DryRun    bool   `json:"dryRun"`
	// Progress is the finished fraction, 0 to 1: rows once the plan knows them, else chunks.
	Progress      float64 `json:"progress"`
	RowsTotal     int64   `json:"rowsTotal"`
	RowsProcessed int64   `json:"rowsProcessed"`
	RowsFailed    int64   `json:"rowsFailed"`
	RowsSkipped   int64   `json:"rowsSkipped"`
	// DeletesMissing is spec.sync.deleteMissing; VectorsDeleted is status.records.deleted.
	DeletesMissing bool  `json:"deletesMissing"`
	VectorsDeleted int64 `json:"vectorsDeleted"`
	ChunksTotal    int32 `json:"chunksTotal"`
	ChunksDone     int32 `json:"chunksDone"`
	ChunksFailed   int32 `json:"chunksFailed"`
	ChunksActive   int32 `json:"chunksActive"`
	// RowsPerSecond over the run so far (to completion once it ended); 0 before it starts.
	RowsPerSecond float64 `json:"rowsPerSecond"`
	// ETASeconds at that rate; -1 when unknown or finished.
	ETASeconds float64 `json:"etaSeconds"`
	Created    string  `json:"created"`
	Message    string  `json:"message,omitempty"`
}

// Detail is the page of one ingestion.
type Detail struct {
	Summary
	Generation         int64        `json:"generation"`
	ObservedGeneration int64        `json:"observedGeneration"`
	Started            string       `json:"started,omitempty"`
	Completed          string       `json:"completed,omitempty"`
	Grid               Grid         `json:"grid"`
	FailedChunks       []FailedView `json:"failedChunks"`
	// FailedNotListed counts failed chunks the status does not detail (it keeps at most 50).
	FailedNotListed int             `json:"failedNotListed"`
	Estimate        *EstimateView   `json:"estimate,omitempty"`
	Usage           *UsageView      `json:"usage,omitempty"`
	Batch           *BatchView      `json:"batch,omitempty"`
	Conditions      []ConditionView `json:"conditions"`
	Events          []EventView     `json:"events"`
	Source          SourceView      `json:"source"`
	Target          TargetView      `json:"target"`
	Embedding       EmbeddingView   `json:"embedding"`
	Parallelism     int32           `json:"parallelism"`
	RowsPerChunk    int32           `json:"rowsPerChunk"`
	DeadLetter      string          `json:"deadLetter,omitempty"`
}

// Grid is the chunk grid in compact form: the page expands the ranges ("0-41,43") into cells,
// so a 5,000-chunk ingestion costs a few bytes, not 5,000 entries.
type Grid struct {
	Total     int32  `json:"total"`
	Completed string `json:"completed"`
	Failed    string `json:"failed"`
	Running   []int  `json:"running"`
}

type FailedView struct {
	Index   int32  `json:"index"`
	Rows    string `json:"rows,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// DeadLetter is the object the chunk's failed rows go to (when spec.deadLetter is set and
	// the chunk wrote any; a large one continues in .part2.csv and so on).
	DeadLetter string `json:"deadLetter,omitempty"`
}

type EstimateView struct {
	Tokens      int64  `json:"tokens"`
	Requests    int64  `json:"requests"`
	CostUSD     string `json:"costUSD"`
	MinDuration string `json:"minDuration,omitempty"`
	// Batch mode: the batches expected, and the online price of the same tokens and the saving.
	Mode          string `json:"mode,omitempty"`
	Batches       int64  `json:"batches,omitempty"`
	OnlineCostUSD string `json:"onlineCostUSD,omitempty"`
	SavedUSD      string `json:"savedUSD,omitempty"`
}

type UsageView struct {
	Tokens          int64 `json:"tokens"`
	Requests        int64 `json:"requests"`
	VectorsUpserted int64 `json:"vectorsUpserted"`
	Retries         int64 `json:"retries"`
	RateLimited     int64 `json:"rateLimited"`
	// CostUSD is the tokens used at the model's list price (internal/tokens), as the estimate;
	// in batch mode at the Batch API's rate.
	CostUSD string `json:"costUSD"`
}

// BatchView (batch mode) is status.batch: the recorded chunks' batches by OpenAI's state, and
// their lines, plus the running chunks' live reports (status.batchLive, with rate leases).
type BatchView struct {
	Batches     int32 `json:"batches"`
	Validating  int32 `json:"validating"`
	InProgress  int32 `json:"inProgress"`
	Finalizing  int32 `json:"finalizing"`
	Completed   int32 `json:"completed"`
	Failed      int32 `json:"failed"`
	Expired     int32 `json:"expired"`
	Cancelled   int32 `json:"cancelled"`
	Lines       int64 `json:"lines"`
	LinesDone   int64 `json:"linesDone"`
	LinesFailed int64 `json:"linesFailed"`
}

type ConditionView struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Since   string `json:"since,omitempty"`
}

type EventView struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Action  string `json:"action,omitempty"`
	Message string `json:"message"`
	Count   int32  `json:"count"`
	Last    string `json:"last,omitempty"`
}

type SourceView struct {
	Kind string `json:"kind"` // s3 or metabase
	// Location is s3://bucket/key, or the Metabase URL and question.
	Location string `json:"location"`
	Endpoint string `json:"endpoint,omitempty"`
	Region   string `json:"region,omitempty"`
	// Secret names the Secret holding the credentials, never their values.
	Secret    string `json:"secret,omitempty"`
	ETag      string `json:"etag,omitempty"`
	SizeBytes int64  `json:"sizeBytes,omitempty"`
	Staged    string `json:"staged,omitempty"`
}

type TargetView struct {
	Index     string `json:"index"`
	Namespace string `json:"namespace"`
	Host      string `json:"host,omitempty"`
	Secret    string `json:"secret"`
	BatchSize int32  `json:"batchSize"`
}

type EmbeddingView struct {
	Model      string `json:"model"`
	Dimensions int32  `json:"dimensions,omitempty"`
	Endpoint   string `json:"endpoint,omitempty"`
	Secret     string `json:"secret"`
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// summarize builds the list row of obj at now.
func summarize(obj *v1alpha1.CsvIngestion, now time.Time) Summary {
	st := &obj.Status
	s := Summary{
		Namespace: obj.Namespace, Name: obj.Name, Phase: string(st.Phase), TaskID: st.TaskID,
		Suspended: obj.Spec.Suspend, Cancelled: obj.Spec.Cancel, DryRun: obj.Spec.DryRun,
		RowsTotal: st.Records.Total, RowsProcessed: st.Records.Processed, RowsFailed: st.Records.Failed,
		RowsSkipped: st.Records.Skipped, DeletesMissing: obj.Spec.DeletesMissing(), VectorsDeleted: st.Records.Deleted,
		ChunksTotal: st.Chunks.Total, ChunksDone: st.Chunks.Succeeded,
		ChunksFailed: st.Chunks.Failed, ChunksActive: st.Chunks.Active,
		Created: stamp(obj.CreationTimestamp.Time), Message: st.Message, ETASeconds: -1,
	}
	if s.Phase == "" {
		s.Phase = string(v1alpha1.PhasePending)
	}
	if s.TaskID == "" {
		s.TaskID = obj.EffectiveTaskID()
	}
	var start, end time.Time
	if st.StartTime != nil {
		start = st.StartTime.Time
	}
	end = now
	if st.CompletionTime != nil {
		end = st.CompletionTime.Time
	}
	s.Progress, s.RowsPerSecond, s.ETASeconds = progress(st, st.Phase.Terminal(), start, end)
	return s
}

// progress is the finished fraction, the rate in rows per second between start and end, and the
// time left at that rate (-1 when unknown or finished).
func progress(st *v1alpha1.CsvIngestionStatus, terminal bool, start, end time.Time) (frac, rate, eta float64) {
	rows := st.Records.Processed + st.Records.Failed + st.Records.Skipped
	switch {
	case st.Records.Total > 0:
		frac = float64(rows) / float64(st.Records.Total)
	case st.Chunks.Total > 0:
		frac = float64(st.Chunks.Succeeded+st.Chunks.Failed) / float64(st.Chunks.Total)
	}
	if terminal && st.Phase == v1alpha1.PhaseCompleted {
		frac = 1
	}
	frac = min(max(frac, 0), 1)
	eta = -1
	if start.IsZero() || !end.After(start) || rows <= 0 {
		return frac, 0, eta
	}
	rate = float64(rows) / end.Sub(start).Seconds()
	if !terminal && st.Records.Total > rows && rate > 0 {
		eta = float64(st.Records.Total-rows) / rate
	}
	return frac, rate, eta
}

// detail builds the page of obj from it, its chunk Jobs and its events (all from the cache).
func detail(obj *v1alpha1.CsvIngestion, jobs []batchv1.Job, evs []corev1.Event, now time.Time, maxEvents int) Detail {
	st := &obj.Status
	sp := &obj.Spec
	d := Detail{
		Summary:    summarize(obj, now),
		Generation: obj.Generation, ObservedGeneration: st.ObservedGeneration,
		Grid:         Grid{Total: st.Chunks.Total, Completed: st.CompletedChunks, Failed: st.FailedChunkIndexes, Running: running(jobs, st)},
		FailedChunks: []FailedView{}, Conditions: []ConditionView{}, Events: eventViews(evs, maxEvents),
		Parallelism: sp.Chunking.Parallelism, RowsPerChunk: sp.Chunking.RowsPerChunk,
		Source: source(obj), Embedding: EmbeddingView{Model: sp.Embedding.Model, Dimensions: sp.Embedding.Dimensions,
			Endpoint: safeURL(sp.Embedding.BaseURL), Secret: secretName(sp.Embedding.APIKeySecretRef)},
		Target: TargetView{Index: sp.Target.Pinecone.Index, Namespace: sp.Target.Pinecone.Namespace,
			Host: safeURL(sp.Target.Pinecone.Host), Secret: secretName(sp.Target.Pinecone.APIKeySecretRef), BatchSize: sp.Target.Pinecone.BatchSize},
	}
	if st.StartTime != nil {
		d.Started = stamp(st.StartTime.Time)
	}
	if st.CompletionTime != nil {
		d.Completed = stamp(st.CompletionTime.Time)
	}
	if dl := sp.DeadLetter; dl != nil {
		d.DeadLetter = "s3://" + dl.Bucket + "/" + dl.KeyPrefix
	}
	for _, fc := range st.FailedChunks {
		v := FailedView{Index: fc.Index, Rows: fc.Rows, Reason: fc.Reason, Message: fc.Message}
		if dl := sp.DeadLetter; dl != nil {
			v.DeadLetter = "s3://" + dl.Bucket + "/" + deadletter.Key(dl.KeyPrefix, worker.FromObject(obj).ObjectID(), int(fc.Index))
		}
		d.FailedChunks = append(d.FailedChunks, v)
	}
	d.FailedNotListed = max(int(st.Chunks.Failed)-len(st.FailedChunks), 0)
	if e := st.Estimate; e != nil {
		d.Estimate = &EstimateView{Tokens: e.Tokens, Requests: e.Requests, CostUSD: e.CostUSD, MinDuration: e.MinDuration,
			Mode: e.Mode, Batches: e.Batches, OnlineCostUSD: e.OnlineCostUSD, SavedUSD: e.SavedUSD}
	}
	if u := st.Usage; u != nil {
		cost := tokens.CostUSD(sp.Embedding.Model, u.Tokens)
		if sp.Embedding.Mode == v1alpha1.EmbeddingBatch {
			cost = tokens.BatchCostUSD(sp.Embedding.Model, u.Tokens)
		}
		d.Usage = &UsageView{Tokens: u.Tokens, Requests: u.Requests, VectorsUpserted: u.VectorsUpserted, Retries: u.Retries,
			RateLimited: u.RateLimited, CostUSD: cost}
	}
	if b := st.Batch; b != nil {
		v := BatchView(*b)
		d.Batch = &v
	}
	for _, c := range st.Conditions {
		d.Conditions = append(d.Conditions, ConditionView{Type: c.Type, Status: string(c.Status), Reason: c.Reason,
			Message: c.Message, Since: stamp(c.LastTransitionTime.Time)})
	}
	return d
}

// running lists the chunks whose Job is running now: not finished, not suspended, and not
// already recorded as completed or failed in the status.
func running(jobs []batchv1.Job, st *v1alpha1.CsvIngestionStatus) []int {
	out := []int{}
	for i := range jobs {
		j := &jobs[i]
		if j.Labels[worker.LabelRole] != worker.RoleChunk || jobFinished(j) || (j.Spec.Suspend != nil && *j.Spec.Suspend) {
			continue
		}
		idx, err := strconv.Atoi(j.Labels[worker.LabelChunk])
		if err != nil || idx < 0 {
			continue
		}
		out = append(out, idx)
	}
	sort.Ints(out)
	return out
}

func jobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// eventViews keeps the newest max events, newest first.
func eventViews(evs []corev1.Event, maxN int) []EventView {
	type ev struct {
		at time.Time
		v  EventView
	}
	all := make([]ev, 0, len(evs))
	for i := range evs {
		e := &evs[i]
		at := e.LastTimestamp.Time
		if e.Series != nil && !e.Series.LastObservedTime.IsZero() {
			at = e.Series.LastObservedTime.Time
		}
		if at.IsZero() {
			at = e.EventTime.Time
		}
		if at.IsZero() {
			at = e.CreationTimestamp.Time
		}
		count := e.Count
		if e.Series != nil && e.Series.Count > count {
			count = e.Series.Count
		}
		all = append(all, ev{at, EventView{Type: e.Type, Reason: e.Reason, Action: e.Action, Message: e.Message,
			Count: max(count, 1), Last: stamp(at)}})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at.After(all[j].at) })
	out := make([]EventView, 0, min(len(all), maxN))
	for i := 0; i < len(all) && i < maxN; i++ {
		out = append(out, all[i].v)
	}
	return out
}

func source(obj *v1alpha1.CsvIngestion) SourceView {
	src := &obj.Spec.Source
	var v SourceView
	switch {
	case src.S3 != nil:
		v = SourceView{Kind: "s3", Location: "s3://" + src.S3.Bucket + "/" + src.S3.Key, Endpoint: safeURL(src.S3.Endpoint), Region: src.S3.Region}
		if r := src.S3.CredentialsSecretRef; r != nil {
			v.Secret = r.Name
		}
	case src.Metabase != nil:
		m := src.Metabase
		v = SourceView{Kind: "metabase", Location: fmt.Sprintf("%s question %d", safeURL(m.URL), m.QuestionID),
			Secret: secretName(m.APIKeySecretRef), Staged: "s3://" + m.StageTo.Bucket + "/" + m.StageTo.KeyPrefix}
	}
	if s := obj.Status.Source; s != nil {
		v.ETag, v.SizeBytes = s.ETag, s.SizeBytes
	}
	return v
}

func secretName(r v1alpha1.SecretKeyRef) string {
	if r.Key == "" {
		return r.Name
	}
	return r.Name + " (key " + r.Key + ")"
}

// safeURL drops any user information, query and fragment from u: an endpoint written as
// https://user:password@host must not show its password.
func safeURL(u string) string {
	if u == "" {
		return ""
	}
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.Fragment, p.ForceQuery = nil, "", "", false
	return p.String()
}
