package e2e

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// The schedule scenarios run on real minutes ("* * * * *"): the manager is a real binary with
// the real clock. The four that need the manager up run in parallel, so the suite waits for the
// minutes once; the outage scenario stops the manager and runs after them.

// keyLayout is the window start as it appears in the scenarios' S3 keys.
const keyLayout = "2006-01-02T15-04"

func scheduleFor(t *testing.T, ns, name, keyTemplate string) *v1alpha1.CsvIngestionSchedule {
	t.Helper()
	ing := st.LegacyIngestion(ns, "unused", keyTemplate)
	ing.Spec.Embedding.RequestsPerMinute = 100000
	ing.Spec.Embedding.TokensPerMinute = 1000000000
	ing.Spec.Tracking = nil // the task table is covered elsewhere; schedules are about runs
	return &v1alpha1.CsvIngestionSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.CsvIngestionScheduleSpec{
			Schedule: "* * * * *",
			Window:   v1alpha1.WindowSpec{Duration: &metav1.Duration{Duration: time.Hour}},
			Template: v1alpha1.CsvIngestionTemplate{
				Metadata: v1alpha1.TemplateMetadata{Labels: map[string]string{"team": "search"}},
				Spec:     ing.Spec,
			},
		},
	}
}

func createSchedule(t *testing.T, s *v1alpha1.CsvIngestionSchedule) {
	t.Helper()
	if err := st.Cluster.Client.Create(context.Background(), s); err != nil {
		t.Fatalf("create schedule: %v", err)
	}
}

func getSchedule(t *testing.T, s *v1alpha1.CsvIngestionSchedule) *v1alpha1.CsvIngestionSchedule {
	t.Helper()
	out := &v1alpha1.CsvIngestionSchedule{}
	if err := st.Cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(s), out); err != nil {
		t.Fatalf("get schedule: %v", err)
	}
	return out
}

func updateSchedule(t *testing.T, s *v1alpha1.CsvIngestionSchedule, mutate func(*v1alpha1.CsvIngestionSchedule)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := getSchedule(t, s)
		mutate(cur)
		return st.Cluster.Client.Update(context.Background(), cur)
	}); err != nil {
		t.Fatal(err)
	}
}

// runsOf lists the schedule's CsvIngestions, oldest scheduled time first.
func runsOf(t *testing.T, s *v1alpha1.CsvIngestionSchedule) []v1alpha1.CsvIngestion {
	t.Helper()
	var l v1alpha1.CsvIngestionList
	if err := st.Cluster.Client.List(context.Background(), &l, client.InNamespace(s.Namespace),
		client.MatchingLabels{controllers.LabelSchedule: s.Name}); err != nil {
		t.Fatal(err)
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Name < l.Items[j].Name })
	return l.Items
}

func scheduleEvents(t *testing.T, s *v1alpha1.CsvIngestionSchedule) map[string][]string {
	t.Helper()
	var evs eventsv1.EventList
	if err := st.Cluster.Client.List(context.Background(), &evs, client.InNamespace(s.Namespace)); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range evs.Items {
		if e.Regarding.Kind == "CsvIngestionSchedule" && e.Regarding.Name == s.Name {
			out[e.Reason] = append(out[e.Reason], e.Note)
		}
	}
	return out
}

func runNames(l []v1alpha1.CsvIngestion) []string {
	out := []string{}
	for _, o := range l {
		out = append(out, o.Name+"="+string(o.Status.Phase))
	}
	return out
}

