package podrunner

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestImageRepository(t *testing.T) {
	for image, want := range map[string]string{
		"vectordb/embedder":                           "vectordb/embedder",
		"vectordb/embedder:v1":                        "vectordb/embedder",
		"registry:5000/vectordb/embedder":             "registry:5000/vectordb/embedder",
		"registry:5000/vectordb/embedder:v1":          "registry:5000/vectordb/embedder",
		"vectordb/embedder@sha256:abcd":               "vectordb/embedder",
		"registry:5000/vectordb/embedder:v1@sha256:a": "registry:5000/vectordb/embedder",
	} {
		if got := imageRepository(image); got != want {
			t.Errorf("imageRepository(%q) = %q, want %q", image, got, want)
		}
	}
}

func TestArgv(t *testing.T) {
	c := &corev1.Container{Command: []string{"/embedder", "chunk"}, Args: []string{"--index", "3"}}
	if got, want := argv(c), []string{"chunk", "--index", "3"}; !slices.Equal(got, want) {
		t.Errorf("argv = %q, want %q", got, want)
	}
	c = &corev1.Container{Args: []string{"plan"}}
	if got, want := argv(c), []string{"plan"}; !slices.Equal(got, want) {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestTerminationMessage(t *testing.T) {
	dir := t.TempDir()
	st := &podState{termPath: filepath.Join(dir, "term"), logPath: filepath.Join(dir, "log")}
	var log strings.Builder
	for i := range 100 {
		log.WriteString(strings.Repeat("x", 10) + string(rune('a'+i%26)) + "\n")
	}
	if err := os.WriteFile(st.logPath, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st.termPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	st.exitCode = 1
	got := terminationMessage(st, corev1.TerminationMessageFallbackToLogsOnError)
	lines := strings.SplitAfter(log.String(), "\n")
	if want := strings.Join(lines[len(lines)-1-fallbackLogLines:], ""); got != want {
		t.Errorf("fallback message has %d bytes, want the last %d lines (%d bytes)", len(got), fallbackLogLines, len(want))
	}
	if terminationMessage(st, corev1.TerminationMessageReadFile) != "" {
		t.Errorf("File policy fell back to the log")
	}
	st.exitCode = 0
	if terminationMessage(st, corev1.TerminationMessageFallbackToLogsOnError) != "" {
		t.Errorf("successful process got the log as message")
	}

	// A long log is cut to its last fallbackLogBytes.
	long := strings.Repeat(strings.Repeat("y", 99)+"\n", 60) + "last line\n"
	if err := os.WriteFile(st.logPath, []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	st.exitCode = 2
	got = terminationMessage(st, corev1.TerminationMessageFallbackToLogsOnError)
	if len(got) != fallbackLogBytes || !strings.HasSuffix(got, "last line\n") {
		t.Errorf("fallback of a long log: %d bytes, suffix %q", len(got), got[max(0, len(got)-10):])
	}

	// The file wins, capped at maxMessageBytes.
	if err := os.WriteFile(st.termPath, []byte(strings.Repeat("m", maxMessageBytes+10)), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := terminationMessage(st, corev1.TerminationMessageFallbackToLogsOnError); got != strings.Repeat("m", maxMessageBytes) {
		t.Errorf("message from file has %d bytes, want %d m's", len(got), maxMessageBytes)
	}
}

func TestSeekTail(t *testing.T) {
	cases := []struct {
		log  string
		n    int64
		want string
	}{
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 4, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"a\nb\nc", 1, "c"}, // a last line without its newline yet
		{"a\nb\nc", 2, "b\nc"},
		{"", 3, ""},
		{"\n\n", 1, "\n"},
		{strings.Repeat("x", 70000) + "\n" + strings.Repeat("y", 40000) + "\n", 1, strings.Repeat("y", 40000) + "\n"}, // across read blocks
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "log")
		if err := os.WriteFile(path, []byte(c.log), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := seekTail(f, c.n); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("seekTail(%.20q, %d) = %.40q, want %.40q", c.log, c.n, got, c.want)
		}
	}
}

func TestLimitWriter(t *testing.T) {
	var b strings.Builder
	w := &limitWriter{w: &b, n: 7}
	if n, err := w.Write([]byte("abcd")); n != 4 || err != nil {
		t.Fatalf("first write: %d, %v", n, err)
	}
	if n, err := w.Write([]byte("efghij")); n != 3 || err != errLimit {
		t.Fatalf("write past the limit: %d, %v", n, err)
	}
	if b.String() != "abcdefg" {
		t.Errorf("wrote %q", b.String())
	}
	if n, err := w.Write([]byte("k")); n != 0 || err != errLimit {
		t.Errorf("write after the limit: %d, %v", n, err)
	}
}
