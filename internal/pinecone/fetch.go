package pinecone

import (
	"context"
	"fmt"
)

// MaxFetchIDs is the most ids one fetch request carries (Pinecone's limit is 1,000).
const MaxFetchIDs = 1000

// FetchMetadataString returns, for those of ids that exist in namespace, the string value of
// their metadata key (empty when the vector lacks it). Incremental sync reads the stored content
// hashes this way. Requests are retried like upserts and share the in-flight bound.
func (u *Upserter) FetchMetadataString(ctx context.Context, namespace string, ids []string, key string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	c, err := u.conn(namespace)
	if err != nil {
		return nil, err
	}
	for start := 0; start < len(ids); start += MaxFetchIDs {
		part := ids[start:min(start+MaxFetchIDs, len(ids))]
		select {
		case u.inFlight <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("pinecone fetch: %w", ctx.Err())
		}
		err := u.retry.do(ctx, "fetch", &u.nRetries, func(ctx context.Context) error {
			u.nFetches.Add(1)
			res, err := c.FetchVectors(ctx, part)
			if err != nil {
				return err
			}
			for id, v := range res.Vectors {
				s := ""
				if v != nil && v.Metadata != nil {
					if f, ok := v.Metadata.Fields[key]; ok {
						s = f.GetStringValue()
					}
				}
				out[id] = s
			}
			return nil
		})
		<-u.inFlight
		if err != nil {
			return nil, fmt.Errorf("pinecone fetch of %d ids from namespace %q: %w", len(part), c.Namespace(), err)
		}
	}
	return out, nil
}
