// Package repo checks the repository itself: what a fresh clone carries.
package repo

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxTrackedBytes is the size above which a tracked file is refused: sources, docs, golden data and
// screenshots stay far below it; build outputs and generated data sets do not.
const maxTrackedBytes = 5 << 20

// tracked is one file as git's index has it.
type tracked struct {
	path string
	mode string // git's mode: 100644, 100755, 120000 (symlink), 160000 (submodule)
	size int64
	head []byte // the first bytes of the content
}

// binaryMagic lists the starts of compiled executables and libraries (ELF, Mach-O, PE, wasm).
var binaryMagic = []struct {
	name  string
	magic []byte
}{
	{"an ELF executable", []byte("\x7fELF")},
	{"a Mach-O executable", []byte{0xcf, 0xfa, 0xed, 0xfe}},
	{"a Mach-O executable", []byte{0xce, 0xfa, 0xed, 0xfe}},
	{"a Mach-O universal binary", []byte{0xca, 0xfe, 0xba, 0xbe}},
	{"a Windows PE executable", []byte("MZ")},
	{"a WebAssembly module", []byte("\x00asm")},
}

// problems says why each file must not be tracked: a compiled binary, a file marked executable that
// is not a script (no #!), or one over maxTrackedBytes.
func problems(files []tracked) []string {
	var out []string
	for _, f := range files {
		if f.mode == "120000" || f.mode == "160000" {
			continue
		}
		for _, m := range binaryMagic {
			if bytes.HasPrefix(f.head, m.magic) {
				out = append(out, fmt.Sprintf("%s is %s: build outputs are never committed (git rm --cached %s; add it to .gitignore)", f.path, m.name, f.path))
				break
			}
		}
		if f.mode == "100755" && !bytes.HasPrefix(f.head, []byte("#!")) {
			out = append(out, fmt.Sprintf("%s is marked executable but is not a script (no #!): a binary, or a mode to fix with git update-index --chmod=-x", f.path))
		}
		if f.size > maxTrackedBytes {
			out = append(out, fmt.Sprintf("%s is %.1f MiB, over the %d MiB limit for a tracked file: generate it in the test or keep it out of git", f.path, float64(f.size)/(1<<20), maxTrackedBytes>>20))
		}
	}
	return out
}

func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    tracked
		want string // a substring of the one problem, or "" for none
	}{
		{"go source", tracked{path: "a.go", mode: "100644", size: 100, head: []byte("package a")}, ""},
		{"script", tracked{path: "hack/tools.sh", mode: "100755", size: 100, head: []byte("#!/usr/bin/env bash")}, ""},
		{"ELF", tracked{path: "demo", mode: "100755", size: 100 << 20, head: []byte("\x7fELF\x02\x01")}, "is an ELF executable"},
		{"ELF not marked executable", tracked{path: "x", mode: "100644", size: 10, head: []byte("\x7fELF")}, "is an ELF executable"},
		{"Mach-O", tracked{path: "m", mode: "100644", size: 10, head: []byte{0xcf, 0xfa, 0xed, 0xfe, 7}}, "Mach-O"},
		{"PE", tracked{path: "w.exe", mode: "100644", size: 10, head: []byte("MZ\x90\x00")}, "PE"},
		{"executable data", tracked{path: "data.bin", mode: "100755", size: 10, head: []byte("abc")}, "not a script"},
		{"big file", tracked{path: "big.csv", mode: "100644", size: 6 << 20, head: []byte("id,text")}, "over the 5 MiB limit"},
		{"at the limit", tracked{path: "ok.csv", mode: "100644", size: 5 << 20, head: []byte("id,text")}, ""},
		{"symlink", tracked{path: "l", mode: "120000", size: 6 << 20, head: []byte("\x7fELF")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problems([]tracked{tc.f})
			switch {
			case tc.want == "" && len(got) != 0:
				t.Fatalf("want no problem, got %q", got)
			case tc.want != "" && (len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tc.want)):
				t.Fatalf("want a problem with %q, got %q", tc.want, got)
			}
		})
	}
}

// TestNoBinariesOrLargeFilesTracked fails when a commit adds a build output or a large file: a
// fresh clone carries every version of it forever.
func TestNoBinariesOrLargeFilesTracked(t *testing.T) {
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("SKIP: not a git checkout (%v): nothing to check", err)
	}
	dir := strings.TrimSpace(string(root))
	out, err := exec.Command("git", "-C", dir, "ls-files", "-s", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []tracked
	for _, rec := range strings.Split(string(out), "\x00") {
		if rec == "" {
			continue
		}
		// "<mode> <object> <stage>\t<path>"
		meta, path, ok := strings.Cut(rec, "\t")
		fields := strings.Fields(meta)
		if !ok || len(fields) != 3 {
			t.Fatalf("git ls-files -s: unexpected record %q", rec)
		}
		f := tracked{path: path, mode: fields[0]}
		if f.mode != "120000" && f.mode != "160000" {
			full := filepath.Join(dir, path)
			st, err := os.Stat(full)
			if os.IsNotExist(err) {
				continue // deleted in the work tree and not yet committed
			}
			if err != nil {
				t.Fatal(err)
			}
			f.size = st.Size()
			fh, err := os.Open(full)
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 8)
			n, _ := fh.Read(head)
			fh.Close()
			f.head = head[:n]
		}
		files = append(files, f)
	}
	if len(files) < 100 {
		t.Fatalf("git ls-files listed %d files: not this repository?", len(files))
	}
	if p := problems(files); len(p) > 0 {
		t.Fatalf("%d tracked files must not be:\n%s", len(p), strings.Join(p, "\n"))
	}
}
