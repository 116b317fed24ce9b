package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Metric names are part of the chart's alerts and dashboards; a test checks those use only these.
//
// Counters count events this process saw; every label value is created at 0 when the process
// starts, so the first event after a start (a fresh install with a wrong key: one failed chunk)
// is an increase Prometheus can see, not a series that appears already at 1. The gauges are not
// kept here at all: gaugeCollector computes them from the informer cache at each scrape, so they
// are right after any restart (finished and stuck ingestions included) and a deleted ingestion's
// series simply stop.
var (
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
	batchesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_batches_total", Help: "Batch API batches of finished batch-mode chunks, by OpenAI's final state (completed, failed, expired, cancelled).",
	}, []string{"state"})
	batchLines = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_batch_lines_total", Help: "Batch API lines of finished batch-mode chunks, by result (submitted, done, failed).",
	}, []string{"result"})
	trackingErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vectordb_tracking_errors_total", Help: "Failed writes to the DynamoDB task table.",
	})

	ingestionsDesc = prometheus.NewDesc("vectordb_ingestions",
		"CsvIngestions by phase (an ingestion not reconciled yet counts as Pending).", []string{"phase"}, nil)
	chunksDesc = prometheus.NewDesc("vectordb_chunks",
		"Chunks of unfinished ingestions by state (pending, active).", []string{"state"}, nil)
	lastProgressDesc = prometheus.NewDesc("vectordb_ingestion_last_progress_timestamp_seconds",
		"When an unfinished, unsuspended ingestion last moved (started, changed phase, finished a chunk or resumed).",
		[]string{"namespace", "name"}, nil)
	liveBatchesDesc = prometheus.NewDesc("vectordb_batches_live",
		"Batch API batches of the running chunks of an unfinished batch-mode ingestion, by OpenAI's state, from the chunks' live reports (status.batchLive; needs rate leases).",
		[]string{"namespace", "name", "state"}, nil)
)

// The label values of the counters, all created at start.
var (
	chunkResults = []string{"succeeded", "failed"}
	rowResults   = []string{"processed", "failed", "skipped"}
	batchStates  = []string{"completed", "failed", "expired", "cancelled"}
	lineResults  = []string{"submitted", "done", "failed"}
	allPhases    = []v1alpha1.Phase{v1alpha1.PhasePending, v1alpha1.PhasePlanning, v1alpha1.PhaseProcessingChunks,
		v1alpha1.PhaseCompleted, v1alpha1.PhasePartiallyCompleted, v1alpha1.PhaseFailed, v1alpha1.PhaseCancelled}
)

// MetricNames lists every metric the manager exports for ingestions.
func MetricNames() []string {
	return []string{
		"vectordb_ingestions", "vectordb_chunks", "vectordb_chunks_finished_total", "vectordb_rows_total",
		"vectordb_vectors_upserted_total", "vectordb_embedding_tokens_total", "vectordb_embedding_requests_total",
		"vectordb_embedding_retries_total", "vectordb_embedding_rate_limited_total", "vectordb_chunk_duration_seconds",
		"vectordb_ingestion_last_progress_timestamp_seconds", "vectordb_tracking_errors_total",
		"vectordb_batches_total", "vectordb_batch_lines_total", "vectordb_batches_live",
	}
}

func init() {
	metrics.Registry.MustRegister(chunksFinished, rowsTotal, vectorsUpserted,
		embeddingTokens, embeddingRequests, embeddingRetries, embeddingRateLimited, chunkDuration, trackingErrors,
		batchesTotal, batchLines)
	for _, r := range chunkResults {
		chunksFinished.WithLabelValues(r)
	}
	for _, r := range rowResults {
		rowsTotal.WithLabelValues(r)
	}
	for _, st := range batchStates {
		batchesTotal.WithLabelValues(st)
	}
	for _, r := range lineResults {
		batchLines.WithLabelValues(r)
	}
}

