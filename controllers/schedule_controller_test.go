package controllers_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// scheduleRig drives the schedule reconciler against the real API server with a clock the test
// moves, so minutes pass without waiting for them. No CsvIngestion controller runs here: the
// test sets the runs' phases itself.
type scheduleRig struct {
	t   *testing.T
	r   *controllers.ScheduleReconciler
	rec *events.FakeRecorder
	now time.Time
	key types.NamespacedName
}

func newScheduleRig(t *testing.T, mutate func(*v1alpha1.CsvIngestionSchedule)) *scheduleRig {
	t.Helper()
	ns := newNamespace(t)
	tpl := newIngestion(ns, "x", nil).Spec
	tpl.TaskID = ""
	tpl.Tracking = nil
	tpl.Source.S3.Key = `exports/239-{{ .Window.Start.Format "2006-01-02T15-04" }}.csv`
	s := &v1alpha1.CsvIngestionSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: "q239", Namespace: ns},
		Spec: v1alpha1.CsvIngestionScheduleSpec{Schedule: "* * * * *",
			Template: v1alpha1.CsvIngestionTemplate{Spec: tpl}},
	}
	if mutate != nil {
		mutate(s)
	}
	if err := cluster.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	// Schedules first, then their runs (no garbage collector runs here).
	t.Cleanup(func() {
		ctx := context.Background()
		if err := cluster.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
			t.Errorf("delete schedule: %v", err)
		}
		if err := cluster.Client.DeleteAllOf(ctx, &v1alpha1.CsvIngestion{}, client.InNamespace(ns),
			client.MatchingLabels{controllers.LabelSchedule: s.Name}); err != nil {
			t.Errorf("delete runs: %v", err)
		}
	})
	rig := &scheduleRig{t: t, rec: events.NewFakeRecorder(100), key: client.ObjectKeyFromObject(s)}
	rig.r = &controllers.ScheduleReconciler{Client: cluster.Client, Recorder: rig.rec, Now: func() time.Time { return rig.now }}
	// The clock starts at the schedule's creation, second precision as the API server stores it.
	rig.now = rig.get().CreationTimestamp.Time
	return rig
}

func (g *scheduleRig) get() *v1alpha1.CsvIngestionSchedule {
	g.t.Helper()
	s := &v1alpha1.CsvIngestionSchedule{}
	if err := cluster.Client.Get(context.Background(), g.key, s); err != nil {
		g.t.Fatal(err)
	}
	return s
}

// nextMinute moves the clock plus minutes ahead, to the given second of that minute, and reconciles.
func (g *scheduleRig) nextMinute(plus int, second int) ctrl.Result {
	g.t.Helper()
	g.now = g.now.Truncate(time.Minute).Add(time.Duration(plus)*time.Minute + time.Duration(second)*time.Second)
	return g.reconcile()
}

func (g *scheduleRig) reconcile() ctrl.Result {
	g.t.Helper()
	res, err := g.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: g.key})
	if err != nil {
		g.t.Fatalf("reconcile at %v: %v", g.now, err)
	}
	return res
}

func (g *scheduleRig) runs() []v1alpha1.CsvIngestion {
	g.t.Helper()
	var l v1alpha1.CsvIngestionList
	if err := cluster.Client.List(context.Background(), &l, client.InNamespace(g.key.Namespace),
		client.MatchingLabels{controllers.LabelSchedule: g.key.Name}); err != nil {
		g.t.Fatal(err)
	}
	out := l.Items[:0]
	for _, o := range l.Items {
		if o.DeletionTimestamp.IsZero() {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (g *scheduleRig) update(mutate func(*v1alpha1.CsvIngestionSchedule)) {
	g.t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := g.get()
		mutate(s)
		return cluster.Client.Update(context.Background(), s)
	}); err != nil {
		g.t.Fatal(err)
	}
}

func (g *scheduleRig) finish(name string, phase v1alpha1.Phase) {
	g.t.Helper()
	o := &v1alpha1.CsvIngestion{}
	if err := cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: g.key.Namespace, Name: name}, o); err != nil {
		g.t.Fatal(err)
	}
	o.Status.Phase = phase
	o.Status.CompletionTime = &metav1.Time{Time: g.now}
	if err := cluster.Client.Status().Update(context.Background(), o); err != nil {
		g.t.Fatal(err)
	}
}

