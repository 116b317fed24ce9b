package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// A batch-mode chunk waits for the Batch API (up to its 24-hour window) and needs a writable
// spool on a read-only root filesystem; an online chunk gets neither.
func TestChunkJobBatchMode(t *testing.T) {
	r := &Reconciler{}
	r.Config.defaults()
	for _, mode := range []string{v1alpha1.EmbeddingOnline, v1alpha1.EmbeddingBatch} {
		obj := &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: "q", Namespace: "ns", UID: "u1"}}
		obj.Spec.Embedding.Mode = mode
		obj.Spec.Chunking.ChunkTimeout = metav1.Duration{Duration: time.Hour}
		obj.Spec.Chunking.RetriesPerChunk = 2
		job, err := r.chunkJob(obj, worker.ChunkArgs{Index: 1, ETag: "e"})
		if err != nil {
			t.Fatal(err)
		}
		pod := job.Spec.Template.Spec
		c := pod.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		want := int64(time.Hour.Seconds())
		if mode == v1alpha1.EmbeddingBatch {
			want = int64((time.Hour + BatchWindow).Seconds())
			if len(pod.Volumes) != 1 || pod.Volumes[0].EmptyDir == nil || len(c.VolumeMounts) != 1 ||
				c.VolumeMounts[0].MountPath != BatchSpoolDir || env["TMPDIR"] != "" {
				t.Fatalf("batch spool: volumes %+v mounts %+v TMPDIR %q", pod.Volumes, c.VolumeMounts, env["TMPDIR"])
			}
		} else if len(pod.Volumes) != 0 || env["TMPDIR"] != "" {
			t.Fatalf("online chunk with a spool: %+v", pod.Volumes)
		}
		if got := *pod.ActiveDeadlineSeconds; got != want {
			t.Errorf("%s: pod deadline %ds, want %ds", mode, got, want)
		}
		if got := *job.Spec.ActiveDeadlineSeconds; got != want*3 {
			t.Errorf("%s: job deadline %ds, want %ds", mode, got, want*3)
		}
		if !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem writable", mode)
		}
	}
}
