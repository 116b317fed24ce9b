package taskstatus

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

var phases = []v1alpha1.Phase{
	v1alpha1.PhasePending, v1alpha1.PhasePlanning, v1alpha1.PhaseProcessingChunks,
	v1alpha1.PhaseCompleted, v1alpha1.PhasePartiallyCompleted, v1alpha1.PhaseFailed, v1alpha1.PhaseCancelled,
}

func TestFromPhase(t *testing.T) {
	cases := map[v1alpha1.Phase]string{
		"":                               "pending",
		v1alpha1.PhasePending:            "pending",
		v1alpha1.PhasePlanning:           "processing",
		v1alpha1.PhaseProcessingChunks:   "processing_chunks",
		v1alpha1.PhaseCompleted:          "completed",
		v1alpha1.PhasePartiallyCompleted: "partially_completed",
		v1alpha1.PhaseFailed:             "failed",
		v1alpha1.PhaseCancelled:          "cancelled",
		"SomeFuturePhase":                "processing",
	}
	for phase, want := range cases {
		if got := FromPhase(phase); got != want {
			t.Errorf("FromPhase(%q) = %q, want %q", phase, got, want)
		}
	}
}

// The word's terminality must agree with the phase's, or the REST API would report a running task
// as finished (or refuse to cancel one that is still running).
func TestTerminalAgreesWithPhase(t *testing.T) {
	for _, p := range phases {
		if got, want := Terminal(FromPhase(p)), p.Terminal(); got != want {
			t.Errorf("Terminal(FromPhase(%s)) = %v, phase terminal = %v", p, got, want)
		}
	}
	if Terminal("") || Terminal("unknown") || Terminal("COMPLETED") {
		t.Error("Terminal accepted a word that is not a status word")
	}
}

func TestValidAndAll(t *testing.T) {
	words := All()
	if len(words) != 7 {
		t.Fatalf("All() has %d words, want 7: %v", len(words), words)
	}
	reached := map[string]bool{}
	for _, p := range phases {
		reached[FromPhase(p)] = true
	}
	for _, w := range words {
		if !Valid(w) {
			t.Errorf("Valid(%q) = false for a word of All()", w)
		}
		if !reached[w] {
			t.Errorf("word %q is in All() but no phase maps to it", w)
		}
	}
	for _, w := range []string{"", "Pending", "running", "processing-chunks", " completed"} {
		if Valid(w) {
			t.Errorf("Valid(%q) = true", w)
		}
	}
	words[0] = "mutated"
	if All()[0] != Pending {
		t.Error("All() returned the package's own slice")
	}
}