// checkRun checks that a run's name and S3 key follow from its scheduled time.
func checkRun(t *testing.T, s *v1alpha1.CsvIngestionSchedule, o *v1alpha1.CsvIngestion, prefix string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, o.Annotations[controllers.AnnotationScheduledTime])
	if err != nil {
		t.Fatalf("run %s: scheduled time %q: %v", o.Name, o.Annotations[controllers.AnnotationScheduledTime], err)
	}
	if at.Second() != 0 {
		t.Fatalf("run %s scheduled at %v, not on a minute", o.Name, at)
	}
	if want := s.Name + "-" + strconv.FormatInt(at.Unix()/60, 10); o.Name != want {
		t.Fatalf("run named %s, want %s", o.Name, want)
	}
	if want := prefix + at.Add(-time.Hour).UTC().Format(keyLayout) + ".csv"; o.Spec.Source.S3.Key != want {
		t.Fatalf("run %s reads %s, want %s", o.Name, o.Spec.Source.S3.Key, want)
	}
	ref := metav1.GetControllerOf(o)
	if ref == nil || ref.Kind != "CsvIngestionSchedule" || ref.Name != s.Name {
		t.Fatalf("run %s owner %+v", o.Name, ref)
	}
	if o.Labels["team"] != "search" {
		t.Fatalf("run %s labels %v", o.Name, o.Labels)
	}
	return at
}

