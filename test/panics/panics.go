// Package panics is the test suites' guard against reconcile panics. controller-runtime recovers
// a panicking Reconcile (logging it and retrying with backoff), so a panic on an edge case never
// fails a test by itself; every suite that runs a manager checks the manager's
// controller_runtime_reconcile_panics_total with this package and fails when any is non-zero.
package panics

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric is controller-runtime's counter of recovered reconcile panics, labelled by controller.
const Metric = "controller_runtime_reconcile_panics_total"

// Counts are reconcile panics by controller name.
type Counts map[string]float64

// FromGatherer reads the counts of an in-process manager (e.g. controller-runtime's
// metrics.Registry).
func FromGatherer(g prometheus.Gatherer) (Counts, error) {
	families, err := g.Gather()
	if err != nil {
		return nil, fmt.Errorf("gather metrics: %w", err)
	}
	for _, f := range families {
		if f.GetName() == Metric {
			return fromFamily(f), nil
		}
	}
	return Counts{}, nil
}

// FromText reads the counts from a /metrics exposition (a manager binary).
func FromText(r io.Reader) (Counts, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	if f, ok := families[Metric]; ok {
		return fromFamily(f), nil
	}
	return Counts{}, nil
}

func fromFamily(f *dto.MetricFamily) Counts {
	out := Counts{}
	for _, m := range f.GetMetric() {
		name := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" {
				name = l.GetValue()
			}
		}
		out[name] += m.GetCounter().GetValue()
	}
	return out
}

// Add returns the sum of c and d, per controller (counts of successive manager processes).
func (c Counts) Add(d Counts) Counts {
	out := maps.Clone(c)
	if out == nil {
		out = Counts{}
	}
	for k, v := range d {
		out[k] += v
	}
	return out
}

// Since returns the panics counted after base was read (a manager started within a process
// whose counter already had values).
func (c Counts) Since(base Counts) Counts {
	out := Counts{}
	for k, v := range c {
		if d := v - base[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Err is nil when no controller panicked, else an error naming each one and its count.
func (c Counts) Err() error {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		if c[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s: %.0f", k, c[k]))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("reconcile panicked (%s %s); the manager recovered, but a panic is a bug: see the log for \"Observed a panic\"",
		Metric, strings.Join(parts, ", "))
}

// LogMarker is what controller-runtime's panic handler logs with every recovered panic; a
// manager's log holds it even when the process was killed before its metrics were read.
const LogMarker = "Observed a panic"

// InLog counts recovered panics in a manager's log.
func InLog(log string) int { return strings.Count(log, LogMarker) }
