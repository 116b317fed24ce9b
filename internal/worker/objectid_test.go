package worker

import "testing"

func TestObjectID(t *testing.T) {
	for _, tc := range []struct{ taskID, uid, want string }{
		{"q239:2025-01-10", "8c1f0b52-7a0e", "q239:2025-01-10-8c1f0b52-7a0e"}, // two ingestions with one task id stay apart
		{"8c1f0b52-7a0e", "8c1f0b52-7a0e", "8c1f0b52-7a0e"},                   // the task id defaults to the uid
		{"local", "", "local"}, // a local run has no uid
		{"", "8c1f0b52-7a0e", "8c1f0b52-7a0e"},
	} {
		if got := (Ingestion{TaskID: tc.taskID, UID: tc.uid}).ObjectID(); got != tc.want {
			t.Errorf("ObjectID(%q, %q) = %q, want %q", tc.taskID, tc.uid, got, tc.want)
		}
	}
}
