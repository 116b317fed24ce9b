package batchembed

import "testing"

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