// uploadWindows uploads one small file for each of the next minutes' windows.
func uploadWindows(t *testing.T, ns, prefix string, minutes int) {
	t.Helper()
	if err := st.PrepareNamespace(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := csvgen.Write(&buf, csvgen.Options{Rows: 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Minute)
	for i := -1; i <= minutes; i++ {
		at := start.Add(time.Duration(i) * time.Minute)
		if err := st.Upload(context.Background(), prefix+at.Add(-time.Hour).Format(keyLayout)+".csv", buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSchedule(t *testing.T) {
	skipShort(t)
	t.Run("running", func(t *testing.T) {
		t.Run("WindowedRunsAndHistory", testScheduleWindowsAndHistory)
		t.Run("ForbidSkips", testScheduleForbid)
		t.Run("ReplaceCancels", testScheduleReplace)
		t.Run("SuspendStopsRuns", testScheduleSuspend)
	})
	t.Run("OutageCatchesUpOnce", testScheduleOutage)
}

// Runs every minute: each run is named after its scheduled minute and reads the file of its
// window; completed runs beyond successfulHistoryLimit are deleted.
func testScheduleWindowsAndHistory(t *testing.T) {
	t.Parallel()
	ns, prefix := "sched-history", "exports/sched-history/"
	uploadWindows(t, ns, prefix, 8)
	s := scheduleFor(t, ns, "q239-minutely", prefix+`{{ .Window.Start.UTC.Format "`+keyLayout+`" }}.csv`)
	s.Spec.SuccessfulHistoryLimit = ptr.To[int32](2)
	// Allow: a run slower than a minute on a loaded machine must not turn the next into a skip.
	s.Spec.ConcurrencyPolicy = v1alpha1.ConcurrencyAllow
	createSchedule(t, s)

	seen := map[string]bool{}
	waitFor(t, "three runs created, history at 2 completed", 6*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		completed := 0
		for i := range rs {
			checkRun(t, s, &rs[i], prefix)
			seen[rs[i].Name] = true
			switch rs[i].Status.Phase {
			case v1alpha1.PhaseCompleted:
				completed++
			case v1alpha1.PhaseFailed, v1alpha1.PhasePartiallyCompleted, v1alpha1.PhaseCancelled:
				t.Fatalf("run %s ended %s: %s", rs[i].Name, rs[i].Status.Phase, rs[i].Status.Message)
			}
		}
		return len(seen) >= 3 && completed == 2 && len(rs) == 2, fmt.Sprintf("seen %d, now %v", len(seen), runNames(rs))
	})
	cur := getSchedule(t, s)
	if cur.Status.LastScheduleTime == nil || cur.Status.LastSuccessfulTime == nil || cur.Status.NextScheduleTime == nil {
		t.Fatalf("status %+v", cur.Status)
	}
	if !cur.Status.NextScheduleTime.After(cur.Status.LastScheduleTime.Time) {
		t.Fatalf("next %v not after last %v", cur.Status.NextScheduleTime, cur.Status.LastScheduleTime)
	}
	ev := scheduleEvents(t, s)
	if len(ev["RunCreated"]) < 3 || len(ev["RunDeleted"]) < 1 {
		t.Fatalf("events %v", ev)
	}
}

func schedTime(t *testing.T, o *v1alpha1.CsvIngestion) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, o.Annotations[controllers.AnnotationScheduledTime])
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// activeSchedule is a schedule whose runs stay active (the template suspends them).
func activeSchedule(t *testing.T, ns, name string, policy v1alpha1.ConcurrencyPolicy) (*v1alpha1.CsvIngestionSchedule, string) {
	prefix := "exports/" + ns + "/"
	uploadWindows(t, ns, prefix, 6)
	s := scheduleFor(t, ns, name, prefix+`{{ .Window.Start.UTC.Format "`+keyLayout+`" }}.csv`)
	s.Spec.ConcurrencyPolicy = policy
	s.Spec.Template.Spec.Suspend = true
	createSchedule(t, s)
	return s, prefix
}

// Forbid: while a run is active the next one is skipped, with an event and in status; no second
// run exists.
func testScheduleForbid(t *testing.T) {
	t.Parallel()
	s, prefix := activeSchedule(t, "sched-forbid", "forbid", v1alpha1.ConcurrencyForbid)
	waitFor(t, "first run", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		return len(rs) == 1, fmt.Sprint(runNames(rs))
	})
	first := runsOf(t, s)[0]
	checkRun(t, s, &first, prefix)
	waitFor(t, "a skipped run", 3*time.Minute, func() (bool, string) {
		cur := getSchedule(t, s)
		return cur.Status.SkippedRuns >= 1, fmt.Sprintf("%+v", cur.Status)
	})
	cur := getSchedule(t, s)
	c := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionRunSkipped)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "ConcurrencyForbid" || !strings.Contains(c.Message, first.Name) {
		t.Fatalf("RunSkipped condition %+v", c)
	}
	if cur.Status.LastSkippedTime == nil || !cur.Status.LastSkippedTime.After(schedTime(t, &first)) {
		t.Fatalf("lastSkippedTime %v", cur.Status.LastSkippedTime)
	}
	if cur.Status.ActiveCount != 1 || len(cur.Status.Active) != 1 || cur.Status.Active[0].Name != first.Name {
		t.Fatalf("active %+v", cur.Status.Active)
	}
	if rs := runsOf(t, s); len(rs) != 1 {
		t.Fatalf("runs %v, want only %s", runNames(rs), first.Name)
	}
	waitFor(t, "RunSkipped event", 30*time.Second, func() (bool, string) {
		ev := scheduleEvents(t, s)
		for _, n := range ev["RunSkipped"] {
			if strings.Contains(n, "Forbid") && strings.Contains(n, first.Name) {
				return true, ""
			}
		}
		return false, fmt.Sprint(ev)
	})
}

// Replace: the active run is cancelled (spec.cancel → Cancelled) and the new one started.
func testScheduleReplace(t *testing.T) {
	t.Parallel()
	s, prefix := activeSchedule(t, "sched-replace", "replace", v1alpha1.ConcurrencyReplace)
	waitFor(t, "first run", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		return len(rs) >= 1, fmt.Sprint(runNames(rs))
	})
	first := runsOf(t, s)[0]
	waitFor(t, "first run cancelled, a second one active", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		var cancelled, active bool
		for i := range rs {
			o := &rs[i]
			if o.Name == first.Name {
				cancelled = o.Spec.Cancel && o.Status.Phase == v1alpha1.PhaseCancelled
			} else if !o.Status.Phase.Terminal() {
				checkRun(t, s, o, prefix)
				active = true
			}
		}
		return cancelled && active, fmt.Sprint(runNames(rs))
	})
	// The status is written after the runs change: wait for it to show only the new run.
	waitFor(t, "status lists only the new run as active", time.Minute, func() (bool, string) {
		cur := getSchedule(t, s)
		return cur.Status.ActiveCount == 1 && len(cur.Status.Active) == 1 && cur.Status.Active[0].Name != first.Name,
			fmt.Sprintf("%+v", cur.Status.Active)
	})
	ev := scheduleEvents(t, s)
	if len(ev["RunReplaced"]) == 0 || !strings.Contains(ev["RunReplaced"][0], first.Name) {
		t.Fatalf("events %v", ev)
	}
}

