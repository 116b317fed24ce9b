package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// conds returns the schedule's Ready and RunSkipped conditions.
func (g *scheduleRig) conds() (ready, skipped *metav1.Condition, st v1alpha1.CsvIngestionScheduleStatus) {
	st = g.get().Status
	return meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionScheduleReady),
		meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRunSkipped), st
}

func (g *scheduleRig) wantRejected(skippedRuns int64, msg string) {
	g.t.Helper()
	ready, skipped, st := g.conds()
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha1.ReasonRunRejected || !strings.Contains(ready.Message, msg) {
		g.t.Fatalf("Ready %+v, want False RunRejected with %q", ready, msg)
	}
	if skipped == nil || skipped.Status != metav1.ConditionTrue || skipped.Reason != v1alpha1.ReasonRunRejected {
		g.t.Fatalf("RunSkipped %+v, want True RunRejected", skipped)
	}
	if st.SkippedRuns != skippedRuns {
		g.t.Fatalf("skippedRuns %d, want %d", st.SkippedRuns, skippedRuns)
	}
	if rs := g.runs(); len(rs) != 0 {
		g.t.Fatalf("runs %v despite the refusal", runList(rs))
	}
}

// setQuota writes a count quota on runs and its status, as kube-controller-manager's quota
// controller would (none runs here); the API server's quota admission then enforces it.
func setQuota(t *testing.T, ns string, hard int64) {
	t.Helper()
	ctx := context.Background()
	name := corev1.ResourceName("count/csvingestions.ingestion.vectordb.io")
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "runs", Namespace: ns}}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(q), q); err != nil {
		q.Spec.Hard = corev1.ResourceList{name: *resource.NewQuantity(hard, resource.DecimalSI)}
		if err := cluster.Client.Create(ctx, q); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), q) })
	} else {
		q.Spec.Hard = corev1.ResourceList{name: *resource.NewQuantity(hard, resource.DecimalSI)}
		if err := cluster.Client.Update(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var l v1alpha1.CsvIngestionList
	if err := cluster.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	q.Status.Hard = q.Spec.Hard
	q.Status.Used = corev1.ResourceList{name: *resource.NewQuantity(int64(len(l.Items)), resource.DecimalSI)}
	if err := cluster.Client.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	// The quota admission plugin reads quotas through a cache: wait until it applies this one.
	eventually(t, fmt.Sprintf("quota %d enforced", hard), 30*time.Second, func() (bool, string) {
		err := cluster.Client.Create(ctx, newIngestion(ns, "quota-probe", nil), client.DryRunAll)
		if hard == 0 {
			return err != nil && strings.Contains(err.Error(), "exceeded quota"), fmt.Sprint(err)
		}
		return err == nil, fmt.Sprint(err)
	})
}

// Runs refused by a ResourceQuota: Ready=False and RunSkipped=True (RunRejected) stay through
// later passes (which rewrote Ready=True before), the refused time counts once in skippedRuns
// however often it is retried, the retry backs off, and once the quota is raised the next pass
// creates the run and Ready returns.
func TestScheduleQuotaRefusalSticksUntilARunIsCreated(t *testing.T) {
	g := newScheduleRig(t, nil)
	setQuota(t, g.key.Namespace, 0)

	res := g.nextMinute(1, 2)
	m1 := g.now.Truncate(time.Minute)
	g.wantRejected(1, "exceeded quota")
	if !strings.Contains(g.get().Status.Message, runName("q239", m1)) {
		t.Fatalf("message %q does not name the run", g.get().Status.Message)
	}
	if !hasEvent(g.events(), v1alpha1.ReasonRunRejected, "exceeded quota") {
		t.Fatal("no RunRejected event")
	}
	// Retried soon, not only at the next scheduled time.
	if res.RequeueAfter < 5*time.Second || res.RequeueAfter > 6*time.Second {
		t.Fatalf("retry after %v, want 5s", res.RequeueAfter)
	}

	// Later passes in the same minute (a status write triggers one): still refused, still
	// reported, counted once; the backoff grows with the time since the run was due.
	g.now = g.now.Add(30 * time.Second)
	res = g.reconcile()
	g.wantRejected(1, "exceeded quota")
	if res.RequeueAfter < 25*time.Second || res.RequeueAfter > 31*time.Second {
		t.Fatalf("retry after %v, want the time since it was due (32s) or until the next minute (28s)", res.RequeueAfter)
	}
	if st := g.get().Status; st.LastRejectedTime == nil || !st.LastRejectedTime.Time.Equal(m1) || st.LastScheduleTime != nil {
		t.Fatalf("status %+v", st)
	}

	// The next minute is refused too: a second skipped run, no MissedRuns for the refused one.
	g.nextMinute(1, 1)
	g.wantRejected(2, "exceeded quota")
	if hasEvent(g.events(), "MissedRuns") {
		t.Fatal("a refused time was reported as missed")
	}

	// The quota is raised: the pending time is created on the next pass and Ready returns.
	setQuota(t, g.key.Namespace, 5)
	g.now = g.now.Add(10 * time.Second)
	g.reconcile()
	m2 := g.now.Truncate(time.Minute)
	rs := g.runs()
	if len(rs) != 1 || rs[0].Name != runName("q239", m2) {
		t.Fatalf("runs %v, want %s", runList(rs), runName("q239", m2))
	}
	ready, skipped, st := g.conds()
	if ready == nil || ready.Status != metav1.ConditionTrue || skipped == nil || skipped.Status != metav1.ConditionFalse ||
		st.LastRejectedTime != nil || st.SkippedRuns != 2 || st.LastScheduleTime == nil || !st.LastScheduleTime.Time.Equal(m2) {
		t.Fatalf("after the quota was raised: Ready %+v, RunSkipped %+v, status %+v", ready, skipped, st)
	}
}

// The run's name is taken by an object that is not this schedule's run: reported as
// RunRejected naming it, not taken for our own run.
func TestScheduleForeignObjectWithTheRunsName(t *testing.T) {
	g := newScheduleRig(t, nil)
	at := g.now.Truncate(time.Minute).Add(time.Minute)
	foreign := newIngestion(g.key.Namespace, runName("q239", at), nil)
	if err := cluster.Client.Create(context.Background(), foreign); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), foreign) })
	g.nextMinute(1, 3)
	ready, skipped, st := g.conds()
	if ready == nil || ready.Reason != v1alpha1.ReasonRunRejected || skipped == nil || skipped.Reason != v1alpha1.ReasonRunRejected ||
		!strings.Contains(ready.Message, "already exists and is not a run of this schedule") || st.LastScheduleTime != nil {
		t.Fatalf("Ready %+v, RunSkipped %+v, status %+v", ready, skipped, st)
	}

	// Our own run, which the list did not show (a cache that has not seen it yet; here: no
	// label), is taken for what it is: the run was created.
	next := at.Add(time.Minute)
	sch := g.get()
	ours := newIngestion(g.key.Namespace, runName("q239", next), nil)
	ours.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(sch, v1alpha1.GroupVersion.WithKind("CsvIngestionSchedule"))}
	if err := cluster.Client.Create(context.Background(), ours); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), ours) })
	g.nextMinute(1, 3)
	ready, skipped, st = g.conds()
	if ready == nil || ready.Status != metav1.ConditionTrue || skipped == nil || skipped.Status != metav1.ConditionFalse ||
		st.LastScheduleTime == nil || !st.LastScheduleTime.Time.Equal(next) {
		t.Fatalf("after finding its own run: Ready %+v, RunSkipped %+v, status %+v", ready, skipped, st)
	}
}

