package chart

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

var workflowDir = filepath.Join(root, ".github", "workflows")

// chartMeta is the part of Chart.yaml the release depends on.
type chartMeta struct {
	Version     string `json:"version"`
	AppVersion  string `json:"appVersion"`
	KubeVersion string `json:"kubeVersion"`
}

func readChartMeta(t *testing.T) chartMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m chartMeta
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// makeEnv is the environment without the variables that would override the Makefile's defaults.
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "VERSION", "IMAGE_REPO", "MANAGER_IMG", "EMBEDDER_IMG", "MAKEFLAGS", "MFLAGS":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func runMake(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-s", "--no-print-directory"}, args...)...)
	cmd.Dir = root
	cmd.Env = makeEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, out)
	}
	return string(out)
}

var semverTag = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)

// The images `make docker-build` tags are the ones the chart pulls by default: appVersion is the
// v-prefixed release tag, and the chart version is the same number.
func TestAppVersionIsTheImageTagTheMakefileBuilds(t *testing.T) {
	m := readChartMeta(t)
	if !semverTag.MatchString(m.AppVersion) {
		t.Fatalf("Chart.yaml appVersion %q is not a v-prefixed semantic version (the image tag)", m.AppVersion)
	}
	if "v"+m.Version != m.AppVersion {
		t.Errorf("Chart.yaml version %q and appVersion %q differ: they move together", m.Version, m.AppVersion)
	}
	if got := strings.TrimSpace(runMake(t, "version")); got != m.AppVersion {
		t.Errorf("make version = %q, want the chart's appVersion %q", got, m.AppVersion)
	}

	// What make docker-build would run, and the images the default rendering pulls.
	built := map[string]string{} // target → image
	for _, line := range strings.Split(runMake(t, "-n", "docker-build"), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "docker" || f[1] != "build" {
			continue
		}
		var target, tag, version string
		for i := 2; i+1 < len(f); i++ {
			switch f[i] {
			case "--target":
				target = f[i+1]
			case "-t":
				tag = f[i+1]
			case "--build-arg":
				version, _ = strings.CutPrefix(f[i+1], "VERSION=")
			}
		}
		if version != m.AppVersion {
			t.Errorf("make docker-build stamps %s with VERSION=%q, want %q", target, version, m.AppVersion)
		}
		built[target] = tag
	}
	objs := mustRender(t)
	dep := deployment(t, objs)
	containers := dep.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)
	managerImage := containers[0].(map[string]any)["image"]
	opts, _ := parseManagerArgs(t, managerArgs(t, dep))
	if built["manager"] == "" || built["manager"] != managerImage {
		t.Errorf("make docker-build tags the manager %q, the chart runs %q", built["manager"], managerImage)
	}
	if built["embedder"] == "" || built["embedder"] != opts.Controller.EmbedderImage {
		t.Errorf("make docker-build tags the embedder %q, the chart's --embedder-image is %q", built["embedder"], opts.Controller.EmbedderImage)
	}
}

// kubeVersion is declared and enforced: helm refuses clusters older than the CEL rules and Job
// fields the operator relies on.
func TestChartKubeVersion(t *testing.T) {
	if readChartMeta(t).KubeVersion == "" {
		t.Fatal("Chart.yaml has no kubeVersion")
	}
	if _, err := render(t, "--kube-version", "1.29.4"); err == nil || !strings.Contains(err.Error(), "kubeVersion") {
		t.Errorf("rendering for Kubernetes 1.29: %v, want refused for kubeVersion", err)
	}
	for _, v := range []string{"1.30.0", "1.37.2", "v1.33.1-eks-1234"} {
		if _, err := render(t, "--kube-version", v); err != nil {
			t.Errorf("rendering for Kubernetes %s: %v", v, err)
		}
	}
}

// The packaged chart holds what the chart needs and nothing .helmignore leaves out.
func TestChartPackage(t *testing.T) {
	dir := t.TempDir()
	if _, err := helm(t, "package", chartDir, "--destination", dir); err != nil {
		t.Fatal(err)
	}
	m := readChartMeta(t)
	pkg := filepath.Join(dir, "vectordb-operator-"+m.Version+".tgz")
	out, err := exec.Command("tar", "-tzf", pkg).Output()
	if err != nil {
		t.Fatalf("listing %s: %v", pkg, err)
	}
	files := strings.Fields(string(out))
	for _, want := range []string{"Chart.yaml", "values.yaml", "values.schema.json", "templates/deployment.yaml", "templates/crds.yaml", "dashboards/vectordb-operator.json", "README.md"} {
		if !slices.Contains(files, "vectordb-operator/"+want) {
			t.Errorf("package lacks %s: %v", want, files)
		}
	}
	for _, f := range files {
		if strings.Contains(f, "/ci/") || strings.HasSuffix(f, "~") || strings.HasSuffix(f, ".swp") {
			t.Errorf("package holds %s, which .helmignore leaves out", f)
		}
	}
	// The packaged chart renders like the directory.
	if _, err := helm(t, "template", release, pkg, "--namespace", namespace); err != nil {
		t.Errorf("the packaged chart does not render: %v", err)
	}
}

