package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Data sources of the legacy API.
const (
	SourceS3CSV    = "s3_csv"
	SourceMetabase = "metabase"
)

// Ranges of the legacy API, kept so the same requests are accepted and refused.
const (
	minBatchSize   = 100
	maxBatchSize   = 10000
	minChunkSize   = 100
	maxChunkSize   = 100000
	maxS3KeyBytes  = 1024 // S3's own limit, and the CRD's
	maxNamespace   = 512  // Pinecone's namespace limit, and the CRD's
	dateLayout     = "2006-01-02"
	metabaseWindow = 2 * 24 * time.Hour // end_date defaults to start_date + 2 days, as the old API
)

// Priorities: the old API's words, or Celery's 0–9 numbers; recorded only (LabelPriority).
var priorityWords = map[string]bool{"low": true, "normal": true, "high": true}

const defaultPriority = "normal"

var datePattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// ProcessRequest is a valid body of POST /api/v1/process, with defaults filled in.
type ProcessRequest struct {
	DataSource string
	S3Key      string
	QuestionID int64
	StartDate  string // YYYY-MM-DD or empty
	EndDate    string
	BatchSize  int64
	ChunkSize  int64
	Namespace  string
	Priority   string
	// SyncMode is "", "full" or "incremental" (an extension the old API did not have and its
	// clients do not send): incremental skips rows stored unchanged (spec.sync.mode).
	SyncMode string
}

// ProcessResponse is the 202 body.
type ProcessResponse struct {
	TaskID    string `json:"task_id"`
	Status    string `json:"status"`
	Message   string `json:"message"`
	CreatedAt string `json:"created_at"`
}

// parameters is the legacy parameters object (DESIGN §7), stored in AnnotationParameters and
// reported in a status's metadata.
type parameters struct {
	DataSource string `json:"data_source,omitempty"`
	S3Key      string `json:"s3_key,omitempty"`
	QuestionID int64  `json:"question_id,omitempty"`
	Namespace  string `json:"namespace"`
	ChunkSize  int64  `json:"chunk_size,omitempty"`
	BatchSize  int64  `json:"batch_size,omitempty"`
	StartDate  string `json:"start_date,omitempty"`
	EndDate    string `json:"end_date,omitempty"`
	Priority   string `json:"priority,omitempty"`
}

// The old route's own checks answered 400 {"detail": "..."} with these messages, after pydantic
// had validated the model (its failures are 422). A FieldError of Type routeCheck is one of them.
const (
	DetailQuestionIDRequired = "question_id is required for CSV processing to construct proper vector IDs (format: question_id.row_id)"
	DetailStartDateRequired  = "start_date is required for metabase data source"
	routeCheck               = "route_check"
)

// splitRouteChecks separates the old route's 400 checks from the model's 422 errors: the model
// is validated first, so route (the 400's detail) is set only when nothing else is wrong.
func splitRouteChecks(errs []FieldError) (invalid []FieldError, route string) {
	for _, e := range errs {
		if e.Type == routeCheck {
			if route == "" {
				route = e.Msg
			}
			continue
		}
		invalid = append(invalid, e)
	}
	if len(invalid) > 0 {
		return invalid, "" // the model failed: the route never ran
	}
	return nil, route
}