// events drains the recorded events.
func (g *scheduleRig) events() []string {
	var out []string
	for {
		select {
		case e := <-g.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hasEvent(evs []string, reason string, parts ...string) bool {
	for _, e := range evs {
		if strings.Contains(e, " "+reason+" ") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(e, p)
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func runName(s string, t time.Time) string { return fmt.Sprintf("%s-%d", s, t.Unix()/60) }

func TestScheduleForbidReplaceHistoryOutage(t *testing.T) {
	g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) {
		s.Spec.SuccessfulHistoryLimit = ptr.To[int32](1)
		s.Spec.Template.Metadata.Labels = map[string]string{"team": "search"}
	})

	// The first minute: one run, named for it, reading its window's key, owned by the schedule.
	res := g.nextMinute(1, 5)
	m1 := g.now.Truncate(time.Minute)
	rs := g.runs()
	if len(rs) != 1 || rs[0].Name != runName("q239", m1) {
		t.Fatalf("runs %v, want %s", runList(rs), runName("q239", m1))
	}
	if want := "exports/239-" + m1.Add(-24*time.Hour).UTC().Format("2006-01-02T15-04") + ".csv"; rs[0].Spec.Source.S3.Key != want {
		t.Fatalf("key %s, want %s", rs[0].Spec.Source.S3.Key, want)
	}
	if ref := metav1.GetControllerOf(&rs[0]); ref == nil || ref.Name != "q239" {
		t.Fatalf("owner %+v", ref)
	}
	if rs[0].Labels["team"] != "search" || rs[0].Labels[controllers.LabelSchedule] != "q239" {
		t.Fatalf("run labels %v", rs[0].Labels)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 56*time.Second {
		t.Fatalf("requeue after %v, want until the next minute (55s)", res.RequeueAfter)
	}
	st := g.get().Status
	if st.LastScheduleTime == nil || !st.LastScheduleTime.Equal(&metav1.Time{Time: m1}) || st.ActiveCount != 1 ||
		st.NextScheduleTime == nil || !st.NextScheduleTime.Time.Equal(m1.Add(time.Minute)) {
		t.Fatalf("status %+v", st)
	}
	if !hasEvent(g.events(), "RunCreated", rs[0].Name) {
		t.Fatal("no RunCreated event")
	}

	// Reconciling again in the same minute changes nothing.
	g.now = g.now.Add(20 * time.Second)
	g.reconcile()
	if len(g.runs()) != 1 {
		t.Fatalf("runs %v", runList(g.runs()))
	}

	// Forbid: the next minute finds the first run active and skips.
	g.nextMinute(1, 3)
	m2 := g.now.Truncate(time.Minute)
	if rs := g.runs(); len(rs) != 1 {
		t.Fatalf("Forbid started %v", runList(rs))
	}
	st = g.get().Status
	c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRunSkipped)
	if st.SkippedRuns != 1 || st.LastSkippedTime == nil || !st.LastSkippedTime.Time.Equal(m2) || c == nil ||
		c.Status != metav1.ConditionTrue || c.Reason != "ConcurrencyForbid" || !strings.Contains(c.Message, runName("q239", m1)) {
		t.Fatalf("status after a skip %+v", st)
	}
	if !hasEvent(g.events(), "RunSkipped", "Forbid", runName("q239", m1)) {
		t.Fatal("no RunSkipped event")
	}
	// A second pass in that minute does not skip it again.
	g.now = g.now.Add(10 * time.Second)
	g.reconcile()
	if st := g.get().Status; st.SkippedRuns != 1 {
		t.Fatalf("skipped %d times", st.SkippedRuns)
	}

	// The first finishes: the next minute runs, and the RunSkipped condition clears.
	g.finish(runName("q239", m1), v1alpha1.PhaseCompleted)
	g.nextMinute(1, 1)
	m3 := g.now.Truncate(time.Minute)
	rs = g.runs()
	if len(rs) != 2 || rs[1].Name != runName("q239", m3) {
		t.Fatalf("runs %v", runList(rs))
	}
	st = g.get().Status
	if st.LastSuccessfulTime == nil || meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionRunSkipped) {
		t.Fatalf("status %+v", st)
	}

	// Replace: the active run is cancelled and the new one created.
	g.update(func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.ConcurrencyPolicy = v1alpha1.ConcurrencyReplace })
	g.nextMinute(1, 2)
	m4 := g.now.Truncate(time.Minute)
	rs = g.runs()
	if len(rs) != 3 || !rs[1].Spec.Cancel || rs[2].Name != runName("q239", m4) || rs[2].Spec.Cancel {
		t.Fatalf("after Replace: %v (cancel of %s: %v)", runList(rs), rs[1].Name, rs[1].Spec.Cancel)
	}
	if !hasEvent(g.events(), "RunReplaced", runName("q239", m3), runName("q239", m4)) {
		t.Fatal("no RunReplaced event")
	}
	// Until its controller ends it, the cancelled run is still active; once Cancelled, the
	// status lists only the new run.
	g.finish(runName("q239", m3), v1alpha1.PhaseCancelled)
	g.reconcile()
	if st := g.get().Status; st.ActiveCount != 1 || len(st.Active) != 1 || st.Active[0].Name != runName("q239", m4) {
		t.Fatalf("active after Replace %+v", st.Active)
	}

	// History: with limits 1 and 1, finished runs beyond them are deleted, oldest first.
	g.finish(runName("q239", m4), v1alpha1.PhaseCompleted)
	g.reconcile()
	rs = g.runs()
	if len(rs) != 2 || rs[0].Name != runName("q239", m3) || rs[1].Name != runName("q239", m4) {
		t.Fatalf("after pruning %v, want the cancelled %s and the completed %s", runList(rs), runName("q239", m3), runName("q239", m4))
	}
	g.update(func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.FailedHistoryLimit = ptr.To[int32](0) })
	g.reconcile()
	if rs = g.runs(); len(rs) != 1 || rs[0].Name != runName("q239", m4) {
		t.Fatalf("failedHistoryLimit 0 kept %v", runList(rs))
	}
	if !hasEvent(g.events(), "RunDeleted", runName("q239", m1)) {
		t.Fatal("no RunDeleted event")
	}

	// Outage: five minutes pass unseen; one run, for the latest, and an event saying so.
	g.nextMinute(5, 30)
	m9 := g.now.Truncate(time.Minute)
	rs = g.runs()
	if len(rs) != 2 || rs[1].Name != runName("q239", m9) {
		t.Fatalf("after the outage: %v, want one new run %s", runList(rs), runName("q239", m9))
	}
	if !hasEvent(g.events(), "MissedRuns", "5 scheduled times") {
		t.Fatal("no MissedRuns event")
	}

	// Suspend: no run however many minutes pass; resuming starts one, for the latest minute.
	g.finish(runName("q239", m9), v1alpha1.PhaseCompleted)
	g.update(func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.Suspend = true })
	g.nextMinute(1, 0)
	g.nextMinute(1, 0)
	if rs = g.runs(); len(rs) != 1 || rs[0].Name != runName("q239", m9) {
		t.Fatalf("runs while suspended: %v", runList(rs))
	}
	if st = g.get().Status; !strings.Contains(st.Message, "suspended") {
		t.Fatalf("message %q", st.Message)
	}

	// Starting deadline: a resumed schedule whose latest time is older than the deadline starts
	// nothing and says why.
	g.update(func(s *v1alpha1.CsvIngestionSchedule) {
		s.Spec.Suspend = false
		s.Spec.StartingDeadlineSeconds = ptr.To[int64](20)
	})
	g.now = g.now.Add(40 * time.Second)
	g.reconcile()
	st = g.get().Status
	c = meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionRunSkipped)
	if rs = g.runs(); len(rs) != 1 || c == nil || c.Reason != "StartingDeadlineExceeded" {
		t.Fatalf("runs %v, condition %+v", runList(rs), c)
	}
	// Within the deadline it runs.
	g.nextMinute(1, 10)
	if rs = g.runs(); len(rs) != 2 || rs[1].Name != runName("q239", g.now.Truncate(time.Minute)) {
		t.Fatalf("runs %v", runList(rs))
	}
}

