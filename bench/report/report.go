// Package report holds what the benchmark commands share about writing docs/benchmarks.md: their
// own sections below make bench's notes marker, and the machine's load.
package report

import (
	"os"
	"strings"
)

// NotesMarker starts the hand-written part of docs/benchmarks.md, which make bench keeps.
const NotesMarker = "<!-- notes below are kept by make bench -->"

// ReplaceSection puts md (which starts with begin and ends with end) in place of the previous
// section between those markers in the file at path, or appends it after the notes marker (adding
// the marker when the report has none), so `make bench` keeps it.
func ReplaceSection(path, begin, end, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	if i := strings.Index(s, begin); i >= 0 {
		if j := strings.Index(s[i:], end); j >= 0 {
			rest := strings.TrimPrefix(s[i+j+len(end):], "\n")
			return os.WriteFile(path, []byte(s[:i]+md+rest), 0o644)
		}
	}
	if !strings.Contains(s, NotesMarker) {
		s = strings.TrimRight(s, "\n") + "\n\n" + NotesMarker + "\n"
	}
	return os.WriteFile(path, []byte(strings.TrimRight(s, "\n")+"\n\n"+md), 0o644)
}

// LoadAvg is /proc/loadavg's 1, 5 and 15 minute load, or "?".
func LoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