// ParseProcessRequest reads and checks a body the way the old API's model did: every bad field is
// reported, named by its loc. Unknown fields are ignored and null is the same as absent, as
// pydantic does; integers may be given as whole floats or decimal strings (pydantic's lax mode).
func ParseProcessRequest(body []byte, d Defaults) (ProcessRequest, []FieldError) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if len(bytes.TrimSpace(body)) == 0 {
		return ProcessRequest{}, []FieldError{{Loc: []string{"body"}, Msg: "Field required: a JSON object is expected", Type: "missing"}}
	}
	if err := dec.Decode(&raw); err != nil || raw == nil {
		msg := "Input should be a JSON object"
		var se *json.SyntaxError
		if errors.As(err, &se) {
			msg = fmt.Sprintf("JSON decode error at byte %d: %s", se.Offset, se.Error())
		}
		return ProcessRequest{}, []FieldError{{Loc: []string{"body"}, Msg: msg, Type: "json_invalid"}}
	}
	if rest := bytes.TrimSpace(body[dec.InputOffset():]); len(rest) > 0 {
		return ProcessRequest{}, []FieldError{{Loc: []string{"body"}, Msg: "JSON decode error: data after the object", Type: "json_invalid"}}
	}

	var errs []FieldError
	bad := func(field, typ, format string, args ...any) {
		errs = append(errs, FieldError{Loc: []string{"body", field}, Msg: fmt.Sprintf(format, args...), Type: typ})
	}
	present := func(field string) bool {
		v, ok := raw[field]
		return ok && string(bytes.TrimSpace(v)) != "null"
	}
	str := func(field string) (string, bool) {
		var s string
		if err := json.Unmarshal(raw[field], &s); err != nil {
			bad(field, "string_type", "Input should be a valid string")
			return "", false
		}
		return s, true
	}
	integer := func(field string) (int64, bool) {
		n, ok := laxInt(raw[field])
		if !ok {
			bad(field, "int_parsing", "Input should be a valid integer")
		}
		return n, ok
	}

	req := ProcessRequest{
		DataSource: SourceS3CSV,
		BatchSize:  int64(d.BatchSize),
		ChunkSize:  int64(d.RowsPerChunk),
		Namespace:  d.PineconeNamespace,
		Priority:   defaultPriority,
	}
	if present("data_source") {
		if s, ok := str("data_source"); ok {
			switch s {
			case SourceS3CSV:
				req.DataSource = s
			case SourceMetabase:
				req.DataSource = s
				if d.MetabaseURL == "" {
					bad("data_source", "value_error", "data_source metabase is not enabled on this server (no Metabase URL is configured)")
				}
			default:
				bad("data_source", "enum", "Input should be 's3_csv' or 'metabase'")
			}
		}
	}
	if present("s3_key") {
		if s, ok := str("s3_key"); ok {
			switch {
			case s == "":
				bad("s3_key", "string_too_short", "s3_key must not be empty")
			case len(s) > maxS3KeyBytes:
				bad("s3_key", "string_too_long", "s3_key must be at most %d bytes", maxS3KeyBytes)
			case !printable(s):
				bad("s3_key", "value_error", "s3_key must be UTF-8 text without control characters")
			default:
				req.S3Key = s
			}
		}
	} else if req.DataSource == SourceS3CSV {
		bad("s3_key", "missing", "s3_key is required when data_source is s3_csv")
	}
	if present("question_id") {
		if n, ok := integer("question_id"); ok {
			if n < 1 {
				bad("question_id", "greater_than_equal", "question_id must be a positive integer")
			} else {
				req.QuestionID = n
			}
		}
	} else if req.DataSource == SourceS3CSV {
		// The old route's own check, after the model validated: 400, not 422 (routeCheck).
		bad("question_id", routeCheck, DetailQuestionIDRequired)
	} else {
		bad("question_id", "missing", "question_id is required: it forms the vector id prefix \"<question_id>.\"")
	}
	var start, end time.Time
	if present("start_date") {
		if s, ok := str("start_date"); ok {
			if t, ok := parseDate(s); ok {
				req.StartDate, start = s, t
			} else {
				bad("start_date", "date_from_datetime_parsing", "start_date must be a date as YYYY-MM-DD")
			}
		}
	} else if req.DataSource == SourceMetabase {
		bad("start_date", routeCheck, DetailStartDateRequired)
	}
	if present("end_date") {
		if s, ok := str("end_date"); ok {
			t, ok := parseDate(s)
			switch {
			case !ok:
				bad("end_date", "date_from_datetime_parsing", "end_date must be a date as YYYY-MM-DD")
			case !start.IsZero() && t.Before(start):
				bad("end_date", "value_error", "end_date must not be before start_date")
			default:
				req.EndDate, end = s, t
			}
		}
	}
	if end.IsZero() && !start.IsZero() && req.DataSource == SourceMetabase {
		req.EndDate = start.Add(metabaseWindow).Format(dateLayout)
	}
	if present("batch_size") {
		if n, ok := integer("batch_size"); ok {
			if n < minBatchSize || n > maxBatchSize {
				bad("batch_size", "value_error", "batch_size must be between %d and %d", minBatchSize, maxBatchSize)
			} else {
				req.BatchSize = n
			}
		}
	}
	if present("chunk_size") {
		if n, ok := integer("chunk_size"); ok {
			if n < minChunkSize || n > maxChunkSize {
				bad("chunk_size", "value_error", "chunk_size must be between %d and %d", minChunkSize, maxChunkSize)
			} else {
				req.ChunkSize = n
			}
		}
	}
	if present("namespace") {
		if s, ok := str("namespace"); ok {
			switch {
			case len(s) > maxNamespace:
				bad("namespace", "string_too_long", "namespace must be at most %d bytes", maxNamespace)
			case !printable(s):
				bad("namespace", "value_error", "namespace must be UTF-8 text without control characters")
			default:
				req.Namespace = s
			}
		}
	}
	if present("priority") {
		if p, ok := parsePriority(raw["priority"]); ok {
			req.Priority = p
		} else {
			bad("priority", "value_error", "priority must be one of low, normal, high or an integer 0–9")
		}
	}
	if present("sync_mode") {
		if s, ok := str("sync_mode"); ok {
			switch s {
			case v1alpha1.SyncFull, v1alpha1.SyncIncremental:
				req.SyncMode = s
			default:
				bad("sync_mode", "enum", "Input should be 'full' or 'incremental'")
			}
		}
	}
	return req, errs
}

