package planner

import (
	"context"
	"fmt"

	"github.com/vectordb-io/vectordb-operator/internal/source"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Cleanup is `embedder cleanup`, run by the controller once the ingestion has ended: it deletes
// what the planner staged (the UTF-8 copy of a gzip or non-UTF-8 object, the duplicate-id list).
// The plan ConfigMap is only read (it is immutable, and workers may not change it): the
// cleanup Job's success is the record that the objects are gone. The controller holds no S3 credentials (the worker pods do), so
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
	return keys, nil
}