type workflow struct {
	On struct {
		Push struct {
			Tags []string `json:"tags"`
		} `json:"push"`
	} `json:"on"`
	Env  map[string]string `json:"env"`
	Jobs map[string]struct {
		Needs    any `json:"needs"`
		Strategy struct {
			Matrix struct {
				Include []map[string]string `json:"include"`
			} `json:"matrix"`
		} `json:"strategy"`
		Steps []wfStep `json:"steps"`
	} `json:"jobs"`
}

type wfStep struct {
	Uses string         `json:"uses"`
	Run  string         `json:"run"`
	With map[string]any `json:"with"`
}

// The release workflow builds what the chart pulls: both Dockerfile targets, for amd64 and arm64,
// tagged with the version the tag names (checked against appVersion), and pushes the chart to an
// OCI registry.
func TestReleaseWorkflow(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(workflowDir, "release.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// YAML 1.1 reads the key `on` as the boolean true; put it back under "on".
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if on, ok := raw["true"]; ok {
		raw["on"] = on
		delete(raw, "true")
	}
	js, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var wf workflow
	if err := json.Unmarshal(js, &wf); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(wf.On.Push.Tags, []string{"v*"}) {
		t.Errorf("triggered by tags %v, want [v*]", wf.On.Push.Tags)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		if !slices.Contains(strings.Split(wf.Env["PLATFORMS"], ","), p) {
			t.Errorf("PLATFORMS %q lacks %s", wf.Env["PLATFORMS"], p)
		}
	}
	if want := toolVersion(t, "HELM_VERSION"); wf.Env["HELM_VERSION"] != want {
		t.Errorf("the workflow's helm %s, hack/tools.sh's %s", wf.Env["HELM_VERSION"], want)
	}

	version := wf.Jobs["version"]
	if !slices.ContainsFunc(version.Steps, func(s wfStep) bool {
		return strings.Contains(s.Run, "make -s version") && strings.Contains(s.Run, "GITHUB_REF_NAME")
	}) {
		t.Error("the version job does not compare the tag with make version (the chart's appVersion)")
	}

	images := wf.Jobs["images"]
	targets := map[string]string{}
	for _, m := range images.Strategy.Matrix.Include {
		targets[m["target"]] = m["image"]
	}
	// The image names are those of the chart's default repositories.
	want := map[string]string{}
	for _, ref := range []string{chartValue(t, "image", "repository"), chartValue(t, "embedder", "image", "repository")} {
		name := filepath.Base(ref)
		want[map[string]string{"vectordb-operator": "manager", "vectordb-embedder": "embedder"}[name]] = name
	}
	if len(targets) != 2 || targets["manager"] != want["manager"] || targets["embedder"] != want["embedder"] {
		t.Errorf("images matrix %v, want %v", targets, want)
	}
	stages := dockerStages(t)
	var build map[string]any
	for _, s := range images.Steps {
		if strings.HasPrefix(s.Uses, "docker/build-push-action@") {
			build = s.With
		}
	}
	if build == nil {
		t.Fatal("no docker/build-push-action step")
	}
	for target := range targets {
		if !slices.Contains(stages, target) {
			t.Errorf("matrix target %s is not a Dockerfile stage (%v)", target, stages)
		}
	}
	checks := map[string]string{
		"target":     "${{ matrix.target }}",
		"platforms":  "${{ env.PLATFORMS }}",
		"build-args": "VERSION=${{ needs.version.outputs.version }}",
		"tags":       "${{ needs.version.outputs.registry }}/${{ matrix.image }}:${{ needs.version.outputs.version }}",
		"push":       "true",
	}
	for k, v := range checks {
		if got := fmt.Sprint(build[k]); got != v {
			t.Errorf("build-push-action %s: %q, want %q", k, got, v)
		}
	}

	var chartRuns []string
	for _, s := range wf.Jobs["chart"].Steps {
		chartRuns = append(chartRuns, s.Run)
	}
	all := strings.Join(chartRuns, "\n")
	for _, want := range []string{"helm lint --strict charts/vectordb-operator", "helm package charts/vectordb-operator", "helm push", "oci://"} {
		if !strings.Contains(all, want) {
			t.Errorf("the chart job does not run %q", want)
		}
	}
	if needs, _ := wf.Jobs["chart"].Needs.([]any); !slices.Contains(needs, any("images")) {
		t.Errorf("the chart is pushed without waiting for its images (needs %v)", wf.Jobs["chart"].Needs)
	}
}

func chartValue(t *testing.T, path ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cur any
	if err := yaml.Unmarshal(b, &cur); err != nil {
		t.Fatal(err)
	}
	for _, p := range path {
		cur = cur.(map[string]any)[p]
	}
	s, _ := cur.(string)
	return s
}

// toolVersion reads NAME=${NAME:-version} from hack/tools.sh.
func toolVersion(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "hack", "tools.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(name + `=\$\{` + name + `:-([^}]+)\}`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("hack/tools.sh does not set %s", name)
	}
	return string(m[1])
}

