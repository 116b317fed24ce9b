package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Field indexes: children are found by their owner's UID, never by name alone, so a recreated
// CsvIngestion of the same name never adopts its predecessor's Jobs.
const (
	jobOwnerUIDIndex    = ".metadata.ownerReferences.controllerUID"
	podIngestionUIDIdx  = ".metadata.labels.ingestionUID"
	configMapOwnerIndex = ".metadata.ownerReferences.controllerUID"
)

func controllerUID(obj client.Object) []string {
	if ref := metav1.GetControllerOf(obj); ref != nil && ref.Kind == "CsvIngestion" {
		return []string{string(ref.UID)}
	}
	return nil
}

func podIngestionUID(obj client.Object) []string {
	if uid := obj.GetLabels()[worker.LabelUID]; uid != "" {
		return []string{uid}
	}
	return nil
}

// jobState is what a Job says of its chunk (or the plan).
type jobState int

const (
	jobActive jobState = iota
	jobSuspended
	jobSucceeded
	jobFailed
)

type childJob struct {
	job   *batchv1.Job
	index int // chunk index; -1 for the planner
	state jobState
	// From the Job's Failed condition.
	failReason, failMessage string
	// Result of the last pod that terminated with a message the embedder wrote.
	result *worker.Result
	// usage adds up the API usage of every attempt (pod) that left a readable result.
	usage worker.Result
	// permanent is set when the Job failed through the podFailurePolicy (permanent exit code).
	permanent bool
	// held are the Job's pods that still carry the outcome finalizer.
	held []*corev1.Pod
	// pods counts the Job's pods in the cache, held or not (released ones are not in it).
	pods int
	// gone is set when the Job no longer exists and the chunk is known from its pods alone.
	gone bool
}

// released tells whether the controller is done with a recorded child: its pods no longer hold
// the outcome finalizer and its Job has the TTL that lets it go.
func (c *childJob) released() bool {
	return len(c.held) == 0 && (c.gone || c.job.Spec.TTLSecondsAfterFinished != nil)
}

type children struct {
	planner *childJob
	// sync is the Job of spec.sync.deleteMissing's step, once created.
	sync    *childJob
	chunks  map[int]*childJob
	plan    *worker.Plan
	planErr error
	// planFound is set when the plan ConfigMap exists (even if it is unusable).
	planFound bool
	// orphans are pods holding the outcome finalizer with no Job and no chunk to record.
	orphans []*corev1.Pod
	// held are all of the ingestion's pods holding the outcome finalizer.
	held []*corev1.Pod
}

