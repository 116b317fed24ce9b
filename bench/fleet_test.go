package main

import (
	"math"
	"testing"
	"time"
)

// fleetShares measures each ingestion's part of the tokens over the span in which all of them
// progressed, so a newcomer's start-up and a finisher's tail do not count.
func TestFleetShares(t *testing.T) {
	s := func(sec int, tok ...int64) fleetSample {
		return fleetSample{at: time.Duration(sec) * time.Second, tokens: tok}
	}
	for _, tc := range []struct {
		name     string
		samples  []fleetSample
		from, to int
		shares   []float64
		ok       bool
	}{
		{"equal progress", []fleetSample{s(0, 0, 0), s(1, 10, 10), s(2, 20, 20), s(3, 30, 30)}, 1, 3, []float64{0.5, 0.5}, true},
		{"a newcomer's start-up is left out", []fleetSample{s(0, 0, 0), s(1, 40, 0), s(2, 80, 0), s(3, 100, 10), s(4, 110, 20), s(5, 120, 30)},
			3, 5, []float64{0.5, 0.5}, true},
		{"a finisher's tail is left out", []fleetSample{s(0, 0, 0), s(1, 10, 30), s(2, 20, 60), s(3, 20, 60), s(4, 60, 60)},
			1, 2, []float64{0.25, 0.75}, true},
		{"never together", []fleetSample{s(0, 0, 0), s(1, 10, 0), s(2, 20, 0), s(3, 20, 10)}, 0, 0, nil, false},
		{"one never progressed", []fleetSample{s(0, 0, 0), s(1, 10, 0), s(2, 20, 0)}, 0, 0, nil, false},
		{"too few samples", []fleetSample{s(0, 5, 5)}, 0, 0, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to, shares, ok := fleetShares(tc.samples)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if from != time.Duration(tc.from)*time.Second || to != time.Duration(tc.to)*time.Second {
				t.Errorf("span %s–%s, want %ds–%ds", from, to, tc.from, tc.to)
			}
			for i := range tc.shares {
				if math.Abs(shares[i]-tc.shares[i]) > 1e-9 {
					t.Errorf("shares %v, want %v", shares, tc.shares)
					break
				}
			}
		})
	}
}

// throughput: the key's tokens per bin as a share of the budget's, from the samples' totals.
func TestThroughput(t *testing.T) {
	s := func(sec int, tok ...int64) fleetSample {
		return fleetSample{at: time.Duration(sec) * time.Second, tokens: tok}
	}
	for _, tc := range []struct {
		name    string
		samples []fleetSample
		bin     time.Duration
		tpm     float64
		want    []float64
	}{
		{"at the budget, then half", []fleetSample{s(0, 0, 0), s(10, 50, 50), s(20, 100, 100), s(30, 125, 125), s(40, 150, 150)},
			10 * time.Second, 600, []float64{1, 1, 0.5, 0.5}},
		{"bins between samples take the last sample before each edge", []fleetSample{s(0, 0), s(15, 150), s(30, 300)},
			10 * time.Second, 600, []float64{0, 1.5, 1.5}},
		{"too few samples", []fleetSample{s(0, 5)}, 10 * time.Second, 600, nil},
		{"no budget", []fleetSample{s(0, 0), s(10, 5)}, 10 * time.Second, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := throughput(tc.samples, tc.bin, tc.tpm)
			if len(got) != len(tc.want) {
				t.Fatalf("throughput %v, want %v", got, tc.want)
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-9 {
					t.Fatalf("throughput %v, want %v", got, tc.want)
				}
			}
		})
	}
}
