package chart

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	stage string // the stage it belongs to
	cmd   string // FROM, RUN, COPY, ...
	args  string
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		out     []instruction
		stage   string
		pending string
	)
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if pending == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			pending += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		full := pending + trimmed
		pending = ""
		cmd, args, _ := strings.Cut(full, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			if f := strings.Fields(args); len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				stage = f[len(f)-1]
			} else {
				stage = ""
			}
		}
		out = append(out, instruction{stage: stage, cmd: cmd, args: strings.TrimSpace(args)})
	}
	return out
}

var mountFlag = regexp.MustCompile(`--mount=\S+\s*`)

// goBuildLine is the Dockerfile's one `go build` RUN, without BuildKit's --mount flags.
func goBuildLine(t *testing.T, ins []instruction) (stage, line string) {
	t.Helper()
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			if line != "" {
				t.Fatal("the Dockerfile has more than one go build RUN; this test runs the one")
			}
			stage, line = in.stage, strings.TrimSpace(mountFlag.ReplaceAllString(in.args, ""))
		}
	}
	if line == "" {
		t.Fatal("no go build RUN in the Dockerfile")
	}
	return stage, line
}

// The Dockerfile's build line, run here as the image build runs it, gives static binaries stamped
// with the version.
func TestDockerfileBuildsStaticVersionedBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	_, line := goBuildLine(t, parseDockerfile(t))
	if !strings.Contains(line, "-o /out/ ") {
		t.Fatalf("the go build line does not write to /out/: %s", line)
	}
	out := t.TempDir()
	script := strings.Replace(line, "-o /out/ ", "-o "+out+"/ ", 1)
	// A version no source file contains, so finding it in a binary means the ldflags stamped it.
	version := fmt.Sprintf("v0.0.0-test.%d", time.Now().UnixNano())
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION="+version, "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, b)
	}

	for _, name := range []string{"manager", "embedder"} {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(out, name)
			assertStatic(t, bin)

			info, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			if settings["CGO_ENABLED"] != "0" {
				t.Errorf("CGO_ENABLED=%q", settings["CGO_ENABLED"])
			}
			if settings["-trimpath"] != "true" {
				t.Errorf("-trimpath=%q", settings["-trimpath"])
			}
			// With -trimpath the build info leaves the ldflags out, so look for the stamped
			// value in the binary's data.
			b, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(version)) {
				t.Errorf("version %q is not in the binary: the ldflags did not set internal/version.Version", version)
			}
		})
	}

	got, err := exec.Command(filepath.Join(out, "embedder"), "version").Output()
	if err != nil {
		t.Fatalf("embedder version: %v", err)
	}
	if strings.TrimSpace(string(got)) != version {
		t.Errorf("embedder version printed %q, want %q", got, version)
	}
}

// assertStatic fails unless bin is an ELF executable that needs no loader and no shared library.
func assertStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): it is dynamically linked", bin)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries (DT_NEEDED): %v", bin, libs)
	}
}

// The Dockerfile's shape: two runtime targets on distroless static nonroot, exec-form entrypoints
// (there is no shell), and a build stage that copies every package the binaries import.
func TestDockerfileStages(t *testing.T) {
	ins := parseDockerfile(t)
	buildStage, _ := goBuildLine(t, ins)
	bases := map[string]string{}
	entry := map[string]string{}
	user := map[string]string{}
	var copied []string
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			bases[in.stage] = f[len(f)-3]
		case "ENTRYPOINT":
			entry[in.stage] = in.args
		case "USER":
			user[in.stage] = in.args
		case "COPY":
			if in.stage == buildStage && !strings.HasPrefix(in.args, "--from") {
				f := strings.Fields(in.args)
				copied = append(copied, f[:len(f)-1]...)
			}
		}
	}
	for stage, bin := range map[string]string{"manager": "/manager", "embedder": "/embedder"} {
		if !strings.HasPrefix(bases[stage], "gcr.io/distroless/static") || !strings.HasSuffix(bases[stage], ":nonroot") {
			t.Errorf("stage %s is based on %q, want distroless static nonroot", stage, bases[stage])
		}
		if entry[stage] != `["`+bin+`"]` {
			t.Errorf("stage %s: ENTRYPOINT %s, want [%q] (exec form: the image has no shell)", stage, entry[stage], bin)
		}
		if user[stage] != "65532:65532" {
			t.Errorf("stage %s runs as %q", stage, user[stage])
		}
	}

	// Every package of the module that the two commands import must be copied into the build.
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/manager", "./cmd/embedder")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dir := range strings.Fields(string(b)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, c := range copied {
			c = strings.TrimSuffix(strings.TrimPrefix(c, "./"), "/")
			ok = ok || rel == c || strings.HasPrefix(rel, c+"/")
		}
		if !ok {
			t.Errorf("package dir %s is not copied into the build stage (COPY sources %v)", rel, copied)
		}
	}
	// .dockerignore must let those through too.
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copied {
		if !strings.Contains(string(ignore), "!"+c) {
			t.Errorf(".dockerignore does not re-include %s", c)
		}
	}
}