// listChildren reads the ingestion's Jobs, Pods and plan from the cache. A chunk already recorded
// whose Job is released is skipped without being described: the cost of a pass grows with what is
// still open, not with what is done.
func (r *Reconciler) listChildren(ctx context.Context, obj *v1alpha1.CsvIngestion, recorded func(int) bool) (*children, error) {
	var jobs batchv1.JobList
	// The cached objects are only read here; a write copies them first.
	if err := r.List(ctx, &jobs, client.InNamespace(obj.Namespace), client.MatchingFields{jobOwnerUIDIndex: string(obj.UID)},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list jobs of %s: %w", obj.Name, err)
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(obj.Namespace), client.MatchingFields{podIngestionUIDIdx: string(obj.UID)},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", obj.Name, err)
	}
	podsByJob := map[string][]*corev1.Pod{}
	var held []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
			held = append(held, p)
		}
		if name := p.Labels["batch.kubernetes.io/job-name"]; name != "" {
			podsByJob[name] = append(podsByJob[name], p)
		}
	}

	kids := &children{chunks: map[int]*childJob{}, held: held}
	seen := make(map[string]bool, len(jobs.Items))
	for i := range jobs.Items {
		j := &jobs.Items[i]
		seen[j.Name] = true
		switch j.Labels[worker.LabelRole] {
		case worker.RolePlan:
			if j.Name != worker.PlanJobName(obj.Name) {
				continue
			}
			c := describeJob(j, podsByJob[j.Name])
			c.index = -1
			kids.planner = c
		case worker.RoleSync:
			if j.Name != worker.SyncJobName(obj.Name) {
				continue
			}
			c := describeJob(j, podsByJob[j.Name])
			c.index = -1
			kids.sync = c
		case worker.RoleChunk:
			idx, err := strconv.Atoi(j.Labels[worker.LabelChunk])
			if err != nil || j.Name != worker.ChunkJobName(obj.Name, idx) {
				continue // not one of ours in shape; never act on it
			}
			if recorded(idx) && j.Spec.TTLSecondsAfterFinished != nil && !anyHeld(podsByJob[j.Name]) {
				continue // recorded and released: nothing left to read or do
			}
			c := describeJob(j, podsByJob[j.Name])
			c.index = idx
			kids.chunks[idx] = c
		}
	}

	// Pods whose Job is gone (deleted by hand, or a TTL set by an older version) still hold
	// their outcome: a chunk with a succeeded pod is known from it.
	for name, ps := range podsByJob {
		if seen[name] || !anyHeld(ps) {
			continue
		}
		role := ps[0].Labels[worker.LabelRole]
		idx, err := strconv.Atoi(ps[0].Labels[worker.LabelChunk])
		if role != worker.RoleChunk || err != nil || name != worker.ChunkJobName(obj.Name, idx) {
			kids.orphans = append(kids.orphans, heldPods(ps)...)
			continue
		}
		if recorded(idx) {
			kids.orphans = append(kids.orphans, heldPods(ps)...)
			continue
		}
		c := describePods(ps)
		if c.state != jobSucceeded {
			// Attempts of a deleted, unfinished Job: the chunk runs again under the same Job
			// name, and these attempts' usage is counted when it finishes.
			continue
		}
		c.index, c.gone = idx, true
		c.job = &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: obj.Namespace}}
		kids.chunks[idx] = c
	}

	// Jobs this controller created that the cache doesn't show yet count as running.
	for _, name := range r.unseenJobs(obj.UID, seen) {
		placeholder := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: obj.Namespace}}
		if name == worker.PlanJobName(obj.Name) {
			if kids.planner == nil {
				kids.planner = &childJob{job: placeholder, index: -1, state: jobActive}
			}
			continue
		}
		if name == worker.SyncJobName(obj.Name) {
			if kids.sync == nil {
				kids.sync = &childJob{job: placeholder, index: -1, state: jobActive}
			}
			continue
		}
		if idx, ok := chunkIndexOf(obj.Name, name); ok {
			if c, found := kids.chunks[idx]; !found || c.gone {
				state := jobActive
				if obj.Spec.Worker.QueueName != "" {
					state = jobSuspended // created suspended: queued in Kueue, not admitted yet
				}
				kids.chunks[idx] = &childJob{job: placeholder, index: idx, state: state}
			}
		}
	}

	var cms corev1.ConfigMapList
	if err := r.List(ctx, &cms, client.InNamespace(obj.Namespace), client.MatchingFields{configMapOwnerIndex: string(obj.UID)},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list plan of %s: %w", obj.Name, err)
	}
	for i := range cms.Items {
		cm := &cms.Items[i]
		if cm.Name != worker.PlanConfigMapName(obj.Name) || !cm.DeletionTimestamp.IsZero() {
			continue
		}
		kids.planFound = true
		kids.plan, kids.planErr = r.decodePlan(obj.UID, cm)
	}
	return kids, nil
}

// chunkIndexOf is the chunk index of a Job name this controller made for the ingestion, found by
// recomputing the name (names may be shortened with a hash, so they are not parsed).
func chunkIndexOf(ingestion, jobName string) (int, bool) {
	if jobName == worker.PlanJobName(ingestion) || jobName == worker.SyncJobName(ingestion) {
		return 0, false
	}
	// The index is the digits after the last "-chunk-".
	for i := len(jobName) - 1; i >= 0; i-- {
		if jobName[i] < '0' || jobName[i] > '9' {
			idx, err := strconv.Atoi(jobName[i+1:])
			if err != nil || worker.ChunkJobName(ingestion, idx) != jobName {
				return 0, false
			}
			return idx, true
		}
	}
	return 0, false
}