// A finished run beyond the history limit cannot be deleted (a policy refuses): an event and
// HistoryPruned=False say so, and the next run is still created.
func TestSchedulePruneFailureIsReportedAndSchedulingGoesOn(t *testing.T) {
	ctx := context.Background()
	g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) {
		s.Spec.SuccessfulHistoryLimit = ptr.To[int32](0)
		s.Spec.ConcurrencyPolicy = v1alpha1.ConcurrencyAllow
	})
	ns := g.key.Namespace
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-deletes-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Delete},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"ingestion.vectordb.io"}, APIVersions: []string{"*"}, Resources: []string{"csvingestions"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{Expression: "false", Message: "runs are kept here by policy"}},
		},
	}
	g.nextMinute(1, 2)
	m1 := g.now.Truncate(time.Minute)
	lift := enforcePolicy(t, ns, policy, func() (bool, string) {
		err := cluster.Client.Delete(ctx, &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: runName("q239", m1), Namespace: ns}}, client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "kept here by policy"), fmt.Sprint(err)
	})

	g.finish(runName("q239", m1), v1alpha1.PhaseCompleted)
	g.nextMinute(1, 2)
	m2 := g.now.Truncate(time.Minute)
	rs := g.runs()
	if len(rs) != 2 || rs[1].Name != runName("q239", m2) {
		t.Fatalf("runs %v, want the kept %s and the new %s", runList(rs), runName("q239", m1), runName("q239", m2))
	}
	st := g.get().Status
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionHistoryPruned)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "DeleteFailed" ||
		!strings.Contains(c.Message, "delete old run "+runName("q239", m1)) || !strings.Contains(c.Message, "kept here by policy") {
		t.Fatalf("HistoryPruned %+v", c)
	}
	if !meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionScheduleReady) {
		t.Fatalf("Ready %+v: a prune failure does not stop scheduling", meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionScheduleReady))
	}
	if !hasEvent(g.events(), "HistoryPruneFailed", "kept here by policy") {
		t.Fatal("no HistoryPruneFailed event")
	}

	// The policy goes: the old run is deleted and the condition clears.
	lift()
	eventually(t, "old run pruned", 30*time.Second, func() (bool, string) {
		g.reconcile()
		rs := g.runs()
		return len(rs) == 1 && rs[0].Name == runName("q239", m2), fmt.Sprint(runList(rs))
	})
	if c := meta.FindStatusCondition(g.get().Status.Conditions, v1alpha1.ConditionHistoryPruned); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("HistoryPruned %+v after the policy went", c)
	}
}

