package httpmetrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestObserveAndLimits(t *testing.T) {
	Routes("GET /x")
	if n := value(t, requests.WithLabelValues("GET /x", "200")); n != 0 {
		t.Fatalf("a declared route starts at %v", n)
	}
	Observe("GET /x", 200, 30*time.Millisecond, false)
	Observe("", 404, time.Millisecond, false)
	Observe("GET /ui/api/stream", 200, time.Hour, true)
	if n := value(t, requests.WithLabelValues("GET /x", "200")); n != 1 {
		t.Errorf("GET /x 200: %v", n)
	}
	if n := value(t, requests.WithLabelValues(Unmatched, "404")); n != 1 {
		t.Errorf("unmatched 404: %v", n)
	}
	if c := histogramCount(t, "GET /x"); c != 1 {
		t.Errorf("GET /x timed %d times, want 1", c)
	}
	if c := histogramCount(t, "GET /ui/api/stream"); c != 0 {
		t.Errorf("a stream was timed: %d observations", c)
	}
	StreamOpened()
	StreamOpened()
	StreamClosed()
	if n := value(t, openStreams); n != 1 {
		t.Errorf("open streams %v, want 1", n)
	}
	StreamClosed()
	Limited(LimitStreamsKey)
	if n := value(t, limited.WithLabelValues(LimitStreamsKey)); n != 1 {
		t.Errorf("streams_key refusals %v", n)
	}
}

func histogramCount(t *testing.T, route string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := latency.WithLabelValues(route).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}
