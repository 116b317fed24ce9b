package batchembed

import (
	"errors"
	"strings"
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func TestCustomIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id    string
		chunk int
		row   int64
		ok    bool
	}{
		{customID(3, 1234567), 3, 1234567, true},
		{customID(0, 0), 0, 0, true},
		{"c3-r12", 4, 0, false},  // another chunk's line
		{"c3-r012", 3, 0, false}, // not as we write it
		{"c3-r12x", 3, 0, false}, // trailing garbage
		{"row-12", 3, 0, false},  // not ours
		{"c3-r-1", 3, 0, false},  // negative row
		{"", 3, 0, false},
	} {
		row, err := parseCustomID(tc.id, tc.chunk)
		if (err == nil) != tc.ok || tc.ok && row != tc.row {
			t.Errorf("parseCustomID(%q, %d) = %d, %v", tc.id, tc.chunk, row, err)
		}
	}
}

func TestTerminalStates(t *testing.T) {
	for st, want := range map[string]bool{
		"validating": false, "in_progress": false, "finalizing": false, "cancelling": false, StateUploaded: false,
		"completed": true, "failed": true, "expired": true, "cancelled": true,
	} {
		if Terminal(st) != want {
			t.Errorf("Terminal(%q) = %v", st, !want)
		}
	}
}

func TestEstimateBatches(t *testing.T) {
	for _, tc := range []struct {
		rows, tokens, share, want int64
	}{
		{0, 0, 1000, 0},
		{1, 5, 1000, 1},
		{50_000, 100, 1_000_000, 1},
		{50_001, 100, 1_000_000, 2},        // lines
		{1000, 2_500_000, 1_000_000, 3},    // tokens
		{120_000, 30_000_000, 750_000, 40}, // tokens dominate
		{120_000, 1_000_000, 750_000, 3},   // lines dominate
		{10, 1_000_000, 0, 1},              // no token bound
	} {
		if got := EstimateBatches(tc.rows, tc.tokens, tc.share); got != tc.want {
			t.Errorf("EstimateBatches(%d, %d, %d) = %d, want %d", tc.rows, tc.tokens, tc.share, got, tc.want)
		}
	}
}

func TestChunkTokenShare(t *testing.T) {
	for _, tc := range []struct {
		max  int64
		par  int32
		want int64
	}{
		{0, 1, DefaultMaxEnqueuedTokens},
		{3_000_000, 4, 750_000},
		{3_000_000, 0, 3_000_000},
		{20_000, 1000, 10_000}, // floor
	} {
		if got := ChunkTokenShare(tc.max, tc.par); got != tc.want {
			t.Errorf("ChunkTokenShare(%d, %d) = %d, want %d", tc.max, tc.par, got, tc.want)
		}
	}
}

func TestCorruptRecordIsPermanent(t *testing.T) {
	if _, err := decodeRecord([]byte(`{"version":1,"ingestion":"uid-1","batches":[{`), "s3://b/k"); err == nil {
		t.Fatal("a truncated record decoded")
	} else if _, ok := worker.AsPermanent(err); !ok || !strings.Contains(err.Error(), "s3://b/k") {
		t.Fatalf("want a permanent error naming the object, got %v", err)
	}
	rec, err := decodeRecord([]byte(`{"version":1,"ingestion":"uid-1","chunk":2,"generation":1}`), "s3://b/k")
	if err != nil || rec.Ingestion != "uid-1" || rec.Chunk != 2 || rec.Generation != 1 {
		t.Fatalf("got %+v, %v", rec, err)
	}
}

// A hostile record: too large (it was truncated at the limit; it must not be reported as
// merely malformed), or not JSON, is a permanent error naming what to do.
func TestRecordDecodeRefusesHostileContent(t *testing.T) {
	defer func(n int) { maxRecordBytes = n }(maxRecordBytes)
	maxRecordBytes = 64
	ok := []byte(`{"version":1,"ingestion":"u","chunk":3}`)
	if rec, err := decodeRecord(ok, "x"); err != nil || rec.Chunk != 3 {
		t.Fatalf("a small record: %+v, %v", rec, err)
	}
	for name, b := range map[string][]byte{
		"too large": []byte(`{"version":1,"ingestion":"` + strings.Repeat("a", 80) + `"}`)[:65],
		"not JSON":  []byte(`{"version":`),
	} {
		_, err := decodeRecord(b, "x")
		var perm *worker.PermanentError
		if !errors.As(err, &perm) || !strings.Contains(err.Error(), "delete it") {
			t.Errorf("%s: want a permanent error saying to delete it, got %v", name, err)
		}
		if name == "too large" && !strings.Contains(err.Error(), "over") {
			t.Errorf("too large: the error does not say so: %v", err)
		}
	}
}
