package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// A chunk pod's log is read as `kubectl logs` and `kubectl logs -f` read it on a cluster:
// client-go's log API through kube-apiserver, which proxies to the node (the pod runner's kubelet
// log endpoint). The same works against `make demo DEMO_ARGS=--keep`, which runs this stack.
func TestChunkPodLogs(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(st.Cluster.Config)
	_, key := scenario(t, "logs", csvgen.Options{Rows: 3000, Seed: 7})
	// Slow embeddings keep a chunk running for seconds, long enough to follow it live.
	st.OpenAI.SetLatency(300 * time.Millisecond)
	defer st.OpenAI.SetLatency(0)
	obj := st.LegacyIngestion("logs", "q239", key)
	obj.Spec.Embedding.MaxInputsPerRequest = 50
	apply(t, obj)

	var running string
	waitFor(t, "a running chunk pod", 2*time.Minute, func() (bool, string) {
		for _, name := range st.Runner.Running() {
			if pod, ok := strings.CutPrefix(name, "logs/q239-chunk-"); ok {
				running = "q239-chunk-" + pod
				return true, ""
			}
		}
		return false, fmt.Sprint(st.Runner.Running())
	})

	// kubectl logs -f: the stream stays open while the embedder works and ends when it exits,
	// with its last line (the chunk's summary) in it.
	rc, err := cs.CoreV1().Pods("logs").GetLogs(running, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatalf("kubectl logs -f %s: %v", running, err)
	}
	followed, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("reading the followed log of %s: %v", running, err)
	}
	if !strings.Contains(string(followed), "chunk finished") {
		t.Errorf("followed log of %s lacks the chunk's summary:\n%s", running, followed)
	}
	if stillRunning := strings.Contains(strings.Join(st.Runner.Running(), " "), "logs/"+running); stillRunning {
		t.Errorf("the followed log of %s ended while its process still runs", running)
	}

	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted {
		t.Fatalf("status %+v", final.Status)
	}
	// kubectl logs of every finished chunk pod (kept until the Jobs' TTL) gives what the process
	// wrote, as the runner recorded it.
	chunkPods := 0
	for _, p := range pods(t, obj) {
		if p.Labels[worker.LabelRole] != worker.RoleChunk {
			continue
		}
		chunkPods++
		got, err := podLog(ctx, cs, p.Name, &corev1.PodLogOptions{})
		if err != nil {
			t.Fatalf("kubectl logs %s: %v", p.Name, err)
		}
		if want := st.Runner.Logs("logs", p.Name); got != want || !strings.Contains(got, "chunk finished") {
			t.Errorf("kubectl logs %s:\n%s\nwant the process's output:\n%s", p.Name, got, want)
		}
		lines := strings.SplitAfter(strings.TrimSuffix(got, "\n"), "\n")
		last, err := podLog(ctx, cs, p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](1)})
		if want := lines[len(lines)-1] + "\n"; err != nil || last != want {
			t.Errorf("kubectl logs --tail=1 %s: %q, %v; want %q", p.Name, last, err, want)
		}
	}
	if chunkPods == 0 {
		t.Fatal("no chunk pods to read")
	}
}

func podLog(ctx context.Context, cs kubernetes.Interface, pod string, opts *corev1.PodLogOptions) (string, error) {
	rc, err := cs.CoreV1().Pods("logs").GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}
