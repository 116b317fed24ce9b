package chunkrun

import (
	"context"
	"fmt"

	"github.com/vectordb-io/vectordb-operator/internal/incremental"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

// skipStored is the stage between mapping and batching that leaves out rows already stored as
// they would be written, per slice of mapped rows with one fetch per namespace of their ids:
//   - incremental sync: rows whose stored content hash equals theirs count as skipped;
//   - a retry (resume.go): rows an earlier attempt of this chunk upserted, stored with this
//     task's id (and the same content hash when vectors carry one), count as upserted.
//
// Neither costs tokens or upserts.
func (p *pipeline) skipStored(ctx context.Context, in <-chan []item, out chan<- []item) error {
	for slice := range in {
		byNS := map[string][]string{}
		for _, it := range slice {
			byNS[it.rec.Namespace] = append(byNS[it.rec.Namespace], it.rec.ID)
		}
		stored := map[string]map[string][]string{}
		for ns, ids := range byNS {
			got, err := p.up.FetchMetadataStrings(ctx, ns, ids, incremental.MetadataKey, mapping.KeyTaskID)
			if err != nil {
				if p.incremental {
					return fmt.Errorf("incremental sync: %w", err)
				}
				return fmt.Errorf("retry: look up the rows an earlier attempt upserted: %w", err)
			}
			stored[ns] = got
		}
		kept := slice[:0]
		var skipped, resumed int64
		for _, it := range slice {
			vals, ok := stored[it.rec.Namespace][it.rec.ID]
			hash, task := "", ""
			if ok {
				hash, task = vals[0], vals[1]
			}
			switch {
			case p.resume && ok && task == p.taskID && (!p.hashes || hash == it.hash):
				resumed++ // before the incremental test: this run wrote it, so it is not "unchanged"
			case p.incremental && incremental.Unchanged(map[string]string{it.rec.ID: hash}, it.rec.ID, it.hash):
				skipped++
			default:
				kept = append(kept, it)
			}
		}
		p.skipped.Add(skipped)
		p.resumed.Add(resumed)
		if n := skipped + resumed; n > 0 && p.progress != nil {
			p.progress(n)
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
