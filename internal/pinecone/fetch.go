package pinecone

import (
	"context"
	"fmt"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"
)

// Stored is a vector as the index holds it.
type Stored struct {
	Values   []float32
	Metadata map[string]any
}

// MaxFetchIDs is the most ids one Fetch asks for (Pinecone's limit per request is 1,000; the
// vector-space guard needs a handful).
const MaxFetchIDs = 100

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
