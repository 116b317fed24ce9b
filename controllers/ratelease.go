package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// The controller only creates and patches the lease Secrets it owns; it never reads a Secret.
// +kubebuilder:rbac:groups="",resources=secrets,verbs=create;patch

// roleRateLease labels an ingestion's lease Secret.
const roleRateLease = "rate-lease"

// leasing reports whether chunk pods lease their rates from the manager (--rate-lease-url and
// a key): then their frozen shares are only the start and the fallback.
func (r *Reconciler) leasing() bool {
	return r.Config.RateLeaseURL != "" && len(r.Config.RateLeaseKey) > 0
}

// ensureLeaseSecret writes the ingestion's lease credential into a Secret it owns, once per
// ingestion and process (a patch when it exists, so a new manager key reaches it; never of a
// Secret of that name the ingestion does not own). Chunk pods
// read the credential from it by secretKeyRef: it is never in a spec, an argument or a log.
func (r *Reconciler) ensureLeaseSecret(ctx context.Context, obj *v1alpha1.CsvIngestion) error {
	r.mu.Lock()
	done := r.leaseSecrets[obj.UID]
	r.mu.Unlock()
	if done {
		return nil
	}
	cred := ratelease.Credential(r.Config.RateLeaseKey, obj.Namespace, obj.Name)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: ratelease.SecretName(obj.Name), Namespace: obj.Namespace,
			Labels:          childLabels(obj, roleRateLease),
			OwnerReferences: []metav1.OwnerReference{ownerRef(obj)},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{ratelease.SecretKey: []byte(cred)},
	}
	err := r.Create(ctx, s)
	if apierrors.IsAlreadyExists(err) {
		// Rewrite it (a new manager key) only if it is this ingestion's: the test operation makes
		// the server refuse the patch of a Secret someone else owns, which the controller cannot
		// read to check.
		patch, merr := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": string(obj.UID)},
			{"op": "add", "path": "/data/" + ratelease.SecretKey, "value": s.Data[ratelease.SecretKey]},
		})
		if merr != nil {
			return merr
		}
		if err = r.Patch(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace}},
			client.RawPatch(types.JSONPatchType, patch)); apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			return fmt.Errorf("lease Secret %s exists and is not this ingestion's (it must be owned by it; delete or rename it): %w", s.Name, err)
		}
	}
	if err != nil {
		return fmt.Errorf("write lease Secret %s: %w", s.Name, err)
	}
	r.mu.Lock()
	if r.leaseSecrets == nil {
		r.leaseSecrets = map[types.UID]bool{}
	}
	r.leaseSecrets[obj.UID] = true
	r.mu.Unlock()
	return nil
}

// leaseEnv is the lease client's environment of a chunk pod.
func (r *Reconciler) leaseEnv(obj *v1alpha1.CsvIngestion, job string) []corev1.EnvVar {
	if !r.leasing() {
		return nil
	}
	return []corev1.EnvVar{
		{Name: ratelease.EnvURL, Value: r.Config.RateLeaseURL},
		// Optional: the controller writes the Secret once per ingestion and process and does not
		// watch Secrets, so a Secret deleted under a running ingestion would keep every later
		// chunk pod in CreateContainerConfigError until the manager restarts. Without it a pod
		// runs on its Job's frozen share (leases off) and logs why.
		{Name: ratelease.EnvCredential, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: ratelease.SecretName(obj.Name)}, Key: ratelease.SecretKey,
			Optional: ptr.To(true)}}},
		{Name: ratelease.EnvJob, Value: job},
		{Name: ratelease.EnvPod, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}
}

// rateBudgetTimeout bounds resolving the budget for status: the resolver reads the cache, which
// waits for its informer when the manager may not list EmbeddingBudgets (the lease service then
// answers the pods with that message; a pass must not wait on it).
const rateBudgetTimeout = 500 * time.Millisecond

// rateBudgetPause: after a resolve ran out of time, passes skip it this long. Unsynced stays
// unsynced (missing RBAC), and every pass that starts chunks, of every ingestion, would spend
// rateBudgetTimeout of a reconcile worker on it.
const rateBudgetPause = time.Minute

// noteRateBudget shows in status.rateBudget the budget the online chunk pods about to start will
// lease from. Not resolved: the last one stays, and the lease service tells the pods why.
func (p *pass) noteRateBudget(ctx context.Context) {
	if p.r.Config.RateBudgets == nil || p.obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch {
		return
	}
	now := p.r.Now()
	p.r.mu.Lock()
	paused := now.Before(p.r.rateBudgetPausedUntil)
	p.r.mu.Unlock()
	if paused {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, rateBudgetTimeout)
	defer cancel()
	b, err := p.r.Config.RateBudgets.Resolve(rctx, p.obj.Namespace, p.obj.Name, p.obj.Spec.Embedding.Model)
	if err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			p.r.mu.Lock()
			p.r.rateBudgetPausedUntil = now.Add(rateBudgetPause)
			p.r.mu.Unlock()
			logf.FromContext(ctx).Info("rate budget not resolved in time for status.rateBudget; not tried again for a while",
				"timeout", rateBudgetTimeout, "pause", rateBudgetPause, "error", err.Error())
			return
		}
		logf.FromContext(ctx).V(1).Info("rate budget not resolved for status", "error", err.Error())
		return
	}
	p.status.RateBudget = b.Key
}
