package controllers_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Once an ingestion whose plan staged objects has ended, the controller starts `embedder cleanup`
// as a Job (the worker holds the S3 identity); one without staged objects gets none.
func TestCleanupJobForStagedObjects(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	for _, staged := range []bool{true, false} {
		name := "plain"
		if staged {
			name = "staged"
		}
		t.Run(name, func(t *testing.T) {
			obj := create(t, newIngestion(ns, name, nil))
			waitPhase(t, obj, v1alpha1.PhasePlanning)
			writePlan(t, obj, 2000, 1000)
			if staged {
				key := types.NamespacedName{Namespace: ns, Name: worker.PlanConfigMapName(obj.Name)}
				if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					cm := &corev1.ConfigMap{}
					if err := cluster.Client.Get(context.Background(), key, cm); err != nil {
						return err
					}
					p, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
					if err != nil {
						return err
					}
					p.Staged = &worker.StagedObject{Key: "vectordb-staging/t.utf8.csv", ETag: `"s"`}
					p.Duplicates = &worker.StagedObject{Key: "vectordb-staging/t.duplicates", ETag: `"d"`}
					data, err := p.Encode()
					if err != nil {
						return err
					}
					cm.Data[worker.PlanDataKey] = data
					return cluster.Client.Update(context.Background(), cm)
				}); err != nil {
					t.Fatal(err)
				}
			}
			final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }, nil)
			if final.Status.Phase != v1alpha1.PhaseCompleted {
				t.Fatalf("phase %s", final.Status.Phase)
			}
			if !staged {
				// The terminal status is written in the same pass that would create the Job.
				if jobs := listJobs(t, obj, worker.RoleCleanup); len(jobs) != 0 {
					t.Fatalf("%d cleanup jobs for a plan that staged nothing", len(jobs))
				}
				return
			}
			eventually(t, "a cleanup job", 30*time.Second, func() (bool, string) {
				return len(listJobs(t, obj, worker.RoleCleanup)) == 1, "none yet"
			})
			j := listJobs(t, obj, worker.RoleCleanup)[0]
			checkCommonJob(t, obj, &j, worker.RoleCleanup)
			c := j.Spec.Template.Spec.Containers[0]
			if j.Name != worker.CleanupJobName(obj.Name) || !slices.Equal(c.Args, []string{"cleanup"}) ||
				j.Spec.Template.Spec.AutomountServiceAccountToken == nil || !*j.Spec.Template.Spec.AutomountServiceAccountToken {
				t.Fatalf("cleanup job %s args %q, automount %v", j.Name, c.Args, j.Spec.Template.Spec.AutomountServiceAccountToken)
			}
		})
	}
}
