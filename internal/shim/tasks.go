package shim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
)

// GET /api/v1/tasks answers a bare JSON array of StatusResponse, as the old API's list[TaskStatus]
// did (clients iterate the body). The page is chosen by the query parameters, as before; these
// headers tell which page this is, how to get the next one, and, on a last page, how many tasks
// match in all.
const (
	// HeaderTotalCount is sent only when the whole list is known without reading further: on the
	// last page of a listing that started at the newest task.
	HeaderTotalCount = "X-Total-Count"
	HeaderLimit      = "X-Limit"
	HeaderOffset     = "X-Offset"
	// HeaderContinue holds the token for ?continue= that returns the page after this one; absent
	// on the last page. A page may hold fewer than limit tasks and still have a next one.
	HeaderContinue = "X-Continue"
)

// maxOffset bounds offset: a page's cost grows with offset+limit (that many task items are read),
// so deeper pages are reached with continue tokens.
const maxOffset = 10 * MaxListLimit

// listEntry is a task of the list and its place in the newest-first order.
type listEntry struct {
	st  StatusResponse
	pos tasktable.Cursor
}

func encodeCursor(c tasktable.Cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*tasktable.Cursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 1024 {
		return nil, false
	}
	var c tasktable.Cursor
	// A cursor without a task id is a page's horizon (tasktable.Page): a time up to which the
	// table was read, sent when nothing the key may see came before it.
	if err := json.Unmarshal(b, &c); err != nil || (c.TaskID != "" && !plausibleTaskID(c.TaskID)) {
		return nil, false
	}
	if _, err := time.Parse(tasktable.TimeFormat, c.CreatedAt); err != nil {
		return nil, false
	}
	return &c, true
}

// handleList lists the tasks of the key's namespaces, newest first: the cluster's (from the
// cache) merged with those only the task table still knows, read a bounded page at a time from
// the table's creation-time index (never a scan of the table).
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	var errs []FieldError
	bad := func(field, typ, msg string) {
		errs = append(errs, FieldError{Loc: []string{"query", field}, Msg: msg, Type: typ})
	}
	filter := strings.TrimSpace(q.Get("status_filter"))
	taskType := strings.TrimSpace(q.Get("task_type")) // e.g. s3_csv_processing, as the old API
	if filter != "" && !taskstatus.Valid(filter) {
		bad("status_filter", "enum", "status_filter must be one of "+strings.Join(taskstatus.All(), ", "))
	}
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad("limit", "int_parsing", "limit must be an integer")
		case n < 1 || n > MaxListLimit:
			bad("limit", "value_error", fmt.Sprintf("limit must be between 1 and %d", MaxListLimit))
		default:
			limit = n
		}
	}
	offset := 0
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad("offset", "int_parsing", "offset must be an integer")
		case n < 0 || n > maxOffset:
			bad("offset", "value_error", fmt.Sprintf("offset must be between 0 and %d; page further with the %s token", maxOffset, HeaderContinue))
		default:
			offset = n
		}
	}
	var after *tasktable.Cursor
	if v := q.Get("continue"); v != "" {
		c, ok := decodeCursor(v)
		switch {
		case !ok:
			bad("continue", "value_error", "continue must be a token from the "+HeaderContinue+" header of an earlier page")
		case offset > 0:
			bad("offset", "value_error", "offset cannot be combined with continue")
		default:
			after = c
		}
	}
	if len(errs) > 0 {
		writeInvalid(w, errs)
		return
	}
	need := offset + limit

	scope := callerOf(ctx).scope
	list, err := s.listIngestions(ctx, scope)
	if err != nil {
		s.writeAPIError(w, r, err, "listing tasks")
		return
	}
	active, err := s.activeChunksIn(ctx, scope)
	if err != nil {
		s.log.Error(err, "finding current chunks", "requestID", info(ctx).id)
	}
	seen := make(map[string]bool, len(list))
	var items []listEntry
	for i := range list {
		c := &list[i]
		st := fromIngestion(c, active[c.UID])
		seen[st.TaskID] = true
		pos := tasktable.Cursor{CreatedAt: st.Metadata.CreatedAt, TaskID: st.TaskID}
		if (filter == "" || st.Status == filter) && (taskType == "" || st.Metadata.TaskType == taskType) &&
			(after == nil || !after.Before(pos.CreatedAt, pos.TaskID)) {
			items = append(items, listEntry{st, pos})
		}
	}
	// Tasks whose resources were deleted live on in the task table.
	var horizon *tasktable.Cursor
	if s.deps.Tasks != nil {
		page, err := s.deps.Tasks.ListPage(ctx, tasktable.PageQuery{StatusFilter: filter, TaskType: taskType, Need: need, After: after})
		if err != nil {
			// The cluster's tasks are still worth answering with.
			s.log.Error(err, "listing the task table; answering from the cluster only", "requestID", info(ctx).id)
		}
		horizon = page.Horizon
		for i := range page.Tasks {
			t := &page.Tasks[i]
			if seen[t.TaskID] || !s.itemVisible(t, scope) {
				continue
			}
			st := fromTaskItem(t, nil)
			items = append(items, listEntry{st, tasktable.Cursor{CreatedAt: st.Metadata.CreatedAt, TaskID: st.TaskID}})
		}
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i].pos, items[j].pos
		if a.CreatedAt != b.CreatedAt {
			return a.CreatedAt > b.CreatedAt // TimeFormat sorts as text
		}
		return a.TaskID < b.TaskID
	})
	if horizon != nil {
		// Past the horizon the table was not read: the order there is not known yet.
		n := sort.Search(len(items), func(i int) bool { return !horizon.Before(items[i].pos.CreatedAt, items[i].pos.TaskID) })
		items = items[:n]
	}
	more := horizon != nil || len(items) > need
	page := []StatusResponse{}
	for i := offset; i < len(items) && i < need; i++ {
		page = append(page, items[i].st)
	}
	if more {
		next := horizon
		if n := min(len(items), need); n > 0 && n > offset {
			next = &items[n-1].pos
		}
		if next == nil && after != nil {
			next = after
		}
		if next != nil {
			w.Header().Set(HeaderContinue, encodeCursor(*next))
		}
	} else if after == nil {
		w.Header().Set(HeaderTotalCount, strconv.Itoa(len(items)))
	}
	w.Header().Set(HeaderLimit, strconv.Itoa(limit))
	w.Header().Set(HeaderOffset, strconv.Itoa(offset))
	writeJSON(w, http.StatusOK, page)
}

