package chunkrun

import (
	"context"
	"fmt"

	"github.com/vectordb-io/vectordb-operator/internal/incremental"
)

// skipUnchanged is the incremental sync's stage between mapping and batching: per slice of
// mapped rows it fetches the stored content hashes of their ids (one fetch per namespace per
// slice of rowsPerSlice rows) and passes on only the rows whose hash differs or that are not
// stored. The others count as skipped and cost neither tokens nor upserts.
func (p *pipeline) skipUnchanged(ctx context.Context, in <-chan []item, out chan<- []item) error {
	for slice := range in {
		byNS := map[string][]string{}
		for _, it := range slice {
			byNS[it.rec.Namespace] = append(byNS[it.rec.Namespace], it.rec.ID)
		}
		stored := map[string]map[string]string{}
		for ns, ids := range byNS {
			got, err := p.up.FetchMetadataString(ctx, ns, ids, incremental.MetadataKey)
			if err != nil {
				return fmt.Errorf("incremental sync: %w", err)
			}
			stored[ns] = got
		}
		kept := slice[:0]
		var skipped int64
		for _, it := range slice {
			if incremental.Unchanged(stored[it.rec.Namespace], it.rec.ID, it.hash) {
				skipped++
				continue
			}
			kept = append(kept, it)
		}
		if skipped > 0 {
			p.skipped.Add(skipped)
			if p.progress != nil {
				p.progress(skipped)
			}
		}
		if len(kept) == 0 {
			continue
		}
		if err := send(ctx, out, kept); err != nil {
			return err
		}
	}
	return nil
}
