package pinecone

import (
	"context"
	"fmt"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"
)

// Pinecone's limits for listing and deleting by id.
const (
	// MaxListLimit is the most ids one list page returns (its default, and what is asked for).
	MaxListLimit = 100
	// MaxDeleteIDs is the most ids one delete request may carry.
	MaxDeleteIDs = 1000
)

// ListPage lists up to MaxListLimit ids of namespace starting with prefix, in Pinecone's order,
// from the page token (empty: the first page). The returned token is empty after the last page.
// Transient errors are retried like upserts; the rest come back as *PermanentError.
func (u *Upserter) ListPage(ctx context.Context, namespace, prefix, token string) ([]string, string, error) {
	c, err := u.conn(namespace)
	if err != nil {
		return nil, "", err
	}
	limit := uint32(MaxListLimit)
	req := &pinecone.ListVectorsRequest{Prefix: &prefix, Limit: &limit}
	if token != "" {
		req.PaginationToken = &token
	}
	var res *pinecone.ListVectorsResponse
	err = u.retry.do(ctx, "list", &u.nRetries, func(ctx context.Context) error {
		u.nLists.Add(1)
		r, err := c.ListVectors(ctx, req)
		if err != nil {
			return err
		}
		res = r
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("pinecone list of prefix %q in namespace %q: %w", prefix, c.Namespace(), err)
	}
	ids := make([]string, 0, len(res.VectorIds))
	for _, id := range res.VectorIds {
		if id != nil {
			ids = append(ids, *id)
		}
	}
	next := ""
	if res.NextPaginationToken != nil {
		next = *res.NextPaginationToken
	}
	return ids, next, nil
}

// DeleteIDs deletes ids from namespace in requests of at most MaxDeleteIDs. Deleting is
// idempotent (an id already gone is no error), so transient errors are retried like upserts.
// It returns how many ids the requests that succeeded carried: on error, the ids of the
// batches before it are gone.
func (u *Upserter) DeleteIDs(ctx context.Context, namespace string, ids []string) (int64, error) {
	c, err := u.conn(namespace)
	if err != nil {
		return 0, err
	}
	var done int64
	for start := 0; start < len(ids); start += MaxDeleteIDs {
		part := ids[start:min(start+MaxDeleteIDs, len(ids))]
		err := u.retry.do(ctx, "delete", &u.nRetries, func(ctx context.Context) error {
			u.nDeletes.Add(1)
			return c.DeleteVectorsById(ctx, part)
		})
		if err != nil {
			return done, fmt.Errorf("pinecone delete of %d ids from namespace %q: %w", len(part), c.Namespace(), err)
		}
		done += int64(len(part))
	}
	return done, nil
}
