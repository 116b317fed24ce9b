package batchembed

// DefaultMaxEnqueuedTokens is spec.embedding.batch.maxEnqueuedTokens' default: OpenAI's tier-1
// cap on enqueued tokens for text-embedding-3-small.
const DefaultMaxEnqueuedTokens = 3_000_000

// minTokenShare keeps a chunk's share of the enqueued-token bound above a few lines' worth.
const minTokenShare = 10_000

// ChunkTokenShare is one running chunk's share of the ingestion's enqueued-token bound:
// parallelism chunks run at once and the cap is the organisation's.
func ChunkTokenShare(maxEnqueued int64, parallelism int32) int64 {
	if maxEnqueued <= 0 {
		maxEnqueued = DefaultMaxEnqueuedTokens
	}
	if parallelism > 1 {
		maxEnqueued /= int64(parallelism)
	}
	return max(maxEnqueued, minTokenShare)
}

// EstimateBatches is how many batches a chunk of rows holding about tokens tokens needs: one
// line per row, at most DefaultLimits.MaxLines lines a batch, and at most share tokens. (File
// bytes are not estimated: 200 MB is ~4 KB a line at 50,000 lines, more than a row's text.)
func EstimateBatches(rows, tokens, share int64) int64 {
	if rows <= 0 {
		return 0
	}
	n := ceilDiv(rows, int64(DefaultLimits.MaxLines))
	if share > 0 {
		n = max(n, ceilDiv(tokens, share))
	}
	return max(n, 1)
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }
