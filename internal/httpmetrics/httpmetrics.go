// Package httpmetrics is what the manager's HTTP server (the REST API and the web UI) exports to
// Prometheus: requests by route and status code, their latency, open event streams and requests
// refused by a limit. Routes are the servers' own mux patterns, so the label set is bounded
// whatever paths clients send. The chart's dashboard and alerts use these names.
package httpmetrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Unmatched is the route of requests no pattern matched (404s and 405s of unknown paths).
const Unmatched = "unmatched"

// Limits that refuse requests (the limit label of vectordb_http_rate_limited_total).
const (
	LimitClient       = "client"        // the per-client-address token bucket
	LimitKey          = "key"           // the per-API-key token bucket
	LimitStreamsKey   = "streams_key"   // a key's open streams
	LimitStreamsTotal = "streams_total" // the server's open streams
)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_http_requests_total", Help: "HTTP requests answered by the manager's HTTP server, by route (mux pattern) and status code.",
	}, []string{"route", "code"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vectordb_http_request_duration_seconds", Help: "Time to answer an HTTP request, by route (event streams, which last as long as the page, are not included).",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
	}, []string{"route"})
	openStreams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "vectordb_http_open_streams", Help: "Web UI event streams open now.",
	})
	limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vectordb_http_rate_limited_total", Help: "Requests refused by a limit (client, key, streams_key, streams_total).",
	}, []string{"limit"})
)

func init() {
	metrics.Registry.MustRegister(requests, latency, openStreams, limited)
	for _, l := range []string{LimitClient, LimitKey, LimitStreamsKey, LimitStreamsTotal} {
		limited.WithLabelValues(l)
	}
	latency.WithLabelValues(Unmatched)
}

// Routes creates the series of routes at zero (a counter that first appears at 1 hides its first
// increase from rate()), with 200 and 500 so error ratios have a denominator from the start.
func Routes(routes ...string) {
	for _, r := range routes {
		requests.WithLabelValues(r, "200")
		requests.WithLabelValues(r, "500")
		latency.WithLabelValues(r)
	}
}

// Observe records one answered request. stream requests count but are not timed.
func Observe(route string, code int, took time.Duration, stream bool) {
	if route == "" {
		route = Unmatched
	}
	requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if !stream {
		latency.WithLabelValues(route).Observe(took.Seconds())
	}
}

// StreamOpened and StreamClosed keep the open-streams gauge.
func StreamOpened() { openStreams.Inc() }
func StreamClosed() { openStreams.Dec() }

// Limited counts a request refused by limit.
func Limited(limit string) { limited.WithLabelValues(limit).Inc() }
