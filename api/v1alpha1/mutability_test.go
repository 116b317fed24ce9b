package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The fields documented as fixed at creation are refused on update whether they are changed,
// added or removed, each with a message saying what to do instead; the fields documented as
// mutable still change.
func TestMutability(t *testing.T) {
	ctx := context.Background()
	type mutation func(spec map[string]any)
	noop := func(map[string]any) {}
	cases := []struct {
		name   string
		before mutation // applied to the sample before it is created
		change mutation
		want   string // empty: accepted
	}{
		{"add taskID", func(s map[string]any) { set(s, "taskID", nil) }, func(s map[string]any) { set(s, "taskID", "late-task") },
			"spec.taskID is immutable: it cannot be added, changed or removed after creation"},
		{"change taskID", noop, func(s map[string]any) { set(s, "taskID", "other") }, "spec.taskID is immutable"},
		{"remove taskID", noop, func(s map[string]any) { set(s, "taskID", nil) }, "spec.taskID is immutable"},

		{"set dryRun", noop, func(s map[string]any) { set(s, "dryRun", true) },
			"spec.dryRun is immutable: a dry run cannot become a real run or the reverse"},
		{"unset dryRun", func(s map[string]any) { set(s, "dryRun", true) }, func(s map[string]any) { set(s, "dryRun", false) }, "spec.dryRun is immutable"},
		{"remove dryRun", func(s map[string]any) { set(s, "dryRun", true) }, func(s map[string]any) { set(s, "dryRun", nil) }, "spec.dryRun is immutable"},
		{"spell out dryRun false", noop, func(s map[string]any) { set(s, "dryRun", false) }, ""},

		{"change deadLetter prefix", noop, func(s map[string]any) { set(s, "deadLetter.keyPrefix", "elsewhere/") },
			"spec.deadLetter is immutable: it cannot be added, changed or removed after creation"},
		{"change deadLetter bucket", noop, func(s map[string]any) { set(s, "deadLetter.bucket", "other-bucket") }, "spec.deadLetter is immutable"},
		{"remove deadLetter", noop, func(s map[string]any) { set(s, "deadLetter", nil) }, "spec.deadLetter is immutable"},
		{"add deadLetter", func(s map[string]any) { set(s, "deadLetter", nil) },
			func(s map[string]any) { set(s, "deadLetter", map[string]any{"bucket": "csv-storage"}) }, "spec.deadLetter is immutable"},

		{"add tracking", func(s map[string]any) { set(s, "tracking", nil) },
			func(s map[string]any) { set(s, "tracking.dynamoDB.table", "vectordb-tasks-prod") }, "spec.tracking is immutable"},
		{"remove tracking", noop, func(s map[string]any) { set(s, "tracking", nil) }, "spec.tracking is immutable"},

		{"set worker image", noop, func(s map[string]any) { set(s, "worker.image", "registry.example/embedder:v2") },
			"spec.worker.image is immutable: every chunk of an ingestion runs the same embedder"},
		{"change worker image", func(s map[string]any) { set(s, "worker.image", "registry.example/embedder:v1") },
			func(s map[string]any) { set(s, "worker.image", "registry.example/embedder:v2") }, "spec.worker.image is immutable"},
		{"remove worker with image", func(s map[string]any) { set(s, "worker.image", "registry.example/embedder:v1") },
			func(s map[string]any) { set(s, "worker", nil) }, "spec.worker.image is immutable"},
		{"set worker service account", noop, func(s map[string]any) { set(s, "worker.serviceAccountName", "other-sa") },
			"spec.worker.serviceAccountName is immutable: the worker's identity"},
		{"change worker service account", func(s map[string]any) { set(s, "worker.serviceAccountName", "embedder-a") },
			func(s map[string]any) { set(s, "worker.serviceAccountName", "embedder-b") }, "spec.worker.serviceAccountName is immutable"},
		{"set worker queue", noop, func(s map[string]any) { set(s, "worker.queueName", "team-a") },
			"spec.worker.queueName is immutable: Kueue admits the chunk Jobs of a run through one LocalQueue"},
		{"change worker queue", func(s map[string]any) { set(s, "worker.queueName", "team-a") },
			func(s map[string]any) { set(s, "worker.queueName", "team-b") }, "spec.worker.queueName is immutable"},
		{"remove worker with queue", func(s map[string]any) { set(s, "worker.queueName", "team-a") },
			func(s map[string]any) { set(s, "worker", nil) }, "spec.worker.queueName is immutable"},
		{"suspend next to a queue", func(s map[string]any) { set(s, "worker.queueName", "team-a") },
			func(s map[string]any) { set(s, "suspend", true); set(s, "chunking.parallelism", int64(1)) }, ""},

		// What stays mutable, including around the fixed worker fields.
		{"worker resources next to a fixed image", func(s map[string]any) {
			set(s, "worker.image", "registry.example/embedder:v1")
			set(s, "worker.serviceAccountName", "embedder-a")
		}, func(s map[string]any) {
			set(s, "worker.resources", map[string]any{"requests": map[string]any{"cpu": "250m"}})
			set(s, "worker.nodeSelector", map[string]any{"pool": "batch"})
			set(s, "worker.tolerations", []any{map[string]any{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}})
		}, ""},
		{"add worker without image or account", noop, func(s map[string]any) {
			set(s, "worker.nodeSelector", map[string]any{"pool": "batch"})
		}, ""},
		{"unchanged fixed fields with mutable edits", func(s map[string]any) { set(s, "dryRun", true) }, func(s map[string]any) {
			set(s, "suspend", true)
			set(s, "chunking.parallelism", int64(8))
			set(s, "embedding.requestsPerMinute", int64(600))
		}, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, legacy)
			u.SetName(fmt.Sprintf("mutability-%d", i))
			set(u.Object, "spec.taskID", fmt.Sprintf("mutability-%d", i))
			tc.before(u.Object["spec"].(map[string]any))
			if err := cluster.Client.Create(ctx, u); err != nil {
				t.Fatalf("create: %v", err)
			}
			tc.change(u.Object["spec"].(map[string]any))
			err := cluster.Client.Update(ctx, u)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("update rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("update accepted; want rejection containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err.Error(), tc.want)
			}
			if !strings.Contains(err.Error(), "create a new CsvIngestion") {
				t.Errorf("message does not say what to do instead: %v", err)
			}
		})
	}
}

