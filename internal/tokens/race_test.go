//go:build race

package tokens

// The race detector makes sync.Pool drop items at random, so pooled scratch is reallocated.
const raceEnabled = true
