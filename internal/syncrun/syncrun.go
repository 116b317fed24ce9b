// Package syncrun is `embedder sync`, the step of spec.sync.deleteMissing that runs once every
// chunk has finished: it reads every row's vector id from the planned file (pinned to its ETag,
// the same mapping as the chunks), lists the vectors under spec.mapping.idPrefix in the
// namespaces the file writes to, fetches the owner marker of those the file no longer has, and
// deletes the ones this source owns, unless the delete guard stops it (packages prune,
// ownership). It also previews all of that, and the rows an incremental run
// would skip, for a dry run (Estimator).
package syncrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/prune"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Deps are the step's connections; zero values are built from the ingestion and the environment.
type Deps struct {
	S3                  *s3.Client
	PineconeAPIKey      string
	PineconeControlHost string
	Log                 logr.Logger
}

// Run deletes the vectors under the ingestion's id prefix that are not in the file read through
// args (worker.Plan.Whole). The result counts the vectors listed, missing and deleted; a guard
// stop is a permanent error with reason DeleteGuard, and nothing is deleted then.
func Run(ctx context.Context, ing worker.Ingestion, args worker.ChunkArgs, deps Deps) (res worker.Result, err error) {
	start := time.Now()
	res = worker.Result{Role: worker.RoleSync}
	defer func() { res.DurationMillis = time.Since(start).Milliseconds() }()
	log := deps.Log
	if !ing.Spec.DeletesMissing() {
		return res, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.sync.deleteMissing is not set: nothing to do"))
	}
	if ing.Spec.DryRun {
		return res, worker.Permanent(worker.ReasonPermanentError, errors.New("a dry run deletes nothing"))
	}
	prefix := ing.Spec.Mapping.IDPrefix
	if prefix == "" {
		return res, worker.Permanent(worker.ReasonPermanentError, errors.New("spec.sync.deleteMissing needs spec.mapping.idPrefix"))
	}
	maxPercent := ing.Spec.Sync.MaxDeletePercentOrDefault()

	file := prune.NewFileIDs()
	n, err := chunkrun.ReadKeys(ctx, ing, args, chunkrun.Deps{S3: deps.S3, Log: log}, file.Add)
	res.RowsRead = n.Rows
	if err != nil {
		return res, fmt.Errorf("read the file's ids: %w", err)
	}
	if n.NoKey > 0 {
		// A failed row keeps its vector because its id is in the set; a row without an id
		// cannot be told from one that left the file, so nothing is deleted.
		return res, worker.Permanent(worker.ReasonNoKey, fmt.Errorf("%d of %d rows of the file have no vector id (they failed): their vectors cannot be told from those that left the file, so nothing was deleted", n.NoKey, n.Rows))
	}
	file.Seal()
	log.Info("read the file's ids", "rows", n.Rows, "distinct", file.Len(), "duration", time.Since(start).Round(time.Millisecond))

	up, err := chunkrun.NewUpserter(ctx, ing, deps.PineconeAPIKey, deps.PineconeControlHost, log)
	if err != nil {
		return res, err
	}
	defer up.Close()
	namespaces := file.Namespaces(ing.Spec.Target.Pinecone.Namespace)
	owner := ownership.Owner{Prefix: prefix, AdoptUnmarked: ing.Spec.Sync.AdoptUnmarked}
	plan, err := prune.Find(ctx, up, owner, namespaces, file, maxPercent)
	if plan != nil {
		res.Listed, res.Missing = plan.Listed, plan.Missing
		res.LeftAlone, res.Unmarked, res.Adopted, res.Deletable = plan.LeftAlone(), plan.Unmarked, plan.Adopted, plan.Deletable()
	}
	if err != nil {
		return res, err
	}
	log.Info("listed the vectors under the id prefix", "prefix", prefix, "namespaces", namespaces, "listed", plan.Listed,
		"missing", plan.Missing, "owned", plan.Owned, "adopted", plan.Adopted, "foreign", plan.Foreign, "unmarked", plan.Unmarked,
		"gone", plan.Gone, "listRequests", plan.ListRequests, "fetchRequests", plan.FetchRequests, "maxDeletePercent", maxPercent)
	if maxPercent == 0 {
		// Report only: the counts are the outcome.
		st := up.Stats()
		res.Requests, res.Retries = st.Lists+st.Fetches, st.Retries
		return res, nil
	}
	if gerr := plan.Guard(); gerr != nil {
		return res, worker.Permanent(worker.ReasonDeleteGuard, gerr)
	}
	deleted, err := plan.Execute(ctx, up)
	res.Deleted = deleted
	st := up.Stats()
	res.Requests, res.Retries = st.Lists+st.Fetches+st.Deletes, st.Retries
	log.Info("deleted the vectors that left the file", "deleted", deleted, "deleteRequests", st.Deletes,
		"duration", time.Since(start).Round(time.Millisecond), "error", errString(err))
	return res, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
