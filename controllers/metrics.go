package controllers

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Metric names are part of the chart's alerts and dashboards; a test checks those use only these.
var (
	ingestionsByPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vectordb_ingestions", Help: "CsvIngestions by phase.",
	}, []string{"phase"})
	chunksByState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vectordb_chunks", Help: "Chunks of unfinished ingestions by state (pending, active).",
	}, []string{"state"})
	chunksFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_chunks_finished_total", Help: "Chunks finished, by result (succeeded, failed).",
	}, []string{"result"})
	rowsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_rows_total", Help: "Rows of finished chunks, by result (processed, failed, skipped).",
	}, []string{"result"})
	vectorsUpserted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_vectors_upserted_total", Help: "Vectors upserted by finished chunks.",
	})
	embeddingTokens = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_embedding_tokens_total", Help: "Tokens embedded, from the chunks' results.",
	})
	embeddingRequests = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_embedding_requests_total", Help: "Embedding requests sent, from the chunks' results.",
	})
	embeddingRetries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_embedding_retries_total", Help: "Embedding requests retried, from the chunks' results.",
	})
	embeddingRateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_embedding_rate_limited_total", Help: "429 answers received, from the chunks' results.",
	})
	chunkDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "vectordb_chunk_duration_seconds", Help: "Wall time of finished chunk Jobs.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s … ~2.3 h
	})
	lastProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "vectordb_ingestion_last_progress_timestamp_seconds", Help: "When an unfinished ingestion last finished a chunk (or started).",
	}, []string{"namespace", "name"})
	trackingErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_tracking_errors_total", Help: "Failed writes to the DynamoDB task table.",
	})
)

// MetricNames lists every metric the manager exports for ingestions.
func MetricNames() []string {
	return []string{
		"vectordb_ingestions", "vectordb_chunks", "vectordb_chunks_finished_total", "vectordb_rows_total",
		"vectordb_vectors_upserted_total", "vectordb_embedding_tokens_total", "vectordb_embedding_requests_total",
		"vectordb_embedding_retries_total", "vectordb_embedding_rate_limited_total", "vectordb_chunk_duration_seconds",
		"vectordb_ingestion_last_progress_timestamp_seconds", "vectordb_tracking_errors_total",
	}
}

func init() {
	metrics.Registry.MustRegister(ingestionsByPhase, chunksByState, chunksFinished, rowsTotal, vectorsUpserted,
		embeddingTokens, embeddingRequests, embeddingRetries, embeddingRateLimited, chunkDuration, lastProgress, trackingErrors)
}

type gaugeView struct {
	phase           v1alpha1.Phase
	pending, active int32
	namespace, name string
}

var (
	viewsMu sync.Mutex
	views   = map[types.UID]gaugeView{}
)

// setGauges recomputes the gauges from every known ingestion's last written status.
func setGauges(uid types.UID, v *gaugeView) {
	viewsMu.Lock()
	defer viewsMu.Unlock()
	if v == nil {
		if old, ok := views[uid]; ok {
			lastProgress.DeleteLabelValues(old.namespace, old.name)
		}
		delete(views, uid)
	} else {
		views[uid] = *v
	}
	phases := map[v1alpha1.Phase]float64{}
	var pending, active float64
	for _, g := range views {
		phases[g.phase]++
		if !g.phase.Terminal() {
			pending += float64(g.pending)
			active += float64(g.active)
		}
	}
	for _, ph := range []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhasePlanning, v1alpha1.PhaseProcessingChunks,
		v1alpha1.PhaseCompleted, v1alpha1.PhasePartiallyCompleted, v1alpha1.PhaseFailed, v1alpha1.PhaseCancelled} {
		ingestionsByPhase.WithLabelValues(string(ph)).Set(phases[ph])
	}
	chunksByState.WithLabelValues("pending").Set(pending)
	chunksByState.WithLabelValues("active").Set(active)
}

func forgetMetrics(uid types.UID) { setGauges(uid, nil) }

// recordMetrics runs after a successful status write, so each finished chunk is counted once.
func (p *pass) recordMetrics(before *v1alpha1.CsvIngestionStatus) {
	st := &p.status
	for _, f := range p.results {
		if f.succeeded {
			chunksFinished.WithLabelValues("succeeded").Inc()
		} else {
			chunksFinished.WithLabelValues("failed").Inc()
		}
		if f.duration > 0 {
			chunkDuration.Observe(f.duration.Seconds())
		}
		if res := f.result; res != nil {
			if f.succeeded {
				rowsTotal.WithLabelValues("processed").Add(float64(res.Processed))
				rowsTotal.WithLabelValues("failed").Add(float64(res.Failed))
				rowsTotal.WithLabelValues("skipped").Add(float64(res.Skipped))
			}
			vectorsUpserted.Add(float64(res.VectorsUpserted))
			embeddingTokens.Add(float64(res.Tokens))
			embeddingRequests.Add(float64(res.Requests))
			embeddingRetries.Add(float64(res.Retries))
			embeddingRateLimited.Add(float64(res.RateLimited))
		}
	}
	for _, fc := range p.newlyFailed {
		rowsTotal.WithLabelValues("failed").Add(float64(rowsOf(fc.Rows)))
	}
	setGauges(p.obj.UID, &gaugeView{phase: st.Phase, pending: st.Chunks.Pending, active: st.Chunks.Active, namespace: p.obj.Namespace, name: p.obj.Name})
	// A suspended ingestion is not stalled: its series goes away, and resuming restarts the clock.
	suspended := meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionSuspended)
	switch {
	case st.Phase.Terminal() || suspended:
		lastProgress.DeleteLabelValues(p.obj.Namespace, p.obj.Name)
	case len(p.results) > 0 || before.StartTime == nil || meta.IsStatusConditionTrue(before.Conditions, v1alpha1.ConditionSuspended):
		lastProgress.WithLabelValues(p.obj.Namespace, p.obj.Name).Set(float64(p.now.Unix()))
	}
}

func rowsOf(r string) int64 {
	var a, b int64
	if _, err := fmt.Sscanf(r, "%d-%d", &a, &b); err != nil {
		return 0
	}
	return b - a + 1
}