// gaugeCollector computes the gauges from the CsvIngestions in the manager's cache at each
// scrape. It is registered only while this replica is the leader (see metricsRunnable), so
// exactly one replica reports them.
type gaugeCollector struct {
	reader client.Reader
	log    logr.Logger
}

func (c *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ingestionsDesc
	ch <- chunksDesc
	ch <- lastProgressDesc
	ch <- liveBatchesDesc
}

func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	// The cache answers from memory once synced; the bound only matters before that.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list v1alpha1.CsvIngestionList
	if err := c.reader.List(ctx, &list); err != nil {
		// An error here would fail the whole scrape (and page as the operator being down):
		// leave the gauges out of this one instead.
		c.log.Error(err, "computing ingestion gauges: listing CsvIngestions from the cache")
		return
	}
	g := computeGauges(list.Items)
	for _, ph := range allPhases {
		ch <- prometheus.MustNewConstMetric(ingestionsDesc, prometheus.GaugeValue, g.phases[ph], string(ph))
	}
	ch <- prometheus.MustNewConstMetric(chunksDesc, prometheus.GaugeValue, g.pending, "pending")
	ch <- prometheus.MustNewConstMetric(chunksDesc, prometheus.GaugeValue, g.active, "active")
	for _, lp := range g.lastProgress {
		ch <- prometheus.MustNewConstMetric(lastProgressDesc, prometheus.GaugeValue, lp.at, lp.namespace, lp.name)
	}
	for _, lb := range g.liveBatches {
		ch <- prometheus.MustNewConstMetric(liveBatchesDesc, prometheus.GaugeValue, lb.n, lb.namespace, lb.name, lb.state)
	}
}

type liveBatchSample struct {
	namespace, name, state string
	n                      float64
}

// liveBatchSamples are an ingestion's live batches by state (every state, zeros included, so a
// batch moving on is a drop to 0, not a series that vanishes).
func liveBatchSamples(ns, name string, b v1alpha1.BatchStatus) []liveBatchSample {
	out := make([]liveBatchSample, 0, 7)
	for _, s := range []struct {
		state string
		n     int32
	}{{"validating", b.Validating}, {"in_progress", b.InProgress}, {"finalizing", b.Finalizing},
		{"completed", b.Completed}, {"failed", b.Failed}, {"expired", b.Expired}, {"cancelled", b.Cancelled}} {
		out = append(out, liveBatchSample{namespace: ns, name: name, state: s.state, n: float64(s.n)})
	}
	return out
}

type progressSample struct {
	namespace, name string
	at              float64
}

type gaugeValues struct {
	phases          map[v1alpha1.Phase]float64
	pending, active float64
	lastProgress    []progressSample
	liveBatches     []liveBatchSample
}

// computeGauges is the pure part of the collector: what the gauges say about these ingestions.
func computeGauges(items []v1alpha1.CsvIngestion) gaugeValues {
	g := gaugeValues{phases: map[v1alpha1.Phase]float64{}}
	for i := range items {
		obj := &items[i]
		st := &obj.Status
		phase := st.Phase
		if phase == "" {
			phase = v1alpha1.PhasePending
		}
		g.phases[phase]++
		if phase.Terminal() {
			continue
		}
		g.pending += float64(st.Chunks.Pending)
		g.active += float64(st.Chunks.Active)
		if obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch && st.BatchLive != nil {
			g.liveBatches = append(g.liveBatches, liveBatchSamples(obj.Namespace, obj.Name, *st.BatchLive)...)
		}
		// A suspended ingestion is not stalled: it has no series, and resuming restarts the clock.
		if obj.Spec.Suspend || meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionSuspended) {
			continue
		}
		at := obj.CreationTimestamp.Time // never reconciled yet (e.g. the manager is down)
		switch {
		case st.LastProgressTime != nil:
			at = st.LastProgressTime.Time
		case st.StartTime != nil:
			at = st.StartTime.Time
		}
		g.lastProgress = append(g.lastProgress, progressSample{namespace: obj.Namespace, name: obj.Name, at: float64(at.Unix())})
	}
	return g
}

