package controllers

import (
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// LiveBatches is where the running batch-mode chunks' reports are kept (ratelease.Reports,
// served by the leader's lease service); nil without rate leases.
type LiveBatches interface {
	// Chunks returns the latest report per chunk index of the ingestion with this UID.
	Chunks(namespace, ingestion, uid string) map[int]ratelease.LiveBatch
	// Forget drops an ingestion's reports (it ended).
	Forget(namespace, ingestion string)
}

// liveBatchRecheck bounds how long a pass waits before it shows newer live reports, whatever
// the spec's poll interval.
const liveBatchRecheck = time.Minute

// withoutLive takes the live part a previous pass added out of status.batch, so that what the
// pass records adds to the recorded chunks' batches only (the live part is computed afresh,
// never added twice).
func withoutLive(st *v1alpha1.CsvIngestionStatus) {
	if st.BatchLive == nil {
		return
	}
	if st.Batch != nil {
		st.Batch.Sub(*st.BatchLive)
		if *st.Batch == (v1alpha1.BatchStatus{}) {
			st.Batch = nil
		}
	}
	st.BatchLive = nil
}

// withLive adds to status.batch the reports of the chunks that run now (live says whether a
// chunk index is running and not recorded), and keeps their sum in status.batchLive. A chunk
// recorded in this pass is not running any more: its batches are in status.batch from its
// result, never from its last report as well.
func withLive(st *v1alpha1.CsvIngestionStatus, reports map[int]ratelease.LiveBatch, live func(int) bool) {
	var sum v1alpha1.BatchStatus
	n := 0
	for i, r := range reports {
		if !live(i) {
			continue
		}
		sum.Add(r.Summary)
		n++
	}
	if n == 0 {
		return
	}
	st.BatchLive = &sum
	if st.Batch == nil {
		st.Batch = &v1alpha1.BatchStatus{}
	}
	st.Batch.Add(sum)
}

// addLiveBatches shows the live batch state of a batch-mode run and requeues while chunks run,
// so the status follows the reports at about the chunks' poll interval. A run that ended
// forgets its reports.
func (p *pass) addLiveBatches() {
	lb := p.r.LiveBatches
	if lb == nil || p.obj.Spec.Embedding.Mode != v1alpha1.EmbeddingBatch {
		return
	}
	if p.status.Phase.Terminal() {
		lb.Forget(p.obj.Namespace, p.obj.Name)
		return
	}
	if p.kids == nil || p.kids.plan == nil {
		return
	}
	running := func(i int) bool {
		c := p.kids.chunks[i]
		return c != nil && c.state == jobActive && !p.recorded(i)
	}
	active := false
	for i := range p.kids.chunks {
		if running(i) {
			active = true
			break
		}
	}
	if !active {
		return
	}
	withLive(&p.status, lb.Chunks(p.obj.Namespace, p.obj.Name, string(p.obj.UID)), running)
	every := liveBatchRecheck
	if b := p.obj.Spec.Embedding.Batch; b != nil && b.PollInterval.Duration > 0 {
		every = min(every, b.PollInterval.Duration)
	}
	if p.requeueAfter == 0 || p.requeueAfter > every {
		p.requeueAfter = every
	}
}
