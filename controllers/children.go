package controllers

import (
	"context"
	"fmt"
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
	// permanent is set when the Job failed through the podFailurePolicy (permanent exit code).
	permanent bool
}

type children struct {
	planner *childJob
	chunks  map[int]*childJob
	plan    *worker.Plan
	planErr error
}

func (r *Reconciler) listChildren(ctx context.Context, obj *v1alpha1.CsvIngestion) (*children, error) {
	var jobs batchv1.JobList
	if err := r.List(ctx, &jobs, client.InNamespace(obj.Namespace), client.MatchingFields{jobOwnerUIDIndex: string(obj.UID)}); err != nil {
		return nil, fmt.Errorf("list jobs of %s: %w", obj.Name, err)
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(obj.Namespace), client.MatchingFields{podIngestionUIDIdx: string(obj.UID)}); err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", obj.Name, err)
	}
	podsByJob := map[string][]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if name := p.Labels["batch.kubernetes.io/job-name"]; name != "" {
			podsByJob[name] = append(podsByJob[name], p)
		}
	}

	kids := &children{chunks: map[int]*childJob{}}
	seen := make(map[string]bool, len(jobs.Items))
	for i := range jobs.Items {
		seen[jobs.Items[i].Name] = true
	}
	unseen := r.unseenJobs(obj.UID, seen)
	for i := range jobs.Items {
		j := &jobs.Items[i]
		c := describeJob(j, podsByJob[j.Name])
		switch j.Labels[worker.LabelRole] {
		case worker.RolePlan:
			c.index = -1
			kids.planner = c
		case worker.RoleChunk:
			idx, err := strconv.Atoi(j.Labels[worker.LabelChunk])
			if err != nil || j.Name != worker.ChunkJobName(obj.Name, idx) {
				continue // not one of ours in shape; never act on it
			}
			c.index = idx
			kids.chunks[idx] = c
		}
	}

	// Jobs this controller created that the cache doesn't show yet count as running.
	for _, j := range unseen {
		if idx, err := strconv.Atoi(j[len(obj.Name)+len("-chunk-"):]); err == nil && j == worker.ChunkJobName(obj.Name, idx) {
			if _, ok := kids.chunks[idx]; !ok {
				kids.chunks[idx] = &childJob{job: &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: j, Namespace: obj.Namespace}}, index: idx, state: jobActive}
			}
		} else if j == worker.PlanJobName(obj.Name) && kids.planner == nil {
			kids.planner = &childJob{job: &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: j, Namespace: obj.Namespace}}, index: -1, state: jobActive}
		}
	}

	var cms corev1.ConfigMapList
	if err := r.List(ctx, &cms, client.InNamespace(obj.Namespace), client.MatchingFields{configMapOwnerIndex: string(obj.UID)}); err != nil {
		return nil, fmt.Errorf("list plan of %s: %w", obj.Name, err)
	}
	for i := range cms.Items {
		cm := &cms.Items[i]
		if cm.Name != worker.PlanConfigMapName(obj.Name) {
			continue
		}
		kids.plan, kids.planErr = worker.DecodePlan(cm.Data[worker.PlanDataKey])
		if kids.planErr == nil && kids.plan.ETag == "" {
			kids.planErr = fmt.Errorf("plan has no ETag")
		}
	}
	return kids, nil
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
	c.result = lastResult(pods, c.state)
	return c
}

// lastResult reads the embedder's result from the newest terminated pod that matches the Job's
// outcome (a succeeded pod for a complete Job, otherwise the newest failed one).
func lastResult(pods []*corev1.Pod, state jobState) *worker.Result {
	sort.Slice(pods, func(a, b int) bool {
		return pods[a].CreationTimestamp.Before(&pods[b].CreationTimestamp)
	})
	for i := len(pods) - 1; i >= 0; i-- {
		p := pods[i]
		if state == jobSucceeded && p.Status.Phase != corev1.PodSucceeded {
			continue
		}
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
	}
	return nil
}

// expectationTTL bounds how long a created Job may stay invisible in the cache before the
// controller stops assuming it exists (then a create simply meets AlreadyExists).
const expectationTTL = time.Minute

// create makes a child Job, treating AlreadyExists as success: names are deterministic, so an
// existing child is the one this ingestion made earlier (possibly before a restart).
func (r *Reconciler) create(ctx context.Context, owner types.UID, job *batchv1.Job) error {
	if err := r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create job %s: %w", job.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.expected[owner] == nil {
		r.expected[owner] = map[string]time.Time{}
	}
	r.expected[owner][job.Name] = r.Now()
	return nil
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
