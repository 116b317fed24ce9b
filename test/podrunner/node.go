package podrunner

import (
	"context"
	"fmt"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	// heartbeatPeriod and leaseDuration match the kubelet's defaults (renew every 10 s, 40 s lease).
	heartbeatPeriod = 10 * time.Second
	leaseDuration   = 40
	leaseNamespace  = corev1.NamespaceNodeLease
)

func (r *Runner) nodeLabels() map[string]string {
	return map[string]string{
		corev1.LabelHostname:   r.o.NodeName,
		corev1.LabelOSStable:   runtime.GOOS,
		corev1.LabelArchStable: runtime.GOARCH,
	}
}

// nodeStatus is a Ready node with room for anything: the runner enforces no resources, so the
// capacity only has to be large enough that nothing rejects a pod for it.
func (r *Runner) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		corev1.ResourcePods:             resource.MustParse("1000"),
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "pod runner is posting ready status"),
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "pod runner has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "pod runner has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "pod runner has sufficient PID available"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: loopback},
			{Type: corev1.NodeHostName, Address: r.o.NodeName},
		},
		// kube-apiserver proxies `kubectl logs` here (logs.go).
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: r.logPort}},
		NodeInfo: corev1.NodeSystemInfo{
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			KubeletVersion:          "v0.0.0-podrunner",
			ContainerRuntimeVersion: "podrunner://local-process",
		},
	}
}

// registerNode creates the Node (or takes over an existing one of that name) and marks it Ready.
func (r *Runner) registerNode(ctx context.Context) error {
	nodes := r.cs.CoreV1().Nodes()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: r.o.NodeName, Labels: r.nodeLabels()},
		Status:     r.nodeStatus(),
	}
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		if created, err = nodes.Get(ctx, r.o.NodeName, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("podrunner: reading existing node %s: %w", r.o.NodeName, err)
		}
	case err != nil:
		return fmt.Errorf("podrunner: registering node %s: %w", r.o.NodeName, err)
	}
	// Status on create is not kept by every API server version; set it explicitly.
	created.Status = r.nodeStatus()
	if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("podrunner: marking node %s ready: %w", r.o.NodeName, err)
	}
	if err := r.renewLease(ctx); err != nil {
		r.log.Error(err, "node lease not renewed")
	}
	return nil
}

// heartbeat keeps the Node Ready and its Lease fresh, so a node-lifecycle controller, if one runs,
// never marks it NotReady and evicts its pods.
func (r *Runner) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
			r.log.Error(err, "node heartbeat failed")
		}
		if err := r.renewLease(ctx); err != nil && ctx.Err() == nil {
			r.log.Error(err, "node lease not renewed")
		}
	}
}

func (r *Runner) updateNodeStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		node, err := r.cs.CoreV1().Nodes().Get(ctx, r.o.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Someone deleted it; put it back.
			return r.registerNode(ctx)
		}
		if err != nil {
			return fmt.Errorf("reading node %s: %w", r.o.NodeName, err)
		}
		next := r.nodeStatus()
		// A condition that did not change keeps its transition time.
		for i, c := range next.Conditions {
			for _, old := range node.Status.Conditions {
				if old.Type == c.Type && old.Status == c.Status {
					next.Conditions[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		node.Status = next
		if _, err := r.cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating node %s status: %w", r.o.NodeName, err)
		}
		return nil
	})
}

func (r *Runner) renewLease(ctx context.Context) error {
	leases := r.cs.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, r.o.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.o.NodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(r.o.NodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseDuration),
				RenewTime:            &now,
			},
		}
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating lease %s/%s: %w", leaseNamespace, r.o.NodeName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading lease %s/%s: %w", leaseNamespace, r.o.NodeName, err)
	}
	lease.Spec.HolderIdentity = ptr.To(r.o.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To[int32](leaseDuration)
	lease.Spec.RenewTime = &now
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing lease %s/%s: %w", leaseNamespace, r.o.NodeName, err)
	}
	return nil
}