func TestScheduleInvalidSpecIsReportedAndRunsNothing(t *testing.T) {
	for _, tc := range []struct {
		name, reason, msg string
		mutate            func(*v1alpha1.CsvIngestionSchedule)
	}{
		{"unknown field in the key template", "InvalidTemplate", "spec.template.spec.source.s3.key: field .Window.Begin is not allowed", func(s *v1alpha1.CsvIngestionSchedule) {
			s.Spec.Template.Spec.Source.S3.Key = "exports/{{ .Window.Begin }}.csv"
		}},
		{"unknown function in a Metabase parameter", "InvalidTemplate", `spec.template.spec.source.metabase.parameters.Start_Date: template: spec.template.spec.source.metabase.parameters.Start_Date:1: function "yesterday" not defined`, func(s *v1alpha1.CsvIngestionSchedule) {
			s.Spec.Template.Spec.Source.S3 = nil
			s.Spec.Template.Spec.Source.Metabase = &v1alpha1.MetabaseSource{URL: "https://metabase.example.com", QuestionID: 239,
				Parameters:      map[string]string{"Start_Date": "{{ yesterday }}"},
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "metabase", Key: "api-key"}, StageTo: v1alpha1.S3Stage{Bucket: "csv-storage"}}
		}},
		// A Metabase parameter is not checked by the CRD's keyword rule (only the key is): the
		// bounded renderer refuses the bomb before running it.
		{"template bomb in a Metabase parameter", "InvalidTemplate", "spec.template.spec.source.metabase.parameters.Start_Date: {{range}} is not allowed", func(s *v1alpha1.CsvIngestionSchedule) {
			s.Spec.Template.Spec.Source.S3 = nil
			s.Spec.Template.Spec.Source.Metabase = &v1alpha1.MetabaseSource{URL: "https://metabase.example.com", QuestionID: 239,
				Parameters:      map[string]string{"Start_Date": `{{range 100000000}}{{printf "%0999999d" 0}}{{end}}`},
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "metabase", Key: "api-key"}, StageTo: v1alpha1.S3Stage{Bucket: "csv-storage"}}
		}},
		{"unknown time zone", "InvalidSchedule", "unknown time zone", func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.TimeZone = "Mars/Olympus" }},
		{"impossible field value", "InvalidSchedule", "invalid schedule", func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.Schedule = "61 * * * *" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newScheduleRig(t, tc.mutate)
			res := g.nextMinute(1, 0)
			if rs := g.runs(); len(rs) != 0 {
				t.Fatalf("runs %v", runList(rs))
			}
			if res.RequeueAfter != 0 {
				t.Fatalf("requeue after %v: an invalid spec waits for an edit", res.RequeueAfter)
			}
			c := meta.FindStatusCondition(g.get().Status.Conditions, v1alpha1.ConditionScheduleReady)
			if c == nil || c.Status != metav1.ConditionFalse || c.Reason != tc.reason || !strings.Contains(c.Message, tc.msg) {
				t.Fatalf("Ready condition %+v", c)
			}
			if !hasEvent(g.events(), tc.reason, tc.msg) {
				t.Fatal("no Warning event")
			}
		})
	}
}

