package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// A run whose sync step claimed the prefix but did not get its sync Job (the API server refused
// it; a manager restart between the claim and the Job is the same) and then holds for a newer
// run must not keep holding that run through its claim: the newer run would wait for the claim
// and the older one for the newer run, for ever. The claim goes when the step holds; the newer
// run writes, and the older one ends Superseded without deleting.
func TestWritersClaimReleasedWhenSyncStepHolds(t *testing.T) {
	ns := newNamespace(t)
	denyJobs(t, ns, worker.RoleSync)
	startManager(t, nil, ns)
	older := create(t, newIngestion(ns, "run-1", deleteMissing))
	waitPhase(t, older, v1alpha1.PhasePlanning)
	writePlan(t, older, 1000, 1000)
	finishChunks(t, older, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	eventually(t, "older claimed and was refused its sync Job", 30*time.Second, func() (bool, string) {
		c := missingDeleted(get(t, older))
		return c != nil && c.Reason == controllers.ReasonDeleteBlocked, mustJSON(c)
	})

	newer := create(t, newIngestion(ns, "run-2", nil))
	waitPhase(t, newer, v1alpha1.PhasePlanning)
	writePlan(t, newer, 1000, 1000)
	eventually(t, "older holds for the newer run", 30*time.Second, func() (bool, string) {
		c := missingDeleted(get(t, older))
		return c != nil && c.Reason == controllers.ReasonSyncWaiting && strings.Contains(c.Message, ns+"/run-2"), mustJSON(c)
	})
	// Bounded: the newer run starts writing once the older one holds (it never would while the
	// older run's claim stood).
	eventually(t, "newer starts its chunk", 30*time.Second, func() (bool, string) {
		var j batchv1.Job
		err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: worker.ChunkJobName(newer.Name, 0)}, &j)
		return err == nil, get(t, newer).Status.Message + " / " + get(t, older).Status.Message
	})
	finishChunks(t, newer, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	waitPhase(t, newer, v1alpha1.PhaseCompleted)
	final := waitPhase(t, older, v1alpha1.PhaseCompleted)
	if c := missingDeleted(final); c == nil || c.Reason != controllers.ReasonSuperseded || !strings.Contains(c.Message, ns+"/run-2") {
		t.Fatalf("older run after the newer one wrote: %s", mustJSON(c))
	}
	if jobs := listJobs(t, older, worker.RoleSync); len(jobs) != 0 {
		t.Fatalf("the older run got a sync Job")
	}
}

// A writer records itself only while a run that deletes under its prefix is running; a
// damaged writers record (hand-edited) then stops it from writing, and says so in the Blocked
// condition with an event, not only in the manager's log; once the record is deleted the run
// goes on.
func TestWritersDamagedRecordIsBlocked(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	startManager(t, nil, ns)
	records := func() []coordinationv1.Lease {
		t.Helper()
		var leases coordinationv1.LeaseList
		if err := cluster.Client.List(ctx, &leases, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/component": "writers-record"}); err != nil {
			t.Fatal(err)
		}
		return leases.Items
	}
	deleter := create(t, newIngestion(ns, "run-1", deleteMissing))
	waitPhase(t, deleter, v1alpha1.PhasePlanning)
	writePlan(t, deleter, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(deleter.Name, 0))
	// Recording comes before the first chunk Job: with no other run, none was made.
	if l := records(); len(l) != 0 {
		t.Fatalf("a run alone under its prefix left a writers record: %+v", l[0].Annotations)
	}
	first := create(t, newIngestion(ns, "run-2", nil))
	waitPhase(t, first, v1alpha1.PhasePlanning)
	writePlan(t, first, 1000, 1000)
	waitJob(t, ns, worker.ChunkJobName(first.Name, 0))
	l := records()
	if len(l) != 1 || !strings.Contains(l[0].Annotations["ingestion.vectordb.io/writers"], `"name":"run-2"`) {
		t.Fatalf("a writer beside a running deleter is not recorded: %d records", len(l))
	}
	lease := l[0]
	lease.Annotations["ingestion.vectordb.io/writers"] = `{"writers":[{"uid":`
	if err := cluster.Client.Update(ctx, &lease); err != nil {
		t.Fatal(err)
	}
	second := create(t, newIngestion(ns, "run-3", nil))
	waitPhase(t, second, v1alpha1.PhasePlanning)
	writePlan(t, second, 1000, 1000)
	eventually(t, "Blocked names the damaged record", 30*time.Second, func() (bool, string) {
		c := meta.FindStatusCondition(get(t, second).Status.Conditions, v1alpha1.ConditionBlocked)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "not valid JSON") && strings.Contains(c.Message, lease.Name), mustJSON(c)
	})
	wantEvents(t, second, "Blocked")
	if jobs := listJobs(t, second, worker.RoleChunk); len(jobs) != 0 {
		t.Fatalf("a run started %d chunks without being recorded", len(jobs))
	}
	if err := cluster.Client.Delete(ctx, &lease); err != nil {
		t.Fatal(err)
	}
	waitJob(t, ns, worker.ChunkJobName(second.Name, 0))
	for _, o := range []*v1alpha1.CsvIngestion{deleter, first, second} {
		update(t, o, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
		waitPhase(t, o, v1alpha1.PhaseCancelled)
	}
	for _, l := range records() {
		_ = cluster.Client.Delete(ctx, &l)
	}
}

// The API server refusing the writers record's write (RBAC, a policy) stops a run's sync step
// before its Job: Blocked with the server's message and an event, MissingDeleted DeleteBlocked,
// nothing deleted; once the record may be written the step claims the prefix and runs.
func TestWritersRecordRefusedBlocksTheSyncStep(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-writers-record-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"coordination.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"leases"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: `!object.metadata.name.startsWith('vectordb-writers-')`,
				Message:    "writers records are not allowed here by policy",
			}},
		},
	}
	lift := enforcePolicy(t, ns, policy, func() (bool, string) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "vectordb-writers-probe", Namespace: ns}}
		err := cluster.Client.Create(ctx, l, client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "not allowed here by policy"), fmt.Sprint(err)
	})

	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "run-1", deleteMissing))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 1000, 1000)
	finishChunks(t, obj, 0, 1, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" })
	eventually(t, "the sync step is blocked", 30*time.Second, func() (bool, string) {
		cur := get(t, obj)
		b := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionBlocked)
		c := missingDeleted(cur)
		return b != nil && b.Status == metav1.ConditionTrue && strings.Contains(b.Message, "not allowed here by policy") &&
			c != nil && c.Reason == controllers.ReasonDeleteBlocked, mustJSON(cur.Status.Conditions)
	})
	wantEvents(t, obj, "Blocked")
	if jobs := listJobs(t, obj, worker.RoleSync); len(jobs) != 0 {
		t.Fatal("a sync Job was created without the claim on the prefix")
	}
	lift()
	job := waitJob(t, ns, worker.SyncJobName(obj.Name))
	finishJob(t, job, syncResult(1000, 0, 0), 0, "")
	if c := missingDeleted(waitPhase(t, obj, v1alpha1.PhaseCompleted)); c == nil || c.Reason != controllers.ReasonDeleted {
		t.Fatalf("after the record could be written: %s", mustJSON(c))
	}
	var leases coordinationv1.LeaseList
	if err := cluster.Client.List(ctx, &leases, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/component": "writers-record"}); err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Items {
		_ = cluster.Client.Delete(ctx, &l)
	}
}
