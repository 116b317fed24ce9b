package pinecone

import (
	"context"
	"fmt"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/protobuf/types/known/structpb"
)

// Stored is a vector as the index holds it.
type Stored struct {
	Values   []float32
	Metadata map[string]any
}

// MaxFetchIDs is the most ids one fetch request carries (Pinecone's limit is 1,000).
const MaxFetchIDs = 1000

// Fetch returns the vectors of namespace with the given ids, values and metadata included; ids
// the namespace does not hold are absent from the map. Transient errors are retried like
// upserts; the rest come back as *PermanentError.
func (u *Upserter) Fetch(ctx context.Context, namespace string, ids []string) (map[string]Stored, error) {
	if len(ids) == 0 {
		return map[string]Stored{}, nil
	}
	if len(ids) > MaxFetchIDs {
		return nil, fmt.Errorf("pinecone fetch: %d ids, at most %d", len(ids), MaxFetchIDs)
	}
	c, err := u.conn(namespace)
	if err != nil {
		return nil, err
	}
	var res *pinecone.FetchVectorsResponse
	err = u.retry.do(ctx, "fetch", &u.nRetries, func(ctx context.Context) error {
		u.nRequests.Add(1)
		r, err := c.FetchVectors(ctx, ids)
		if err != nil {
			return err
		}
		res = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pinecone fetch of %d ids from namespace %q: %w", len(ids), c.Namespace(), err)
	}
	out := make(map[string]Stored, len(res.Vectors))
	for id, v := range res.Vectors {
		if v == nil {
			continue
		}
		var s Stored
		if v.Values != nil {
			s.Values = *v.Values
		}
		if v.Metadata != nil {
			s.Metadata = v.Metadata.AsMap()
		}
		out[id] = s
	}
	return out, nil
}

// FetchMetadataString returns, for those of ids that exist in namespace, the string value of
// their metadata key (empty when the vector lacks it). Incremental sync reads the stored content
// hashes this way. Requests are retried like upserts and share the in-flight bound.
func (u *Upserter) FetchMetadataString(ctx context.Context, namespace string, ids []string, key string) (map[string]string, error) {
	got, err := u.FetchMetadataStrings(ctx, namespace, ids, key)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(got))
	for id, fields := range got {
		out[id] = fields[0]
	}
	return out, nil
}

// FetchMetadataStrings returns, for those of ids that exist in namespace, the string values of
// their metadata keys, in the order of keys (empty when the vector lacks one).
func (u *Upserter) FetchMetadataStrings(ctx context.Context, namespace string, ids []string, keys ...string) (map[string][]string, error) {
	out := make(map[string][]string, len(ids))
	err := u.fetchEach(ctx, namespace, ids, func(id string, v *pinecone.Vector) {
		vals := make([]string, len(keys))
		if v != nil && v.Metadata != nil {
			for i, key := range keys {
				if f, ok := v.Metadata.Fields[key]; ok {
					vals[i] = f.GetStringValue()
				}
			}
		}
		out[id] = vals
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FetchMetadataValues returns, for those of ids that exist in namespace, the value of their
// metadata key: nil when the vector lacks it, absent from the map when the vector is gone. The
// sync step reads the owner marker of each deletion candidate this way (MaxFetchIDs per request).
func (u *Upserter) FetchMetadataValues(ctx context.Context, namespace string, ids []string, key string) (map[string]*structpb.Value, error) {
	out := make(map[string]*structpb.Value, len(ids))
	err := u.fetchEach(ctx, namespace, ids, func(id string, v *pinecone.Vector) {
		if v == nil {
			return
		}
		var val *structpb.Value
		if v.Metadata != nil {
			val = v.Metadata.Fields[key]
		}
		out[id] = val
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fetchEach fetches ids from namespace MaxFetchIDs at a time, under the in-flight bound and with
// retries like upserts, and hands each returned vector to each (again for a retried request).
func (u *Upserter) fetchEach(ctx context.Context, namespace string, ids []string, each func(id string, v *pinecone.Vector)) error {
	if len(ids) == 0 {
		return nil
	}
	c, err := u.conn(namespace)
	if err != nil {
		return err
	}
	for start := 0; start < len(ids); start += MaxFetchIDs {
		part := ids[start:min(start+MaxFetchIDs, len(ids))]
		select {
		case u.inFlight <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("pinecone fetch: %w", ctx.Err())
		}
		err := u.retry.do(ctx, "fetch", &u.nRetries, func(ctx context.Context) error {
			u.nFetches.Add(1)
			res, err := c.FetchVectors(ctx, part)
			if err != nil {
				return err
			}
			for id, v := range res.Vectors {
				each(id, v)
			}
			return nil
		})
		<-u.inFlight
		if err != nil {
			return fmt.Errorf("pinecone fetch of %d ids from namespace %q: %w", len(part), c.Namespace(), err)
		}
	}
	return nil
}
