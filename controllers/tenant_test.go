package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/tracking"
)

// waitTrackingRefused waits for TrackingDegraded=True with the given reason and returns its message.
func waitTrackingRefused(t *testing.T, obj *v1alpha1.CsvIngestion, reason string) string {
	t.Helper()
	var msg string
	eventually(t, "TrackingDegraded "+reason, 60*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionTrackingDegraded)
		if c == nil {
			return false, "no TrackingDegraded condition"
		}
		msg = c.Message
		return c.Status == "True" && c.Reason == reason, fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	})
	return msg
}

// Tenants share the operator and, possibly, a task table. One tenant's ingestion must not change
// another's task item, and specs reach only the tables and endpoints the operator allows; every
// refusal is a condition the author can read.
func TestTenantGuardrails(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	startManagerWith(t, nil, func(o *manager.Options) {
		o.TrackingPolicy = tracking.Policy{
			AllowedEndpoints: []string{dyn.Endpoint},
			TablePrefixes:    []string{"vectordb-tasks-"},
		}
	}, nsA, nsB)

	t.Run("another namespace's task id", func(t *testing.T) {
		shared := fmt.Sprintf("shared-%d", time.Now().UnixNano())
		a := create(t, newIngestion(nsA, "tenant-a-run", func(o *v1alpha1.CsvIngestion) { o.Spec.TaskID = shared }))
		var before string
		eventually(t, "A's task item", 30*time.Second, func() (bool, string) {
			item, err := taskItemOrNil(a.Spec.TaskID)
			if err != nil || item == nil {
				return false, fmt.Sprint(err)
			}
			before = fmt.Sprintf("%+v", *item)
			return item.K8s.UID == string(get(t, a).UID), before
		})
		b := create(t, newIngestion(nsB, "intruder", func(o *v1alpha1.CsvIngestion) { o.Spec.TaskID = shared }))
		msg := waitTrackingRefused(t, b, tracking.ReasonOwnedElsewhere)
		if !strings.Contains(msg, "another CsvIngestion") || strings.Contains(msg, nsA) || strings.Contains(msg, "tenant-a-run") {
			t.Errorf("message should say the item is another ingestion's without naming it: %q", msg)
		}
		wantEvents(t, b, "TrackingDegraded")
		// B goes on being reconciled (its status writes retry the mirror), and A's item stays A's.
		item, _ := taskItem(t, a.Spec.TaskID)
		if item.K8s.UID != string(get(t, a).UID) || item.K8s.Namespace != nsA {
			t.Fatalf("A's item changed hands: %+v", item.K8s)
		}
		if cur := get(t, a); meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionTrackingDegraded) {
			t.Errorf("A's tracking is degraded: %+v", cur.Status.Conditions)
		}
		// Deleting B, still running, must not cancel A's task.
		if err := cluster.Client.Delete(context.Background(), get(t, b)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "B gone", 30*time.Second, func() (bool, string) {
			err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(b), &v1alpha1.CsvIngestion{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		if item, _ := taskItem(t, a.Spec.TaskID); item.Status == "cancelled" || item.K8s.UID != string(a.UID) {
			t.Fatalf("deleting B changed A's item: %+v", item)
		}
	})

	t.Run("endpoint not allowed", func(t *testing.T) {
		obj := create(t, newIngestion(nsA, "ssrf", func(o *v1alpha1.CsvIngestion) {
			o.Spec.Tracking.DynamoDB.Endpoint = "http://169.254.169.254/latest"
		}))
		msg := waitTrackingRefused(t, obj, tracking.ReasonEndpointNotAllowed)
		if !strings.Contains(msg, "169.254.169.254") || !strings.Contains(msg, "--tracking-allowed-endpoints") {
			t.Errorf("message: %q", msg)
		}
		if item, err := taskItemOrNil(obj.Spec.TaskID); err != nil || item != nil {
			t.Errorf("a refused endpoint's task was written somewhere: %+v, %v", item, err)
		}
		if get(t, obj).Status.Phase != v1alpha1.PhasePlanning {
			t.Errorf("the ingestion must go on without its task table")
		}
	})

	t.Run("allowed endpoint", func(t *testing.T) {
		obj := create(t, newIngestion(nsA, "listed", func(o *v1alpha1.CsvIngestion) {
			o.Spec.Tracking.DynamoDB.Endpoint = dyn.Endpoint + "/"
		}))
		eventually(t, "task item", 30*time.Second, func() (bool, string) {
			item, err := taskItemOrNil(obj.Spec.TaskID)
			return err == nil && item != nil, fmt.Sprint(err)
		})
	})

	t.Run("table not allowed", func(t *testing.T) {
		obj := create(t, newIngestion(nsB, "othertable", func(o *v1alpha1.CsvIngestion) {
			o.Spec.Tracking.DynamoDB.Table = "payroll"
		}))
		msg := waitTrackingRefused(t, obj, tracking.ReasonTableNotAllowed)
		if !strings.Contains(msg, `"payroll"`) || !strings.Contains(msg, "vectordb-tasks-") {
			t.Errorf("message: %q", msg)
		}
	})
}

// taskItemOrNil reads a task item; nil without error when there is none.
func taskItemOrNil(taskID string) (*tasktable.Task, error) {
	task, _, err := tasktable.NewFromAPI(dyn.Client(), taskTable).Get(context.Background(), taskID)
	if errors.Is(err, tasktable.ErrNotFound) {
		return nil, nil
	}
	return task, err
}
