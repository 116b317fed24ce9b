package ratelease

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// Metric names (the chart's alerts use them).
const (
	MetricDeclared    = "vectordb_rate_budget_declared_per_minute"
	MetricEffective   = "vectordb_rate_budget_effective_per_minute"
	MetricGranted     = "vectordb_rate_budget_granted_per_minute"
	MetricHolders     = "vectordb_rate_budget_holders"
	MetricFactor      = "vectordb_rate_budget_backoff_factor"
	MetricUsed        = "vectordb_rate_budget_used_total"
	MetricRateLimited = "vectordb_rate_budget_rate_limited_total"
	// MetricIngestionGranted is the part of a budget's grants that one ingestion's pods hold:
	// it shows a newcomer's share arriving and a finished one's going.
	MetricIngestionGranted = "vectordb_rate_budget_ingestion_granted_per_minute"
	// MetricClamped counts renewals whose counts were above what the pod's grant allowed (and
	// were clamped), by ingestion: a pod that misreports, or a bound too tight.
	MetricClamped = "vectordb_rate_budget_clamped_reports_total"
)

// Metrics are the lease service's series, by budget key; "kind" is requests or tokens.
type Metrics struct {
	declared, effective, granted *prometheus.GaugeVec
	ingestionGranted             *prometheus.GaugeVec
	holders, factor              *prometheus.GaugeVec
	used                         *prometheus.CounterVec
	rateLimited                  *prometheus.CounterVec
	clampedReports               *prometheus.CounterVec
}

// NewMetrics registers the series with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	kinds := []string{"budget", "kind"}
	m := &Metrics{
		declared: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricDeclared,
			Help: "A rate budget as declared, per minute, by kind (requests, tokens)."}, kinds),
		effective: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricEffective,
			Help: "A rate budget after backoff on sustained 429s, per minute."}, kinds),
		granted: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricGranted,
			Help: "Sum of the live leases of a budget, per minute."}, kinds),
		ingestionGranted: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricIngestionGranted,
			Help: "Sum of the live leases of one ingestion's pods (namespace/name) within a budget, per minute."},
			[]string{"budget", "ingestion", "kind"}),
		holders: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricHolders,
			Help: "Pods holding a lease of a budget."}, []string{"budget"}),
		factor: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MetricFactor,
			Help: "Backoff factor of a budget (1: the declared budget; halves on sustained 429s)."}, []string{"budget"}),
		used: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricUsed,
			Help: "Requests sent and tokens billed under a budget, as its pods reported them."}, kinds),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRateLimited,
			Help: "429 answers a budget's pods reported."}, []string{"budget"}),
		clampedReports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricClamped,
			Help: "Renewals reporting more requests, tokens or 429s than the pod's grant allowed, clamped, by ingestion (namespace/name)."},
			[]string{"budget", "ingestion"}),
	}
	for _, c := range []prometheus.Collector{m.declared, m.effective, m.granted, m.ingestionGranted, m.holders, m.factor, m.used, m.rateLimited, m.clampedReports} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observeUse(key string, req RenewRequest) {
	if m == nil {
		return
	}
	m.used.WithLabelValues(key, "requests").Add(float64(req.UsedRequests))
	m.used.WithLabelValues(key, "tokens").Add(float64(req.UsedTokens))
	m.rateLimited.WithLabelValues(key).Add(float64(req.RateLimited))
}

func (m *Metrics) clamped(key, ingestion string) {
	if m == nil {
		return
	}
	m.clampedReports.WithLabelValues(key, ingestion).Inc()
}

func (m *Metrics) setBudget(key string, declared, eff, granted ratebudget.Rates, holders int, factor float64) {
	if m == nil {
		return
	}
	for _, x := range []struct {
		g *prometheus.GaugeVec
		r ratebudget.Rates
	}{{m.declared, declared}, {m.effective, eff}, {m.granted, granted}} {
		x.g.WithLabelValues(key, "requests").Set(x.r.RPM)
		x.g.WithLabelValues(key, "tokens").Set(x.r.TPM)
	}
	m.holders.WithLabelValues(key).Set(float64(holders))
	m.factor.WithLabelValues(key).Set(factor)
}

// setIngestions sets each ingestion's part of a budget's grants; ingestions no longer holding
// any lease of it lose their series.
func (m *Metrics) setIngestions(key string, granted map[string]ratebudget.Rates) {
	if m == nil {
		return
	}
	m.ingestionGranted.DeletePartialMatch(prometheus.Labels{"budget": key})
	for ing, r := range granted {
		m.ingestionGranted.WithLabelValues(key, ing, "requests").Set(r.RPM)
		m.ingestionGranted.WithLabelValues(key, ing, "tokens").Set(r.TPM)
	}
}

// forget drops the gauges of a budget no one holds any more (its counters stay).
func (m *Metrics) forget(key string) {
	if m == nil {
		return
	}
	for _, g := range []*prometheus.GaugeVec{m.declared, m.effective, m.granted} {
		g.DeleteLabelValues(key, "requests")
		g.DeleteLabelValues(key, "tokens")
	}
	m.holders.DeleteLabelValues(key)
	m.factor.DeleteLabelValues(key)
	m.ingestionGranted.DeletePartialMatch(prometheus.Labels{"budget": key})
}

// MetricNames are the series the lease service exports (each appears with its first budget).
func MetricNames() []string {
	return []string{MetricDeclared, MetricEffective, MetricGranted, MetricIngestionGranted, MetricHolders, MetricFactor, MetricUsed, MetricRateLimited, MetricClamped}
}