// A taskID is a DynamoDB key, a REST path segment and part of S3 keys: values that can never
// work there are refused at creation with a message naming the allowed characters; legacy-style
// ids (dates, colons) are accepted.
func TestTaskIDValues(t *testing.T) {
	ctx := context.Background()
	allowed := "spec.taskID may only hold letters, digits and . _ : -"
	cases := []struct {
		taskID string
		want   string // empty: accepted
	}{
		{"q239:2025-01-10", ""},
		{"239.200_300-2025-01-10", ""},
		{"3f2b8c1e-7d4a-4e0b-9a61-2c5d8e9f0a1b", ""},
		{strings.Repeat("a", 128), ""},
		{strings.Repeat("a", 129), "spec.taskID: Too long: may not be more than 128"},
		{"q239/2025-01-10", allowed},
		{"q239 2025", allowed},
		{"q239\t2025", allowed},
		{"q239\n", allowed},
		{"q239\x00", allowed},
		{"-leading-dash", allowed},
		{".hidden", allowed},
		{"tâche", allowed},
		{"a?b", allowed},
		{"a%2Fb", allowed},
		{"", allowed},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.taskID), func(t *testing.T) {
			u := loadSample(t, minimal)
			u.SetName(fmt.Sprintf("taskid-%d", i))
			set(u.Object, "spec.taskID", tc.taskID)
			err := cluster.Client.Create(ctx, u)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want rejection containing %q", tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err.Error(), tc.want)
			}
		})
	}
}