// decodePlan parses the plan ConfigMap once per version of it: a plan of 50,000 chunks is a large
// JSON document, and it does not change (the ConfigMap is immutable).
func (r *Reconciler) decodePlan(owner types.UID, cm *corev1.ConfigMap) (*worker.Plan, error) {
	r.mu.Lock()
	c, ok := r.plans[owner]
	r.mu.Unlock()
	if ok && c.uid == cm.UID && c.resourceVersion == cm.ResourceVersion {
		return c.plan, c.err
	}
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err == nil && plan.ETag == "" {
		plan, err = nil, fmt.Errorf("plan has no ETag")
	}
	r.mu.Lock()
	r.plans[owner] = cachedPlan{uid: cm.UID, resourceVersion: cm.ResourceVersion, plan: plan, err: err}
	r.mu.Unlock()
	return plan, err
}

type cachedPlan struct {
	uid             types.UID
	resourceVersion string
	plan            *worker.Plan
	err             error
}

// fingerprint identifies a plan for status.plan.
func fingerprint(p *worker.Plan) *v1alpha1.PlanFingerprint {
	h := sha256.New()
	var b [8]byte
	for _, o := range p.Offsets {
		binary.LittleEndian.PutUint64(b[:], uint64(o))
		h.Write(b[:])
	}
	return &v1alpha1.PlanFingerprint{ETag: p.ETag, Rows: p.TotalRows, RowsPerChunk: p.RowsPerChunk,
		Chunks: int32(p.Chunks()), OffsetsSHA256: hex.EncodeToString(h.Sum(nil))}
}

// podsCounted tells whether the Job controller counted any pod of the Job: a finished Job with
// none never had a pod (e.g. its deadline passed while every pod creation was refused).
func podsCounted(j *batchv1.Job) bool {
	u := j.Status.UncountedTerminatedPods
	return j.Status.Succeeded+j.Status.Failed > 0 || (u != nil && len(u.Succeeded)+len(u.Failed) > 0)
}

func anyHeld(pods []*corev1.Pod) bool {
	for _, p := range pods {
		if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
			return true
		}
	}
	return false
}

func heldPods(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
			out = append(out, p)
		}
	}
	return out
}

func describeJob(j *batchv1.Job, pods []*corev1.Pod) *childJob {
	c := &childJob{job: j, state: jobActive}
	if j.Spec.Suspend != nil && *j.Spec.Suspend {
		c.state = jobSuspended
	}
	for _, cond := range j.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			continue
		}
		switch cond.Type {
		case batchv1.JobComplete:
			c.state = jobSucceeded
		case batchv1.JobFailed:
			c.state = jobFailed
			c.failReason, c.failMessage = cond.Reason, cond.Message
			c.permanent = cond.Reason == batchv1.JobReasonPodFailurePolicy
		}
	}
	readPods(c, pods)
	return c
}

// describePods describes a chunk whose Job is gone from its pods: succeeded if one succeeded.
func describePods(pods []*corev1.Pod) *childJob {
	c := &childJob{state: jobActive}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded {
			c.state = jobSucceeded
		}
	}
	readPods(c, pods)
	return c
}

func readPods(c *childJob, pods []*corev1.Pod) {
	c.held = heldPods(pods)
	c.pods = len(pods)
	c.result = lastResult(pods, c.state)
	c.usage = attemptUsage(pods)
}

// podResult reads the embedder's result from a terminated pod's message; nil without one.
func podResult(p *corev1.Pod) *worker.Result {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != containerName || cs.State.Terminated == nil || cs.State.Terminated.Message == "" {
			continue
		}
		res, err := worker.DecodeResult(cs.State.Terminated.Message)
		if err != nil {
			// FallbackToLogsOnError: the message may be the log tail of a crash.
			res = worker.Result{Error: cs.State.Terminated.Message}
		}
		if res.Reason == "" && cs.State.Terminated.ExitCode == worker.ExitPermanent {
			res.Reason = worker.ReasonPermanentError
		}
		return &res
	}
	return nil
}