// laxInt reads an integer given as a JSON number (whole floats included) or a decimal string.
func laxInt(raw json.RawMessage) (int64, bool) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return 0, false
	}
	var s string
	switch t := v.(type) {
	case json.Number:
		s = t.String()
	case string:
		s = strings.TrimSpace(t)
	default:
		return 0, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

func parseDate(s string) (time.Time, bool) {
	if !datePattern.MatchString(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(dateLayout, s)
	return t, err == nil
}

func parsePriority(raw json.RawMessage) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		s = strings.ToLower(strings.TrimSpace(s))
		if priorityWords[s] {
			return s, true
		}
	}
	if n, ok := laxInt(raw); ok && n >= 0 && n <= 9 {
		return strconv.FormatInt(n, 10), true
	}
	return "", false
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// BuildIngestion is the CsvIngestion for a legacy request: the operator's defaults plus what the
// request names. The mapping is the legacy row contract: id and formatted_text columns, vector id
// "<question_id>.<id>", every other column as metadata.
func BuildIngestion(req ProcessRequest, d Defaults, taskID string, created time.Time) (*v1alpha1.CsvIngestion, error) {
	params := parameters{
		DataSource: req.DataSource, S3Key: req.S3Key, QuestionID: req.QuestionID, Namespace: req.Namespace,
		ChunkSize: req.ChunkSize, BatchSize: req.BatchSize, StartDate: req.StartDate, EndDate: req.EndDate,
		Priority: req.Priority,
	}
	pj, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("encoding parameters: %w", err)
	}
	conn := v1alpha1.S3Connection{Region: d.S3Region, Endpoint: d.S3Endpoint}
	if d.S3CredentialsSecret != "" {
		conn.CredentialsSecretRef = &v1alpha1.S3CredentialsSecretRef{Name: d.S3CredentialsSecret}
	}
	obj := &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{
			Name:      NamePrefix + taskID,
			Namespace: d.Namespace,
			Labels: map[string]string{
				worker.LabelTaskID: taskID,
				LabelPriority:      req.Priority,
				LabelCreatedBy:     createdByValue,
			},
			Annotations: map[string]string{
				AnnotationParameters: string(pj),
				AnnotationCreatedAt:  created.UTC().Format(tasktable.TimeFormat),
			},
		},
		Spec: v1alpha1.CsvIngestionSpec{
			TaskID: taskID,
			Mapping: v1alpha1.MappingSpec{
				IDColumn:   legacyIDColumn,
				IDPrefix:   strconv.FormatInt(req.QuestionID, 10) + ".",
				TextColumn: legacyTextColumn,
				Sanitize:   d.Sanitize,
				// The old service's metadata, field for field: an upsert replaces a vector's
				// metadata whole, so the old consumers' filters keep matching.
				Metadata: v1alpha1.MetadataSpec{Format: "legacy"},
			},
			Embedding: v1alpha1.EmbeddingSpec{
				Model:             d.Model,
				APIKeySecretRef:   d.OpenAISecret,
				RequestsPerMinute: d.RequestsPerMinute,
			},
			Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{
				Index:           d.Index,
				Namespace:       req.Namespace,
				APIKeySecretRef: d.PineconeSecret,
				BatchSize:       int32(min(req.BatchSize, MaxPineconeBatch)),
			}},
			Chunking: v1alpha1.ChunkingSpec{
				RowsPerChunk: int32(req.ChunkSize),
				Parallelism:  d.Parallelism,
				ChunkTimeout: metav1.Duration{Duration: d.ChunkTimeout},
			},
		},
	}
	if req.SyncMode != "" {
		obj.Spec.Sync = &v1alpha1.SyncSpec{Mode: req.SyncMode}
	}
	switch req.DataSource {
	case SourceMetabase:
		stage := v1alpha1.S3Stage{Bucket: d.StageBucket, KeyPrefix: d.StagePrefix, S3Connection: conn}
		obj.Spec.Source.Metabase = &v1alpha1.MetabaseSource{
			URL:             d.MetabaseURL,
			QuestionID:      req.QuestionID,
			Parameters:      map[string]string{"Start_Date": req.StartDate, "End_Date": req.EndDate},
			APIKeySecretRef: d.MetabaseSecret,
			StageTo:         stage,
		}
	default:
		obj.Spec.Source.S3 = &v1alpha1.S3Source{Bucket: d.Bucket, Key: req.S3Key, S3Connection: conn}
	}
	if d.DynamoDB.Table != "" {
		t := d.DynamoDB
		obj.Spec.Tracking = &v1alpha1.TrackingSpec{DynamoDB: &t}
	}
	if d.DeadLetter.Bucket != "" {
		dl := d.DeadLetter
		obj.Spec.DeadLetter = &dl
	}
	return obj, nil
}