// listIngestions lists the CsvIngestions of scope's namespaces from the cache.
func (s *Server) listIngestions(ctx context.Context, scope apikeys.Scope) ([]v1alpha1.CsvIngestion, error) {
	if scope.All() {
		var list v1alpha1.CsvIngestionList
		if err := s.deps.Client.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("listing CsvIngestions: %w", err)
		}
		return list.Items, nil
	}
	var out []v1alpha1.CsvIngestion
	for _, ns := range s.visibleNamespaces(scope) {
		var list v1alpha1.CsvIngestionList
		if err := s.deps.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing CsvIngestions in %s: %w", ns, err)
		}
		out = append(out, list.Items...)
	}
	return out, nil
}

// activeChunksIn is activeChunks over the namespaces of scope.
func (s *Server) activeChunksIn(ctx context.Context, scope apikeys.Scope) (map[types.UID]int64, error) {
	if scope.All() {
		return s.activeChunks(ctx)
	}
	out := map[types.UID]int64{}
	for _, ns := range s.visibleNamespaces(scope) {
		m, err := s.activeChunks(ctx, client.InNamespace(ns))
		if err != nil {
			return out, err
		}
		maps.Copy(out, m)
	}
	return out, nil
}

// handleCancel sets spec.cancel: the controller deletes the running Jobs and the phase becomes
// Cancelled. As the old service, 409 when the task has finished or its cancel was already
// requested (the old service marked a task CANCELLED at once, so a second DELETE met a finished
// task).
func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	taskID, obj, ok := s.lookupTask(w, r)
	if !ok {
		return
	}
	if obj == nil {
		s.cancelGone(w, r, taskID)
		return
	}
	if word := taskstatus.FromPhase(obj.Status.Phase); taskstatus.Terminal(word) {
		writeError(w, http.StatusConflict, "Task already finished with status "+word)
		return
	}
	if obj.Spec.Cancel {
		writeError(w, http.StatusConflict, "Task is already being cancelled")
		return
	}
	// The patch is conditional on the resourceVersion read, so of two DELETEs at once exactly one
	// sets spec.cancel (204); the other meets a conflict, re-reads and answers 409. A conflict
	// from a stale cache read is retried with a fresh read.
	for attempt := 0; ; attempt++ {
		orig := obj.DeepCopy()
		obj.Spec.Cancel = true
		err := s.deps.Client.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if err == nil {
			break
		}
		if !apierrors.IsConflict(err) || attempt >= 3 {
			s.writeAPIError(w, r, err, "cancelling CsvIngestion "+obj.Namespace+"/"+obj.Name)
			return
		}
		var reader client.Reader = s.deps.Client
		if s.deps.APIReader != nil {
			reader = s.deps.APIReader
		}
		obj = &v1alpha1.CsvIngestion{}
		if err := reader.Get(ctx, client.ObjectKeyFromObject(orig), obj); err != nil {
			s.writeAPIError(w, r, err, "re-reading CsvIngestion "+orig.Namespace+"/"+orig.Name)
			return
		}
		if word := taskstatus.FromPhase(obj.Status.Phase); taskstatus.Terminal(word) {
			writeError(w, http.StatusConflict, "Task already finished with status "+word)
			return
		}
		if obj.Spec.Cancel {
			writeError(w, http.StatusConflict, "Task is already being cancelled")
			return
		}
	}
	s.log.Info("task cancelled", "taskID", taskID, "namespace", obj.Namespace, "name", obj.Name,
		"key", callerOf(ctx).key.Name, "requestID", info(ctx).id)
	w.WriteHeader(http.StatusNoContent)
}

// cancelGone answers a cancel of a task with no resource: known to the task table means there is
// nothing left to stop (409); unknown is 404.
func (s *Server) cancelGone(w http.ResponseWriter, r *http.Request, taskID string) {
	if s.deps.Tasks != nil {
		t, _, err := s.deps.Tasks.Get(r.Context(), taskID)
		switch {
		case err == nil && !s.itemVisible(t, callerOf(r.Context()).scope):
			// Another namespace's task: 404 below, as for a task that never was.
		case err == nil && taskstatus.Terminal(t.Status):
			writeError(w, http.StatusConflict, "Task already finished with status "+t.Status)
			return
		case err == nil:
			writeError(w, http.StatusConflict, "Task has no running ingestion left to cancel (its resource was deleted)")
			return
		case !errors.Is(err, tasktable.ErrNotFound):
			s.log.Error(err, "reading the task table", "taskID", taskID, "requestID", info(r.Context()).id)
			writeError(w, http.StatusServiceUnavailable, "Task table unavailable; try again later")
			return
		}
	}
	writeError(w, http.StatusNotFound, "Task not found")
}