// lastResult reads the embedder's result from the newest terminated pod that matches the Job's
// outcome (a succeeded pod for a complete Job, otherwise the newest failed one).
func lastResult(pods []*corev1.Pod, state jobState) *worker.Result {
	sorted := slices.Clone(pods)
	sort.SliceStable(sorted, func(a, b int) bool {
		return sorted[a].CreationTimestamp.Before(&sorted[b].CreationTimestamp)
	})
	for i := len(sorted) - 1; i >= 0; i-- {
		p := sorted[i]
		if state == jobSucceeded && p.Status.Phase != corev1.PodSucceeded {
			continue
		}
		if res := podResult(p); res != nil {
			return res
		}
	}
	return nil
}

// attemptUsage adds up the API usage of every terminated attempt: a failed attempt before a
// success was paid for too.
func attemptUsage(pods []*corev1.Pod) worker.Result {
	var u worker.Result
	for _, p := range pods {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			continue
		}
		if res := podResult(p); res != nil {
			u.Tokens += max(res.Tokens, 0)
			u.Requests += max(res.Requests, 0)
			u.Retries += max(res.Retries, 0)
			u.RateLimited += max(res.RateLimited, 0)
			u.Deleted += max(res.Deleted, 0)
		}
	}
	return u
}

// expectationTTL bounds how long a created Job may stay invisible in the cache before the
// controller stops assuming it exists (then a create simply meets AlreadyExists).
const expectationTTL = time.Minute

// create makes a child Job, treating AlreadyExists as success: names are deterministic, so an
// existing child is the one this ingestion made earlier (possibly before a restart). The error of
// a refused create is returned unwrapped so the caller can report the server's message.
func (r *Reconciler) create(ctx context.Context, owner types.UID, job *batchv1.Job) error {
	if err := r.Create(ctx, job); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		if err := r.nameTaken(ctx, owner, job); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.expected[owner] == nil {
		r.expected[owner] = map[string]time.Time{}
	}
	r.expected[owner][job.Name] = r.Now()
	return nil
}

// ReasonJobNameTaken is the Blocked reason when a child's name is held by a Job that is not the
// ingestion's.
const ReasonJobNameTaken = "JobNameTaken"

// nameTaken checks, past the cache, the Job a create met under the child's name. Another
// owner's (a leftover of an earlier ingestion of the same name that the garbage collector has
// not removed yet, or anyone's) is refused like a write the API server refused: it becomes the
// Blocked condition and is tried again with backoff. Taken for this ingestion's own, the pass
// would wait for a Job it never sees (the cache lists children by owner UID) and, its
// expectation expired, for an event that may never come.
func (r *Reconciler) nameTaken(ctx context.Context, owner types.UID, job *batchv1.Job) error {
	if r.APIReader == nil {
		return nil
	}
	cur := &batchv1.Job{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), cur); err != nil {
		if apierrors.IsNotFound(err) {
			// Gone since: the next pass creates it (its deletion wakes no pass of this ingestion).
			return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure,
				Reason: ReasonJobNameTaken, Message: fmt.Sprintf("Job %s existed when created and was gone when read; trying again", job.Name)}}
		}
		return fmt.Errorf("read job %s: %w", job.Name, err)
	}
	ref := metav1.GetControllerOf(cur)
	if ref != nil && ref.UID == owner {
		return nil
	}
	who := "no owner"
	if ref != nil {
		who = fmt.Sprintf("owned by %s %s (uid %s)", ref.Kind, ref.Name, ref.UID)
	}
	state := ""
	if !cur.DeletionTimestamp.IsZero() {
		state = ", being deleted"
	}
	// No HTTP code: with 409 the error would read as a conflict, which is retried as an error.
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Reason: ReasonJobNameTaken,
		Message: fmt.Sprintf("Job %s already exists and is not this ingestion's (%s%s): a leftover of an earlier ingestion of this name goes once the garbage collector removes it; otherwise delete or rename it", job.Name, who, state)}}
}

// unseenJobs returns the Jobs created for owner that the cache does not show yet, and forgets
// those it now shows (or that are too old to wait for).
func (r *Reconciler) unseenJobs(owner types.UID, seen map[string]bool) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for name, at := range r.expected[owner] {
		if seen[name] || r.Now().Sub(at) > expectationTTL {
			delete(r.expected[owner], name)
			continue
		}
		out = append(out, name)
	}
	return out
}