func (s *Server) handleProcess(w http.ResponseWriter, r *http.Request) {
	ri := info(r.Context())
	body, err := readBody(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than %d bytes", mbe.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "Cannot read the request body")
		return
	}
	if c := callerOf(r.Context()); !c.scope.Allows(s.cfg.Defaults.Namespace) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("This API key may not create tasks: they are created in namespace %s, which is not among the key's namespaces (%s)", s.cfg.Defaults.Namespace, c.scope))
		return
	}
	req, ferrs := ParseProcessRequest(body, s.cfg.Defaults)
	if invalid, route := splitRouteChecks(ferrs); len(invalid) > 0 {
		writeInvalid(w, invalid)
		return
	} else if route != "" {
		writeError(w, http.StatusBadRequest, route)
		return
	}
	taskID := uuid.NewString()
	created := time.Now()
	obj, err := BuildIngestion(req, s.cfg.Defaults, taskID, created)
	if err != nil {
		s.log.Error(err, "building CsvIngestion", "requestID", ri.id)
		writeError(w, http.StatusInternalServerError, "Internal server error")
		return
	}
	obj.Annotations[AnnotationRequestID] = ri.id
	if err := s.deps.Client.Create(r.Context(), obj); err != nil {
		s.writeAPIError(w, r, err, "creating CsvIngestion "+obj.Namespace+"/"+obj.Name)
		return
	}
	s.log.Info("task created", "taskID", taskID, "namespace", obj.Namespace, "name", obj.Name,
		"dataSource", req.DataSource, "requestID", ri.id)
	w.Header().Set("Location", "/api/v1/status/"+taskID)
	writeJSON(w, http.StatusAccepted, ProcessResponse{
		TaskID:    taskID,
		Status:    taskstatus.Pending,
		Message:   fmt.Sprintf("Task created as CsvIngestion %s/%s", obj.Namespace, obj.Name),
		CreatedAt: created.UTC().Format(tasktable.TimeFormat),
	})
}

func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	return buf.Bytes(), nil
}
