// Command demo runs the whole product on this machine (test/stack: a real kube-apiserver, etcd and
// kube-controller-manager, the local pod runner, the manager, MinIO, dynalite and the OpenAI and
// Pinecone fakes), ingests a generated 100,000-row legacy CSV with the legacy sample CsvIngestion,
// shows progress and prints a summary. `make demo` runs it.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/term"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

func main() {
	rows := flag.Int("rows", 100000, "rows in the generated CSV")
	keep := flag.Bool("keep", false, "leave the stack running after the ingestion ends (Ctrl-C stops it)")
	dims := flag.Int("dimensions", 1536, "embedding and index dimensions")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *rows, *dims, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(ctx context.Context, rows, dims int, keep bool) error {
	start := time.Now()
	say("starting kube-apiserver, etcd, kube-controller-manager, the pod runner, the manager, MinIO, dynalite and the fakes")
	st, err := stack.Start(ctx, stack.Options{Dimensions: dims, Log: logr.Discard(),
		// The fake OpenAI counts usage roughly; the embedder itself counts exactly.
		FakeTokenCounter: func(s string) int { return len(s)/8 + 1 }})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping everything")
		st.Stop()
	}()
	kubeconfig := filepath.Join(harness.RepoRoot(), "bin", "demo.kubeconfig")
	if b, err := os.ReadFile(st.Cluster.Kubeconfig); err == nil {
		_ = os.WriteFile(kubeconfig, b, 0o600)
	}
	say("stack up in %s; while it runs:  KUBECONFIG=%s kubectl get csvi -w", time.Since(start).Round(time.Second), kubeconfig)
	say("health: curl -s http://%s/api/v1/health   metrics: curl -s http://%s/metrics", st.HTTPAddr, st.MetricsAddr)

	say("generating a %d-row legacy CSV (id, formatted_text with HTML and dates, record_type, 5 more columns)", rows)
	var buf bytes.Buffer
	stats, err := csvgen.Write(&buf, csvgen.Options{Rows: rows, Seed: 239})
	if err != nil {
		return err
	}
	key := "exports/239-200-300.csv"
	if err := st.Upload(ctx, key, buf.Bytes()); err != nil {
		return err
	}
	say("uploaded s3://%s/%s (%.1f MB) to MinIO", stack.Bucket, key, float64(stats.Bytes)/1e6)

	obj, err := sample(st, key)
	if err != nil {
		return err
	}
	if err := st.PrepareNamespace(ctx, obj.Namespace); err != nil {
		return err
	}
	if err := st.Cluster.Client.Create(ctx, obj); err != nil {
		return fmt.Errorf("apply the sample: %w", err)
	}
	say("applied config/samples/ingestion_v1alpha1_csvingestion_legacy.yaml as %s/%s (endpoints pointed at the local stack)", obj.Namespace, obj.Name)

	final, err := watch(ctx, st.Cluster.Client, obj)
	if err != nil {
		return err
	}
	vectors := 0
	idx := st.Pinecone.Index(stack.Index)
	for _, ns := range idx.Namespaces() {
		vectors += len(idx.Vectors(ns))
	}
	taskStatus := "?"
	if task, _, err := st.Tasks.Get(ctx, final.Status.TaskID); err == nil {
		taskStatus = task.Status
	}
	elapsed := final.Status.CompletionTime.Sub(final.Status.StartTime.Time)
	fmt.Println()
	fmt.Println("Summary")
	fmt.Printf("  phase            %s\n", final.Status.Phase)
	fmt.Printf("  rows             %d processed, %d failed, of %d\n", final.Status.Records.Processed, final.Status.Records.Failed, final.Status.Records.Total)
	fmt.Printf("  vectors in index %d (namespace v2 of %s)\n", vectors, stack.Index)
	fmt.Printf("  chunks           %s (%d failed)\n", final.Status.Progress, final.Status.Chunks.Failed)
	fmt.Printf("  ingestion time   %s (%.0f rows/s)\n", elapsed.Round(time.Second), float64(final.Status.Records.Processed)/elapsed.Seconds())
	fmt.Printf("  task item        %s (DynamoDB table %s)\n", taskStatus, stack.TaskTable)
	fmt.Printf("  total demo time  %s\n", time.Since(start).Round(time.Second))
	if keep {
		say("--keep: the stack stays up; KUBECONFIG=%s; Ctrl-C to stop", kubeconfig)
		say("a chunk's log (until its Job's TTL):  KUBECONFIG=%s kubectl -n %s logs job/%s", kubeconfig, final.Namespace, worker.ChunkJobName(final.Name, 0))
		<-ctx.Done()
	}
	if final.Status.Phase != v1alpha1.PhaseCompleted {
		return fmt.Errorf("ingestion ended %s: %s", final.Status.Phase, final.Status.Message)
	}
	return nil
}