// Suspend: no run is created while the schedule is suspended.
func testScheduleSuspend(t *testing.T) {
	t.Parallel()
	ns, prefix := "sched-suspend", "exports/sched-suspend/"
	uploadWindows(t, ns, prefix, 6)
	s := scheduleFor(t, ns, "suspend", prefix+`{{ .Window.Start.UTC.Format "`+keyLayout+`" }}.csv`)
	createSchedule(t, s)
	waitFor(t, "first run", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		return len(rs) >= 1, fmt.Sprint(runNames(rs))
	})
	updateSchedule(t, s, func(o *v1alpha1.CsvIngestionSchedule) { o.Spec.Suspend = true })
	suspended := time.Now()
	// Two scheduled minutes pass: no run may be scheduled after the suspension.
	time.Sleep(time.Until(suspended.Truncate(time.Minute).Add(2*time.Minute + 15*time.Second)))
	before := runsOf(t, s)
	for i := range before {
		if schedTime(t, &before[i]).After(suspended) {
			t.Fatalf("run %s created while suspended (suspended at %v)", before[i].Name, suspended)
		}
	}
	cur := getSchedule(t, s)
	if !strings.Contains(cur.Status.Message, "suspended") {
		t.Fatalf("message %q", cur.Status.Message)
	}
	updateSchedule(t, s, func(o *v1alpha1.CsvIngestionSchedule) { o.Spec.Suspend = false })
	waitFor(t, "a run after resuming", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		return len(rs) > len(before), fmt.Sprint(runNames(rs))
	})
}

// The manager is down across two scheduled minutes: once back, it starts one run, for the most
// recent of them, and says runs were missed.
func testScheduleOutage(t *testing.T) {
	ns, prefix := "sched-outage", "exports/sched-outage/"
	uploadWindows(t, ns, prefix, 8)
	s := scheduleFor(t, ns, "outage", prefix+`{{ .Window.Start.UTC.Format "`+keyLayout+`" }}.csv`)
	// Allow: the first run may still be active when the manager comes back (it is down too), and
	// under Forbid the catch-up run would then be skipped, which is Forbid's scenario, not this one.
	s.Spec.ConcurrencyPolicy = v1alpha1.ConcurrencyAllow
	createSchedule(t, s)
	waitFor(t, "first run recorded", 3*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		cur := getSchedule(t, s)
		return len(rs) == 1 && cur.Status.LastScheduleTime != nil, fmt.Sprint(runNames(rs))
	})
	first := runsOf(t, s)[0]
	if err := st.StopManager(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Two scheduled minutes pass while it is down.
	resume := stopped.Truncate(time.Minute).Add(2*time.Minute + 10*time.Second)
	time.Sleep(time.Until(resume))
	if err := st.StartManager(context.Background()); err != nil {
		t.Fatal(err)
	}
	var catchUp v1alpha1.CsvIngestion
	waitFor(t, "one catch-up run", 2*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		if len(rs) > 2 {
			t.Fatalf("a burst of runs after the outage: %v", runNames(rs))
		}
		if len(rs) == 2 {
			catchUp = rs[1]
			return true, ""
		}
		return false, fmt.Sprint(runNames(rs))
	})
	at := checkRun(t, s, &catchUp, prefix)
	// The catch-up run is for the latest minute that passed during the outage, not the first.
	last := schedTime(t, &first)
	missed := int(at.Sub(last) / time.Minute)
	if missed < 2 || at.After(time.Now()) {
		t.Fatalf("catch-up run scheduled %v: %d minutes after the last run %s, want the latest of at least 2 missed", at, missed, first.Name)
	}
	want := fmt.Sprintf("%d scheduled times passed", missed)
	waitFor(t, "MissedRuns event", 30*time.Second, func() (bool, string) {
		ev := scheduleEvents(t, s)
		return len(ev["MissedRuns"]) > 0 && strings.Contains(ev["MissedRuns"][0], want), fmt.Sprint(want, ev)
	})
	// Stop the schedule before the next minute so other tests see a quiet namespace.
	updateSchedule(t, s, func(o *v1alpha1.CsvIngestionSchedule) { o.Spec.Suspend = true })
}