func runList(l []v1alpha1.CsvIngestion) []string {
	out := []string{}
	for _, o := range l {
		out = append(out, o.Name+"="+string(o.Status.Phase))
	}
	return out
}

// TestScheduleRunsInheritSync: a template without spec.sync gives its runs incremental mode
// (nothing deleted); a template with deleteMissing gives each run deleteMissing with the guard
// as defaulted on the schedule (10 %) or set there.
func TestScheduleRunsInheritSync(t *testing.T) {
	for _, tc := range []struct {
		name string
		sync *v1alpha1.SyncSpec
		want v1alpha1.SyncSpec
	}{
		{"no sync", nil, v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, MaxDeletePercent: ptr.To[int32](10)}}, // (the API default; nothing is deleted)
		{"deleteMissing, default guard", &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true},
			v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](10)}},
		{"deleteMissing, guard 25", &v1alpha1.SyncSpec{DeleteMissing: true, MaxDeletePercent: ptr.To[int32](25)},
			v1alpha1.SyncSpec{Mode: v1alpha1.SyncFull, DeleteMissing: true, MaxDeletePercent: ptr.To[int32](25)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.Template.Spec.Sync = tc.sync })
			g.nextMinute(1, 5)
			runs := g.runs()
			if len(runs) != 1 {
				t.Fatalf("%d runs", len(runs))
			}
			got := runs[0].Spec.Sync
			if got == nil || got.Mode != tc.want.Mode || got.DeleteMissing != tc.want.DeleteMissing ||
				(got.MaxDeletePercent == nil) != (tc.want.MaxDeletePercent == nil) ||
				(got.MaxDeletePercent != nil && *got.MaxDeletePercent != *tc.want.MaxDeletePercent) {
				t.Fatalf("run's spec.sync %+v, want %+v", got, tc.want)
			}
		})
	}
}

