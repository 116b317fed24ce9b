package syncrun

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/incremental"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/ownership"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/planner"
	"github.com/vectordb-io/vectordb-operator/internal/prune"
	"github.com/vectordb-io/vectordb-operator/internal/tokens"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// previewSlice is how many rows' hashes one lookup fetches, as a chunk does.
const previewSlice = 128

// Preview is a dry run's look at spec.sync against the index as it is now (planner.SyncPreview):
// each row is mapped as a chunk maps it; in incremental mode the stored content hashes are
// fetched (one request per 128 rows, as the chunks would) to split the rows into those to embed
// and those to skip; with deleteMissing the vectors under the id prefix are listed and those not
// in the file counted, with the guard's verdict. Nothing is written. Rows a chunk would fail, or
// skip as duplicate ids, are counted with the others.
type Preview struct {
	ing  worker.Ingestion
	deps Deps

	up      *pinecone.Upserter
	mapper  *mapping.Mapper
	model   string
	file    *prune.FileIDs
	toEmbed tokens.Estimator
	pending []pendingRow
	res     v1alpha1.SyncEstimate
}

type pendingRow struct {
	ns, id, hash, text string
}

// NewPreview returns the preview of ing's spec.sync; deps gives the Pinecone key.
func NewPreview(ing worker.Ingestion, deps Deps) *Preview {
	return &Preview{ing: ing, deps: deps, model: cmp.Or(ing.Spec.Embedding.Model, "text-embedding-3-small")}
}

func (p *Preview) incremental() bool {
	return p.ing.Spec.Sync != nil && p.ing.Spec.Sync.Mode == v1alpha1.SyncIncremental
}

// Start connects to the index and compiles the mapping against the file's header.
func (p *Preview) Start(ctx context.Context, header []string) error {
	loc, err := planner.Locate(p.ing)
	if err != nil {
		return err
	}
	if p.mapper, err = mapping.New(p.ing.Spec.Mapping, header, chunkrun.Fixed(p.ing, loc, 0, time.Now())); err != nil {
		return worker.Permanent(worker.ReasonHeaderMismatch, err)
	}
	if p.up, err = chunkrun.NewUpserter(ctx, p.ing, p.deps.PineconeAPIKey, p.deps.PineconeControlHost, p.log()); err != nil {
		return err
	}
	if p.ing.Spec.DeletesMissing() {
		p.file = prune.NewFileIDs()
	}
	return nil
}

func (p *Preview) log() logr.Logger { return p.deps.Log }

// Row takes one data row (fields are not kept).
func (p *Preview) Row(ctx context.Context, row int64, fields []string) error {
	rec, rerr := p.mapper.Map(row, fields)
	if rerr != nil {
		if key, kerr := p.mapper.Key(row, fields); kerr == nil && p.file != nil {
			p.file.Add(key.Namespace, key.ID) // its vector stays: the run fails the row, it does not delete it
		}
		return nil
	}
	if p.file != nil {
		p.file.Add(rec.Namespace, rec.ID)
	}
	rec.Metadata = ownership.Stamp(rec.Metadata, p.ing.Spec.Mapping.IDPrefix) // as a chunk hashes it
	if !p.incremental() {
		p.embed(rec.Text)
		return nil
	}
	p.pending = append(p.pending, pendingRow{ns: rec.Namespace, id: rec.ID, hash: incremental.Hash(rec, p.model, p.up.Dimension()), text: rec.Text})
	if len(p.pending) == previewSlice {
		return p.flush(ctx)
	}
	return nil
}

func (p *Preview) embed(text string) {
	p.res.RowsToEmbed++
	p.toEmbed.Add([]byte(text))
}

// flush looks up the stored hashes of the pending rows, as a chunk's skip stage does.
func (p *Preview) flush(ctx context.Context) error {
	byNS := map[string][]string{}
	for _, r := range p.pending {
		byNS[r.ns] = append(byNS[r.ns], r.id)
	}
	stored := map[string]map[string]string{}
	for ns, ids := range byNS {
		got, err := p.up.FetchMetadataString(ctx, ns, ids, incremental.MetadataKey)
		if err != nil {
			return fmt.Errorf("dry run of spec.sync: %w", err)
		}
		stored[ns] = got
	}
	for _, r := range p.pending {
		if incremental.Unchanged(stored[r.ns], r.id, r.hash) {
			p.res.RowsToSkip++
			continue
		}
		p.embed(r.text)
	}
	p.pending = p.pending[:0]
	return nil
}

// Finish looks up the last rows, lists the vectors under the prefix (deleteMissing) and returns
// the estimate.
func (p *Preview) Finish(ctx context.Context) (*v1alpha1.SyncEstimate, error) {
	if p.up == nil {
		return nil, fmt.Errorf("dry run of spec.sync: not started")
	}
	defer p.up.Close()
	if len(p.pending) > 0 {
		if err := p.flush(ctx); err != nil {
			return nil, err
		}
	}
	p.res.Tokens = p.toEmbed.Tokens()
	p.res.CostUSD = tokens.CostUSD(p.model, p.res.Tokens)
	if p.ing.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch {
		p.res.CostUSD = tokens.BatchCostUSD(p.model, p.res.Tokens) // the Batch API's rate
	}
	if p.file != nil {
		p.file.Seal()
		maxPercent := p.ing.Spec.Sync.MaxDeletePercentOrDefault()
		owner := ownership.Owner{Prefix: p.ing.Spec.Mapping.IDPrefix, AdoptUnmarked: p.ing.Spec.Sync.AdoptUnmarked}
		plan, err := prune.Find(ctx, p.up, owner, p.file.Namespaces(p.ing.Spec.Target.Pinecone.Namespace), p.file, maxPercent)
		if err != nil {
			return nil, fmt.Errorf("dry run of spec.sync: %w", err)
		}
		p.res.VectorsUnderPrefix, p.res.VectorsToDelete, p.res.VectorsLeftAlone = plan.Listed, plan.Deletable(), plan.LeftAlone()
		p.res.DeleteGuard = v1alpha1.DeleteGuardPass
		if maxPercent > 0 && plan.Guard() != nil {
			p.res.DeleteGuard = v1alpha1.DeleteGuardStop
		}
	}
	st := p.up.Stats()
	p.res.LookupRequests = st.Fetches + st.Lists
	return &p.res, nil
}