// metricsRunnable registers the gauge collector while the manager leads and unregisters it when
// the manager stops, so a manager restarted in the same process (tests) starts clean.
type metricsRunnable struct {
	collector *gaugeCollector
}

var (
	activeCollectorMu sync.Mutex
	activeCollector   prometheus.Collector
)

func (m *metricsRunnable) NeedLeaderElection() bool { return true }

func (m *metricsRunnable) Start(ctx context.Context) error {
	activeCollectorMu.Lock()
	if activeCollector != nil {
		metrics.Registry.Unregister(activeCollector)
	}
	if err := metrics.Registry.Register(m.collector); err != nil {
		activeCollectorMu.Unlock()
		return fmt.Errorf("register ingestion gauges: %w", err)
	}
	activeCollector = m.collector
	activeCollectorMu.Unlock()

	<-ctx.Done()
	activeCollectorMu.Lock()
	if activeCollector == m.collector {
		metrics.Registry.Unregister(m.collector)
		activeCollector = nil
	}
	activeCollectorMu.Unlock()
	return nil
}

// markProgress stamps status.lastProgressTime when the ingestion moved in this pass: it started,
// changed phase, recorded a finished chunk or resumed from suspension (or has no stamp yet).
func (p *pass) markProgress() {
	st, before := &p.status, &p.obj.Status
	resumed := meta.IsStatusConditionTrue(before.Conditions, v1alpha1.ConditionSuspended) &&
		!meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionSuspended)
	if st.LastProgressTime == nil || before.StartTime == nil || st.Phase != before.Phase || len(p.results) > 0 || resumed {
		st.LastProgressTime = &p.now
	}
}

// recordMetrics runs after a successful status write, so each finished chunk is counted once.
func (p *pass) recordMetrics() {
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
			// The counts come from the pod's termination message: a negative one would make a
			// counter panic, so it adds nothing.
			if f.succeeded {
				rowsTotal.WithLabelValues("processed").Add(float64(max(res.Processed, 0)))
				rowsTotal.WithLabelValues("failed").Add(float64(max(res.Failed, 0)))
				rowsTotal.WithLabelValues("skipped").Add(float64(max(res.Skipped, 0)))
			}
			vectorsUpserted.Add(float64(max(res.VectorsUpserted, 0)))
			embeddingTokens.Add(float64(max(res.Tokens, 0)))
			embeddingRequests.Add(float64(max(res.Requests, 0)))
			embeddingRetries.Add(float64(max(res.Retries, 0)))
			embeddingRateLimited.Add(float64(max(res.RateLimited, 0)))
			if res.Batch != nil {
				b := &v1alpha1.BatchStatus{}
				b.Add(*res.Batch) // clamped
				batchesTotal.WithLabelValues("completed").Add(float64(b.Completed))
				batchesTotal.WithLabelValues("failed").Add(float64(b.Failed))
				batchesTotal.WithLabelValues("expired").Add(float64(b.Expired))
				batchesTotal.WithLabelValues("cancelled").Add(float64(b.Cancelled))
				batchLines.WithLabelValues("submitted").Add(float64(b.Lines))
				batchLines.WithLabelValues("done").Add(float64(b.LinesDone))
				batchLines.WithLabelValues("failed").Add(float64(b.LinesFailed))
			}
		}
	}
	for _, fc := range p.newlyFailed {
		rowsTotal.WithLabelValues("failed").Add(float64(max(rowsOf(fc.Rows), 0)))
	}
}

func rowsOf(r string) int64 {
	var a, b int64
	if _, err := fmt.Sscanf(r, "%d-%d", &a, &b); err != nil {
		return 0
	}
	return b - a + 1
}
