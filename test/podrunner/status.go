package podrunner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

const loopback = "127.0.0.1"

// Reasons and messages the kubelet uses.
const (
	reasonDeadlineExceeded  = "DeadlineExceeded"
	messageDeadlineExceeded = "Pod was active on the node longer than the specified deadline"
	reasonConfigError       = "CreateContainerConfigError"
	reasonErrImagePull      = "ErrImagePull"
	reasonStartError        = "StartError"
	reasonStatusUnknown     = "ContainerStatusUnknown"
	reasonCompleted         = "Completed"
	reasonError             = "Error"
	reasonPodCompleted      = "PodCompleted"
	reasonNotReady          = "ContainersNotReady"
	// exitStatusUnknown is what the kubelet reports for a container that never ran or was lost.
	exitStatusUnknown = 137
	// exitStartError is what container runtimes report when the entrypoint cannot be started.
	exitStartError = 128
)

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// writeStatus applies mutate to the pod and writes its status if that changed anything. On a
// conflict it re-reads the pod and applies mutate again; mutate returns false to write nothing
// (for instance because the pod reached a terminal phase meanwhile). A pod that is gone, or has
// been replaced by one with another UID, is left alone.
func (r *Runner) writeStatus(ctx context.Context, pod *corev1.Pod, mutate func(*corev1.Pod) bool) error {
	cur := pod.DeepCopy()
	first := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			fresh, err := r.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			if fresh.UID != pod.UID {
				return nil
			}
			cur = fresh
		}
		first = false
		before := cur.Status.DeepCopy()
		if !mutate(cur) || equality.Semantic.DeepEqual(before, &cur.Status) {
			return nil
		}
		_, err := r.cs.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("writing status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// setCondition sets a condition, keeping its transition time when the status does not change.
func setCondition(s *corev1.PodStatus, typ corev1.PodConditionType, status corev1.ConditionStatus, reason string) {
	for i := range s.Conditions {
		c := &s.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = metav1.Now()
		}
		c.Status, c.Reason = status, reason
		return
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{
		Type: typ, Status: status, Reason: reason, LastTransitionTime: metav1.Now(),
	})
}

// bound fills what the kubelet reports for any pod it has accepted.
func bound(p *corev1.Pod) {
	s := &p.Status
	s.HostIP = loopback
	s.HostIPs = []corev1.HostIP{{IP: loopback}}
	if s.StartTime == nil {
		now := metav1.Now()
		s.StartTime = &now
	}
	setCondition(s, corev1.PodInitialized, corev1.ConditionTrue, "")
}

func containerStatus(p *corev1.Pod, state corev1.ContainerState, st *podState) []corev1.ContainerStatus {
	c := p.Spec.Containers[0]
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: state, Started: new(bool)}
	if st != nil {
		cs.ImageID = "file://" + st.binary
		cs.ContainerID = containerID(st)
		*cs.Started = state.Running != nil
		cs.Ready = state.Running != nil
	}
	return []corev1.ContainerStatus{cs}
}

// markWaiting keeps a pod Pending with its container waiting, as for a config error.
func markWaiting(reason, message string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		if isTerminal(p) {
			return false
		}
		bound(p)
		p.Status.Phase = corev1.PodPending
		setCondition(&p.Status, corev1.PodReadyToStartContainers, corev1.ConditionTrue, "")
		setCondition(&p.Status, corev1.ContainersReady, corev1.ConditionFalse, reasonNotReady)
		setCondition(&p.Status, corev1.PodReady, corev1.ConditionFalse, reasonNotReady)
		p.Status.ContainerStatuses = containerStatus(p,
			corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}, nil)
		return true
	}
}

// markRunning reports the started process.
func markRunning(st *podState) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		if isTerminal(p) {
			return false
		}
		bound(p)
		p.Status.Phase = corev1.PodRunning
		p.Status.Reason, p.Status.Message = "", ""
		p.Status.PodIP = loopback
		p.Status.PodIPs = []corev1.PodIP{{IP: loopback}}
		setCondition(&p.Status, corev1.PodReadyToStartContainers, corev1.ConditionTrue, "")
		setCondition(&p.Status, corev1.ContainersReady, corev1.ConditionTrue, "")
		setCondition(&p.Status, corev1.PodReady, corev1.ConditionTrue, "")
		p.Status.ContainerStatuses = containerStatus(p,
			corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st.started}}, st)
		return true
	}
}

// markExited reports the process's end: Succeeded on exit 0, else Failed; DeadlineExceeded at the
// pod level when the runner stopped it for the pod's activeDeadlineSeconds.
func markExited(st *podState, exitCode int32, deadline bool, message string, finished metav1.Time) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		if isTerminal(p) {
			return false
		}
		reason := reasonCompleted
		if exitCode != 0 {
			reason = reasonError
		}
		terminated := &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: reason, Message: message,
			StartedAt: st.started, FinishedAt: finished, ContainerID: containerID(st),
		}
		phase, podReason, podMessage := corev1.PodSucceeded, "", ""
		if exitCode != 0 || deadline {
			phase = corev1.PodFailed
		}
		if deadline {
			podReason, podMessage = reasonDeadlineExceeded, messageDeadlineExceeded
		}
		finish(p, phase, podReason, podMessage, corev1.ContainerState{Terminated: terminated}, st)
		return true
	}
}

// markFailed fails a pod whose container never ran (or whose process the runner lost).
func markFailed(podReason, podMessage, containerReason, containerMessage string, exitCode int32) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		if isTerminal(p) {
			return false
		}
		state := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: exitCode, Reason: containerReason, Message: containerMessage, FinishedAt: metav1.Now(),
		}}
		finish(p, corev1.PodFailed, podReason, podMessage, state, nil)
		return true
	}
}

func finish(p *corev1.Pod, phase corev1.PodPhase, reason, message string, state corev1.ContainerState, st *podState) {
	bound(p)
	p.Status.Phase = phase
	p.Status.Reason, p.Status.Message = reason, message
	setCondition(&p.Status, corev1.PodReadyToStartContainers, corev1.ConditionFalse, "")
	setCondition(&p.Status, corev1.ContainersReady, corev1.ConditionFalse, reasonPodCompleted)
	setCondition(&p.Status, corev1.PodReady, corev1.ConditionFalse, reasonPodCompleted)
	p.Status.ContainerStatuses = containerStatus(p, state, st)
}
