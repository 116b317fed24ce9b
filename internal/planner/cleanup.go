package planner

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Cleanup is `embedder cleanup`, run by the controller once the ingestion has ended: it deletes
// what the planner staged (the UTF-8 copy of a gzip or non-UTF-8 object, the duplicate-id list).
// The plan ConfigMap is only read (it is immutable, and workers may not change it): the
// cleanup Job's success is the record that the objects are gone. The controller holds no S3 credentials (the worker pods do), so
// this runs as a Job like the planner. Deleting a missing object is not an error, so a retry is
// safe.
//
// Without the plan ConfigMap (a foreground deletion of the ingestion removes it before the
// cleanup Job runs, and Argo CD prunes that way by default) it deletes the keys the planner would
// have used: they are named by the ingestion's task id and UID, so they are only ever its own.
func Cleanup(ctx context.Context, ing worker.Ingestion, deps Deps, cms ConfigMaps) ([]string, error) {
	loc, err := Locate(ing)
	if err != nil {
		return nil, err
	}
	bucket := loc.Bucket
	var keys []string
	cm, err := cms.Get(ctx, ing.Namespace, worker.PlanConfigMapName(ing.Name))
	switch {
	case apierrors.IsNotFound(err):
		if keys, err = stagedKeys(ing); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, classifyAPI(fmt.Sprintf("get ConfigMap %s/%s", ing.Namespace, worker.PlanConfigMapName(ing.Name)), err)
	default:
		plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
		if err != nil {
			return nil, worker.Permanent(worker.ReasonPermanentError, err)
		}
		keys, bucket = plan.StagedKeys(), plan.Bucket
	}
	if len(keys) > 0 {
		cl, err := S3Client(ctx, deps.S3, loc.Conn)
		if err != nil {
			return nil, err
		}
		if err := source.Delete(ctx, cl, bucket, keys...); err != nil {
			return nil, stageError(source.Classify("staged objects", err), "(delete) staged objects")
		}
	}
	return keys, nil
}
