package podrunner

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

// schedule binds an unbound pod to the runner's Node: there is no kube-scheduler, the runner is
// the only node. A pod whose nodeSelector the Node does not match stays Pending, Unschedulable.
func (r *Runner) schedule(ctx context.Context, pod *corev1.Pod) error {
	if pod.DeletionTimestamp != nil || isTerminal(pod) ||
		(pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName) {
		return nil
	}
	if !labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(r.nodeLabels())) {
		return r.writeStatus(ctx, pod, func(p *corev1.Pod) bool {
			if p.Spec.NodeName != "" {
				return false
			}
			setCondition(&p.Status, corev1.PodScheduled, corev1.ConditionFalse, corev1.PodReasonUnschedulable)
			for i := range p.Status.Conditions {
				if p.Status.Conditions[i].Type == corev1.PodScheduled {
					p.Status.Conditions[i].Message = "0/1 nodes are available: 1 node(s) didn't match Pod's node selector."
				}
			}
			return true
		})
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: r.o.NodeName},
	}
	err := r.cs.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or bound meanwhile
	}
	if err != nil {
		return fmt.Errorf("binding pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	r.log.V(1).Info("pod bound", "pod", pod.Namespace+"/"+pod.Name)
	return nil
}

// deadline is when the pod's activeDeadlineSeconds runs out, counted like the kubelet from the
// pod's status.startTime (now if unset); zero if it has none.
func deadline(pod *corev1.Pod) time.Time {
	if pod.Spec.ActiveDeadlineSeconds == nil {
		return time.Time{}
	}
	start := time.Now()
	if pod.Status.StartTime != nil {
		start = pod.Status.StartTime.Time
	}
	return start.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second)
}

func pastDeadline(pod *corev1.Pod) bool {
	d := deadline(pod)
	return !d.IsZero() && !time.Now().Before(d)
}

// syncNew handles a pod on our Node that has no process of this runner.
func (r *Runner) syncNew(ctx context.Context, pod *corev1.Pod) (time.Duration, error) {
	if isTerminal(pod) {
		if pod.DeletionTimestamp != nil {
			return 0, r.finalizeDeletion(ctx, pod)
		}
		return 0, nil
	}
	if pod.DeletionTimestamp != nil {
		// Deleted before it ran: the kubelet reports it failed, then lets the deletion finish.
		err := r.writeStatus(ctx, pod, markFailed("", "", reasonStatusUnknown,
			"The container could not be located when the pod was terminated", exitStatusUnknown))
		if err != nil {
			return 0, err
		}
		return 0, r.finalizeDeletion(ctx, pod)
	}
	if lost(pod) {
		// Started by an earlier runner that is gone; its process is not ours to find.
		return 0, r.writeStatus(ctx, pod, markFailed("", "", reasonStatusUnknown,
			"The container could not be located: the pod runner that started it is gone", exitStatusUnknown))
	}
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) > 0 {
		return 0, r.writeStatus(ctx, pod, markFailed("Unsupported",
			"the pod runner runs pods with exactly one container and no init containers", reasonStartError, "", exitStartError))
	}
	if pastDeadline(pod) {
		return 0, r.writeStatus(ctx, pod, markFailed(reasonDeadlineExceeded, messageDeadlineExceeded,
			reasonStatusUnknown, "The container could not be located when the pod was terminated", exitStatusUnknown))
	}
	c := &pod.Spec.Containers[0]
	binary, ok := r.executable(c.Image)
	if !ok {
		msg := fmt.Sprintf("image %q is not in the pod runner's image map", c.Image)
		return 0, r.writeStatus(ctx, pod, markFailed(reasonErrImagePull, msg, reasonErrImagePull, msg, exitStartError))
	}
	env, err := r.resolveEnv(ctx, pod, c)
	var cfgErr *configError
	if errors.As(err, &cfgErr) {
		r.log.V(1).Info("pod env not resolvable yet", "pod", pod.Namespace+"/"+pod.Name, "reason", cfgErr.msg)
		if err := r.writeStatus(ctx, pod, markWaiting(reasonConfigError, cfgErr.msg)); err != nil {
			return 0, err
		}
		return configRetry, nil
	}
	if err != nil {
		return 0, err
	}

	st, err := r.startProcess(pod, binary, argv(c), env)
	if errors.Is(err, errStopped) {
		return 0, nil
	}
	if err != nil {
		return 0, r.writeStatus(ctx, pod, markFailed("", "", reasonStartError, err.Error(), exitStartError))
	}
	r.log.Info("process started", "pod", st.key, "binary", binary, "pid", st.pgid)
	if d := deadline(pod); !d.IsZero() {
		// Wake up at the deadline even if nothing else happens to the pod.
		key := st.key
		r.mu.Lock()
		st.timers = append(st.timers, time.AfterFunc(time.Until(d), func() { r.queue.Add(key) }))
		r.mu.Unlock()
	}
	return r.syncStarted(ctx, pod, st)
}

// lost tells whether the pod's status says its container ran, which a new process must not repeat.
func lost(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Running != nil || cs.State.Terminated != nil {
			return true
		}
	}
	return false
}

// syncStarted handles a pod whose process this runner started.
func (r *Runner) syncStarted(ctx context.Context, pod *corev1.Pod, st *podState) (time.Duration, error) {
	r.mu.Lock()
	if st.running() {
		switch {
		case pod.DeletionTimestamp != nil:
			r.terminate(st, gracePeriod(pod))
		case pastDeadline(pod):
			if !st.deadlineExceeded {
				r.log.Info("pod deadline exceeded, stopping its process", "pod", st.key)
			}
			st.deadlineExceeded = true
			r.terminate(st, gracePeriod(pod))
		}
		report := !st.runningReported
		r.mu.Unlock()
		if !report {
			return 0, nil
		}
		if err := r.writeStatus(ctx, pod, markRunning(st)); err != nil {
			return 0, err
		}
		r.mu.Lock()
		st.runningReported = true
		r.mu.Unlock()
		return 0, nil
	}
	report := !st.terminalReported
	code, dl, finished := st.exitCode, st.deadlineExceeded, st.finished
	r.mu.Unlock()

	if report {
		msg := terminationMessage(st, pod.Spec.Containers[0].TerminationMessagePolicy)
		if err := r.writeStatus(ctx, pod, markExited(st, code, dl, msg, finished)); err != nil {
			return 0, err
		}
		r.mu.Lock()
		st.terminalReported = true
		r.mu.Unlock()
	}
	if pod.DeletionTimestamp != nil {
		return 0, r.finalizeDeletion(ctx, pod)
	}
	return 0, nil
}

// finalizeDeletion completes the deletion of a finished pod, as the kubelet does once its
// containers are gone. Finalizers (the Job controller's tracking finalizer) still hold the object
// until their owners remove them.
func (r *Runner) finalizeDeletion(ctx context.Context, pod *corev1.Pod) error {
	if g := pod.DeletionGracePeriodSeconds; g != nil && *g == 0 {
		return nil
	}
	err := r.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finalizing deletion of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