// History pruning waits for a run's cleanup Job: a run whose planner staged objects stays (over
// the limit) until its cleanup Job finished, then goes; a run that staged nothing goes at once.
func TestScheduleHistoryWaitsForCleanup(t *testing.T) {
	ctx := context.Background()
	g := newScheduleRig(t, func(s *v1alpha1.CsvIngestionSchedule) { s.Spec.SuccessfulHistoryLimit = ptr.To[int32](0) })
	g.nextMinute(1, 5)
	staged := g.runs()[0]
	// Its plan says the planner staged a copy (a gzip source).
	writePlan(t, &staged, 10, 10)
	cm := &corev1.ConfigMap{}
	if err := cluster.Client.Get(ctx, types.NamespacedName{Namespace: staged.Namespace, Name: worker.PlanConfigMapName(staged.Name)}, cm); err != nil {
		t.Fatal(err)
	}
	plan, err := worker.DecodePlan(cm.Data[worker.PlanDataKey])
	if err != nil {
		t.Fatal(err)
	}
	plan.Staged = &worker.StagedObject{Key: "vectordb-staging/x.utf8.csv", ETag: `"s"`}
	if cm.Data[worker.PlanDataKey], err = plan.Encode(); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	g.finish(staged.Name, v1alpha1.PhaseCompleted)
	g.reconcile()
	if rs := g.runs(); len(rs) != 1 || rs[0].Name != staged.Name {
		t.Fatalf("a run whose cleanup has not run was pruned: %v", runList(rs))
	}

	// The cleanup Job runs: still kept. It completes: pruned.
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: worker.CleanupJobName(staged.Name), Namespace: staged.Namespace},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "embedder", Image: "x"}}}}}}
	if err := cluster.Client.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	g.reconcile()
	if rs := g.runs(); len(rs) != 1 {
		t.Fatalf("a run whose cleanup Job runs was pruned: %v", runList(rs))
	}
	now := metav1.Now()
	job.Status.StartTime = &now
	job.Status.CompletionTime = &now
	job.Status.Succeeded = 1
	job.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	if err := cluster.Client.Status().Update(ctx, job); err != nil {
		t.Fatal(err)
	}
	g.reconcile()
	if rs := g.runs(); len(rs) != 0 {
		t.Fatalf("cleaned up, still kept: %v", runList(rs))
	}
	if !hasEvent(g.events(), "RunDeleted", staged.Name) {
		t.Fatal("no RunDeleted event")
	}
}
