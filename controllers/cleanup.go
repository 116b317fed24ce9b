package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// cleanupStaged starts, once the ingestion has ended, a Job running `embedder cleanup`, which
// deletes what the planner staged in S3 (the UTF-8 copy of a gzip or non-UTF-8 object, the
// duplicate-id list) and then annotates the plan ConfigMap. The controller holds no S3
// credentials, so the deletion runs in a worker pod like the planner. The Job is created until the
// annotation is there: a failed cleanup is tried again after its Job's TTL. Staged objects of an
// ingestion deleted before it ended are not removed (the Job would go with its owner).
func (r *Reconciler) cleanupStaged(ctx context.Context, obj *v1alpha1.CsvIngestion, kids *children) error {
	if !obj.Status.Phase.Terminal() || kids.plan == nil || len(kids.plan.StagedKeys()) == 0 {
		return nil
	}
	cm := &corev1.ConfigMap{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: worker.PlanConfigMapName(obj.Name)}, cm); err != nil {
		return fmt.Errorf("get plan of %s: %w", obj.Name, err)
	}
	if cm.Annotations[planner.AnnotationStagedDeleted] == "true" {
		return nil
	}
	pod, err := r.podSpec(obj, []string{worker.RoleCleanup}, nil, true)
	if err != nil {
		return err
	}
	job := r.job(obj, worker.CleanupJobName(obj.Name), worker.RoleCleanup, pod, nil)
	if err := r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cleanup Job of %s: %w", obj.Name, err)
	}
	return nil
}