// lookback 0s is not "unset": the window starts at the scheduled time.
func TestScheduleExplicitZeroLookback(t *testing.T) {
	g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) {
		s.Spec.Window.Lookback = &metav1.Duration{}
		s.Spec.Template.Spec.Source.S3.Key = `exports/{{ .Window.StartDate }}/{{ .Window.Start.UTC.Format "15-04" }}.csv`
	})
	g.nextMinute(1, 5)
	at := g.now.Truncate(time.Minute).UTC()
	rs := g.runs()
	if len(rs) != 1 {
		t.Fatalf("runs %v", runList(rs))
	}
	if want := "exports/" + at.Format("2006-01-02") + "/" + at.Format("15-04") + ".csv"; rs[0].Spec.Source.S3.Key != want {
		t.Fatalf("key %s, want %s (the window starts at the run)", rs[0].Spec.Source.S3.Key, want)
	}
	if rs[0].Annotations["ingestion.vectordb.io/window-end"] != at.Add(24*time.Hour).Format(time.RFC3339) {
		t.Fatalf("window end %s", rs[0].Annotations["ingestion.vectordb.io/window-end"])
	}
}

// A refused time that is no longer retried (here: past its starting deadline) is not counted
// twice, and a pass that creates nothing leaves Ready=False RunRejected in place until a run is.
func TestScheduleRefusalOutlivesItsDeadline(t *testing.T) {
	g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.StartingDeadlineSeconds = ptr.To[int64](20) })
	setQuota(t, g.key.Namespace, 0)
	g.nextMinute(1, 2)
	g.wantRejected(1, "exceeded quota")

	g.now = g.now.Add(30 * time.Second) // past the deadline: not retried any more
	g.reconcile()
	ready, skipped, st := g.conds()
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha1.ReasonRunRejected {
		t.Fatalf("Ready %+v: a pass that created nothing reset it", ready)
	}
	if skipped == nil || skipped.Reason != "StartingDeadlineExceeded" || st.SkippedRuns != 1 {
		t.Fatalf("RunSkipped %+v, skippedRuns %d: the refused time was counted again", skipped, st.SkippedRuns)
	}

	setQuota(t, g.key.Namespace, 5)
	g.nextMinute(1, 3)
	if rs := g.runs(); len(rs) != 1 {
		t.Fatalf("runs %v", runList(rs))
	}
	if ready, _, _ := g.conds(); ready == nil || ready.Status != metav1.ConditionTrue {
		t.Fatalf("Ready %+v after a run was created", ready)
	}
}
