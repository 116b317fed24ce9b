package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Patches that need no read-modify-write: the finalizer goes from the list whatever else is in it
// (the Job controller removes its own at the same time), and the TTL is one field. A chunk's Job
// and pods also get the released label, which takes them out of the manager's cache.
var (
	releasePodPatch = client.RawPatch(types.StrategicMergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"$deleteFromPrimitiveList/finalizers":[%q]}}`, worker.FinalizerOutcome)))
	releaseChunkPodPatch = client.RawPatch(types.StrategicMergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"true"},"$deleteFromPrimitiveList/finalizers":[%q]}}`,
			worker.LabelReleased, worker.FinalizerOutcome)))
)

func ttlPatch(seconds int32, chunk bool) client.Patch {
	if chunk {
		return client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}},"spec":{"ttlSecondsAfterFinished":%d}}`,
			worker.LabelReleased, seconds)))
	}
	return client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"ttlSecondsAfterFinished":%d}}`, seconds)))
}

// release lets go of what the written status has recorded (and the task table accepted). A
// chunk's Job gets its TTL and the released label first, which takes it out of the cache; its
// pods then lose the outcome finalizer (if that second step is cut short, the next pass finds
// them held with no Job, recorded, and releases them as orphans; nothing is derived from them
// again). The planner's pods go first and then its Job, which stays cached. A finished
// ingestion lets go of everything; a finished planner once the plan is pinned.
func (r *Reconciler) release(ctx context.Context, p *pass, open map[int]ChunkOutcome) error {
	terminal := p.status.Phase.Terminal()
	for i, c := range p.kids.chunks {
		_, recordedOpen := open[i]
		switch {
		case recordedOpen:
		case terminal && (c.state == jobSucceeded || c.state == jobFailed || c.gone) && !c.released():
		default:
			continue
		}
		if err := r.releaseChild(ctx, p, c); err != nil {
			return err
		}
	}
	if pl := p.kids.planner; pl != nil && (p.status.Plan != nil || terminal) &&
		(pl.state == jobSucceeded || pl.state == jobFailed) && !pl.released() {
		if err := r.releaseChild(ctx, p, pl); err != nil {
			return err
		}
	}
	if s := p.kids.sync; s != nil && terminal && (s.state == jobSucceeded || s.state == jobFailed) && !s.released() {
		if err := r.releaseChild(ctx, p, s); err != nil {
			return err
		}
	}
	pods := p.kids.orphans
	if terminal {
		// Pods of chunks never recorded (cancelled, stopped): nothing will read them.
		pods = p.kids.held
	}
	for _, pod := range pods {
		if err := r.releasePod(ctx, p, pod); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) releaseChild(ctx context.Context, p *pass, c *childJob) error {
	chunk := c.index >= 0
	if !chunk {
		if err := r.releasePods(ctx, p, c.held); err != nil {
			return err
		}
	}
	if !c.gone && c.job.Spec.TTLSecondsAfterFinished == nil && c.job.UID != "" {
		job := &batchv1.Job{}
		job.Namespace, job.Name = c.job.Namespace, c.job.Name
		err := r.Patch(ctx, job, ttlPatch(int32(r.Config.JobTTL.Seconds()), chunk))
		switch {
		case err == nil || apierrors.IsNotFound(err):
		case p.refused("set the TTL of Job "+job.Name, err):
			return nil
		default:
			return fmt.Errorf("set ttl of job %s: %w", job.Name, err)
		}
	}
	if chunk {
		return r.releasePods(ctx, p, c.held)
	}
	return nil
}

func (r *Reconciler) releasePods(ctx context.Context, p *pass, pods []*corev1.Pod) error {
	for _, pod := range pods {
		if err := r.releasePod(ctx, p, pod); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) releasePod(ctx context.Context, p *pass, pod *corev1.Pod) error {
	target := &corev1.Pod{}
	target.Namespace, target.Name = pod.Namespace, pod.Name
	patch := releasePodPatch
	if pod.Labels[worker.LabelRole] == worker.RoleChunk {
		patch = releaseChunkPodPatch
	}
	err := r.Patch(ctx, target, patch)
	switch {
	case err == nil || apierrors.IsNotFound(err):
		return nil
	case p != nil && p.refused("remove the outcome finalizer of Pod "+pod.Name, err):
		return nil
	}
	return fmt.Errorf("remove the outcome finalizer of pod %s: %w", pod.Name, err)
}

// releaseGone lets go of pods of an ingestion of this name that no longer exists (keep is the
// UID of the current one, if any): nothing will ever record their outcome.
func (r *Reconciler) releaseGone(ctx context.Context, key types.NamespacedName, keep types.UID) error {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(key.Namespace), client.MatchingFields{podIngestionNameIdx: key.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list pods of %s: %w", key, err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if types.UID(pod.Labels[worker.LabelUID]) == keep || !hasFinalizer(pod) {
			continue
		}
		if err := r.releasePod(ctx, nil, pod); err != nil {
			return err
		}
	}
	return nil
}

func hasFinalizer(pod *corev1.Pod) bool {
	for _, f := range pod.Finalizers {
		if f == worker.FinalizerOutcome {
			return true
		}
	}
	return false
}