func dockerStages(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, in := range parseDockerfile(t) {
		if in.cmd == "FROM" && in.stage != "" {
			out = append(out, in.stage)
		}
	}
	return out
}

func actionlintBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(harness.BinDir(), "actionlint")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("actionlint is not in %s (%v): run `make tools` or `bash hack/tools.sh actionlint`", harness.BinDir(), err)
	}
	return bin
}

// Every workflow passes actionlint (syntax, expressions, job needs, action inputs, shell).
func TestWorkflowsLint(t *testing.T) {
	bin := actionlintBin(t)
	files := mustGlob(t, filepath.Join(workflowDir, "*.yaml"))
	cmd := exec.Command(bin, append([]string{"-no-color"}, files...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("actionlint: %v\n%s", err, out)
	}

	// The linter run above is able to fail: a workflow with a broken expression and an unknown
	// job dependency is refused.
	bad := filepath.Join(t.TempDir(), ".github", "workflows", "bad.yaml")
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	broken := "on: {push: {tags: [\"v*\"]}}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    needs: [nope]\n    steps:\n      - run: echo ${{ github.no_such_thing }}\n"
	if err := os.WriteFile(bad, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-no-color", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "nope") {
		t.Errorf("actionlint accepted a broken workflow: %v\n%s", err, out)
	}
}

// The Dockerfile cross-builds: the build stage runs on the build machine ($BUILDPLATFORM) and
// compiles for TARGETOS/TARGETARCH with cgo off, and the runtime stages run nothing, so buildx
// makes the arm64 image on an amd64 runner (and the reverse on an arm64 laptop) without emulation.
// The compile itself for the other architecture takes minutes on a cold build cache, so it runs
// when VECTORDB_CROSS_BUILD=1 (the release workflow builds both platforms in any case).
func TestDockerfileCrossBuilds(t *testing.T) {
	ins := parseDockerfile(t)
	buildStage, line := goBuildLine(t, ins)
	var (
		buildFrom string
		args      = map[string]bool{}
		runs      = map[string]int{}
	)
	for _, in := range ins {
		switch {
		case in.cmd == "FROM" && in.stage == buildStage:
			buildFrom = in.args
		case in.cmd == "ARG" && in.stage == buildStage:
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = true
		case in.cmd == "RUN":
			runs[in.stage]++
		}
	}
	if !strings.HasPrefix(buildFrom, "--platform=$BUILDPLATFORM ") {
		t.Errorf("the build stage (FROM %s) does not run on $BUILDPLATFORM: buildx would emulate the target", buildFrom)
	}
	for _, a := range []string{"TARGETOS", "TARGETARCH"} {
		if !args[a] {
			t.Errorf("the build stage does not declare ARG %s, so buildx's value never reaches the go build", a)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOOS=${TARGETOS}", "GOARCH=${TARGETARCH}"} {
		if !strings.Contains(line, want) {
			t.Errorf("the go build line lacks %s: %s", want, line)
		}
	}
	for _, stage := range []string{"manager", "embedder"} {
		if runs[stage] > 0 {
			t.Errorf("runtime stage %s has RUN instructions, which would run under emulation for the other platform", stage)
		}
	}

	if os.Getenv("VECTORDB_CROSS_BUILD") != "1" {
		t.Log("set VECTORDB_CROSS_BUILD=1 to also compile both binaries for the other architecture")
		return
	}
	other, machine := "arm64", elf.EM_AARCH64
	if runtime.GOARCH == "arm64" {
		other, machine = "amd64", elf.EM_X86_64
	}
	out := t.TempDir()
	script := strings.Replace(line, "-o /out/ ", "-o "+out+"/ ", 1)
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION=v0.0.0-cross", "TARGETOS=linux", "TARGETARCH="+other)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s with TARGETARCH=%s: %v\n%s", script, other, err, b)
	}
	for _, name := range []string{"manager", "embedder"} {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machine {
			t.Errorf("%s built for %s is a %s binary", name, other, f.Machine)
		}
		f.Close()
		assertStatic(t, filepath.Join(out, name))
	}
}