// sample reads the legacy sample and points it at the local stack.
func sample(st *stack.Stack, key string) (*v1alpha1.CsvIngestion, error) {
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "config/samples/ingestion_v1alpha1_csvingestion_legacy.yaml"))
	if err != nil {
		return nil, err
	}
	obj := &v1alpha1.CsvIngestion{}
	if err := yaml.Unmarshal(b, obj); err != nil {
		return nil, fmt.Errorf("parse the legacy sample: %w", err)
	}
	local := st.LegacyIngestion("default", obj.Name, key)
	obj.Namespace = "default"
	obj.Spec.Source.S3.Key = key
	obj.Spec.Source.S3.Endpoint = local.Spec.Source.S3.Endpoint
	obj.Spec.Source.S3.CredentialsSecretRef = local.Spec.Source.S3.CredentialsSecretRef
	obj.Spec.Embedding.BaseURL = local.Spec.Embedding.BaseURL
	// The sample's model, text-embedding-ada-002, gives 1,536 dimensions and takes no `dimensions`
	// parameter; an index of another size needs a text-embedding-3 model shortened to it.
	if local.Spec.Embedding.Dimensions != 1536 {
		obj.Spec.Embedding.Model = local.Spec.Embedding.Model
		obj.Spec.Embedding.Dimensions = local.Spec.Embedding.Dimensions
	}
	obj.Spec.Target.Pinecone.Index = stack.Index
	obj.Spec.Tracking.DynamoDB.Endpoint = local.Spec.Tracking.DynamoDB.Endpoint
	// The sample's budgets are OpenAI's; the fake has none, so the demo shows the pipeline's speed.
	obj.Spec.Embedding.RequestsPerMinute = 100000
	obj.Spec.Embedding.TokensPerMinute = 1000000000
	return obj, nil
}

func watch(ctx context.Context, c client.Client, obj *v1alpha1.CsvIngestion) (*v1alpha1.CsvIngestion, error) {
	tty := term.IsTerminal(int(os.Stdout.Fd()))
	var last string
	started := time.Now()
	for {
		cur := &v1alpha1.CsvIngestion{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return nil, err
		}
		s := cur.Status
		done := s.Records.Processed + s.Records.Failed
		line := fmt.Sprintf("%-17s chunks %-9s rows %d/%d", s.Phase, s.Progress, done, s.Records.Total)
		if s.Records.Total > 0 && done > 0 {
			el := time.Since(started).Seconds()
			rate := float64(done) / el
			eta := time.Duration(float64(s.Records.Total-done)/rate) * time.Second
			line += fmt.Sprintf("  %s  %.0f rows/s  ETA %s", bar(float64(done)/float64(s.Records.Total), 30), rate, eta.Round(time.Second))
		}
		// Plain output (not a terminal) gets a line when the phase or chunk count moves.
		key := string(s.Phase) + s.Progress
		if tty {
			fmt.Printf("\r%-110s", line)
		} else if key != last {
			fmt.Println(line)
		}
		last = key
		if s.Phase.Terminal() && s.CompletionTime != nil {
			if tty {
				fmt.Println()
			}
			return cur, nil
		}
		select {
		case <-ctx.Done():
			fmt.Println()
			return nil, fmt.Errorf("interrupted")
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func bar(frac float64, width int) string {
	n := int(frac * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
