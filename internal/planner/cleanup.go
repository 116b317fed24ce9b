package planner

import (
	"context"
	"fmt"

	"k8s.io/client-go/util/retry"

	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// AnnotationStagedDeleted marks a plan ConfigMap whose staged objects (worker.Plan.StagedKeys)
// are deleted, so the controller starts the cleanup Job only until it has succeeded once.
const AnnotationStagedDeleted = "ingestion.vectordb.io/staged-deleted"

// Cleanup is `embedder cleanup`, run by the controller once the ingestion has ended: it deletes
// what the planner staged (the UTF-8 copy of a gzip or non-UTF-8 object, the duplicate-id list)
// and marks the plan ConfigMap. The controller holds no S3 credentials (the worker pods do), so
// this runs as a Job like the planner. Deleting a missing object is not an error, so a retry is
// safe.
func Cleanup(ctx context.Context, ing worker.Ingestion, deps Deps, cms ConfigMaps) ([]string, error) {
	cm, err := cms.Get(ctx, ing.Namespace, worker.PlanConfigMapName(ing.Name))
	if err != nil {
		return nil, classifyAPI(fmt.Sprintf("get ConfigMap %s/%s", ing.Namespace, worker.PlanConfigMapName(ing.Name)), err)
	}
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil {
		return nil, worker.Permanent(worker.ReasonPermanentError, err)
	}
	keys := plan.StagedKeys()
	if len(keys) > 0 {
		loc, err := Locate(ing)
		if err != nil {
			return nil, err
		}
		cl, err := S3Client(ctx, deps.S3, loc.Conn)
		if err != nil {
			return nil, err
		}
		if err := source.Delete(ctx, cl, plan.Bucket, keys...); err != nil {
			return nil, stageError(source.Classify("staged objects", err), "(delete) staged objects")
		}
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cms.Get(ctx, cm.Namespace, cm.Name)
		if err != nil {
			return err
		}
		if cur.Annotations[AnnotationStagedDeleted] == "true" {
			return nil
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[AnnotationStagedDeleted] = "true"
		return cms.Update(ctx, cur)
	})
	if err != nil {
		return keys, classifyAPI(fmt.Sprintf("annotate ConfigMap %s/%s", cm.Namespace, cm.Name), err)
	}
	return keys, nil
}
