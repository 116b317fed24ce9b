package report

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	const b, e = "<!-- s -->", "<!-- end s -->"
	path := filepath.Join(t.TempDir(), "b.md")
	read := func() string {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	// No file: the marker, then the section.
	if err := ReplaceSection(path, b, e, b+"\none\n"+e+"\n"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "\n\n"+NotesMarker+"\n\n"+b+"\none\n"+e+"\n"; got != want {
		t.Fatalf("new file:\n%q\nwant\n%q", got, want)
	}
	// Replaced in place; what follows it stays.
	if err := os.WriteFile(path, []byte("figures\n"+NotesMarker+"\n"+b+"\nold\n"+e+"\nnotes after\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceSection(path, b, e, b+"\nnew\n"+e+"\n"); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "figures\n"+NotesMarker+"\n"+b+"\nnew\n"+e+"\nnotes after\n"; got != want {
		t.Fatalf("replaced:\n%q\nwant\n%q", got, want)
	}
}
