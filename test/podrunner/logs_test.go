package podrunner_test

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/test/podrunner"
)

// podLogs reads a pod's log the way kubectl logs does: client-go's GetLogs, which kube-apiserver
// proxies to the node's kubelet endpoint (the runner's, found through the Node's InternalIP and
// daemonEndpoints).
func (e *env) podLogs(ctx context.Context, pod string, opts *corev1.PodLogOptions) (string, error) {
	rc, err := e.cs.CoreV1().Pods(ns).GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func (e *env) testLogs(ctx context.Context, t *testing.T) {
	node, err := e.cs.CoreV1().Nodes().Get(ctx, podrunner.DefaultNodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Status.DaemonEndpoints.KubeletEndpoint.Port; got != e.runner.KubeletPort() || got == 0 {
		t.Errorf("node kubelet endpoint port %d, runner serves on %d", got, e.runner.KubeletPort())
	}

	job := e.createJob(ctx, t, newJob("logs", "-stdout", "hello on stdout", "-stderr", "oops on stderr"))
	e.waitJob(ctx, t, job.Name, batchv1.JobComplete)
	pod := e.jobPods(ctx, t, job.Name)[0].Name

	all, err := e.podLogs(ctx, pod, &corev1.PodLogOptions{})
	if err != nil {
		t.Fatalf("GetLogs: %v", err)
	}
	if all != "hello on stdout\noops on stderr\n" {
		t.Errorf("log = %q, want stdout then stderr", all)
	}

	cases := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"container named", corev1.PodLogOptions{Container: "embedder"}, all},
		{"tailLines 1", corev1.PodLogOptions{TailLines: ptr.To[int64](1)}, "oops on stderr\n"},
		{"tailLines 0", corev1.PodLogOptions{TailLines: ptr.To[int64](0)}, ""},
		{"tailLines beyond the log", corev1.PodLogOptions{TailLines: ptr.To[int64](10)}, all},
		{"limitBytes", corev1.PodLogOptions{LimitBytes: ptr.To[int64](5)}, "hello"},
		{"follow of a finished process ends", corev1.PodLogOptions{Follow: true}, all},
	}
	for _, c := range cases {
		got, err := e.podLogs(ctx, pod, &c.opts)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}

	// What the runner cannot answer faithfully is refused with a reason, not answered wrongly.
	refused := []struct {
		name string
		opts corev1.PodLogOptions
		want string
	}{
		{"previous", corev1.PodLogOptions{Previous: true}, "previous terminated container"},
		{"timestamps", corev1.PodLogOptions{Timestamps: true}, "timestamps are not supported"},
		{"sinceSeconds", corev1.PodLogOptions{SinceSeconds: ptr.To[int64](60)}, "sinceSeconds and sinceTime are not supported"},
		{"unknown container (the API server checks)", corev1.PodLogOptions{Container: "sidecar"}, "sidecar"},
	}
	for _, c := range refused {
		got, err := e.podLogs(ctx, pod, &c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q, %v; want an error containing %q", c.name, got, err, c.want)
		}
	}
}

// kubectl logs -f: lines arrive while the process runs, and the stream ends when it exits.
func (e *env) testLogsFollow(ctx context.Context, t *testing.T) {
	stop := filepath.Join(t.TempDir(), "stop")
	job := e.createJob(ctx, t, newJob("logs-follow", "-stdout", "first", "-tick-until", stop))
	pod := e.waitProcess(ctx, t, job.Name)

	rc, err := e.cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatalf("GetLogs follow: %v", err)
	}
	defer rc.Close()
	lines := bufio.NewScanner(rc)
	var got []string
	// The process keeps printing until the stop file exists: reading ticks proves the stream is
	// live, not a copy of a finished log.
	for len(got) < 5 && lines.Scan() {
		got = append(got, lines.Text())
	}
	if len(got) < 5 || got[0] != "first" || got[1] != "tick 1" {
		t.Fatalf("first lines of the followed log: %q (%v)", got, lines.Err())
	}
	if running := e.runner.Running(); !strings.Contains(strings.Join(running, " "), ns+"/"+pod) {
		t.Fatalf("process of %s is not running while its log streams: %v", pod, running)
	}
	if err := os.WriteFile(stop, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
		got = append(got, lines.Text())
	}
	if err := lines.Err(); err != nil {
		t.Fatalf("reading the followed log: %v", err)
	}
	if got[len(got)-1] != "last line" {
		t.Errorf("followed log ends with %q, want the process's last line", got[len(got)-1])
	}
	e.waitJob(ctx, t, job.Name, batchv1.JobComplete)
	if whole := e.runner.Logs(ns, pod); whole != strings.Join(got, "\n")+"\n" {
		t.Errorf("followed %d lines, the log has %d", len(got), strings.Count(whole, "\n"))
	}
}
