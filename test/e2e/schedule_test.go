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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// One smoke scenario on a real minute ("* * * * *"): the manager is the real binary with the real
// clock. The scenarios (Forbid, Replace, history, suspend, outage and catch-up, the starting
// deadline, refused runs) run against an injected clock in controllers/schedule_controller_test.go
// and schedule_refusal_test.go, where minutes pass without waiting for them.

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

// TestSchedule: a schedule creates one run at a real cron minute, named for that minute, reading
// its window's file, owned and labelled; the run completes; the schedule records it. Then the
// schedule is deleted first, and its run with it.
func TestSchedule(t *testing.T) {
	skipShort(t)
	ns, prefix := "sched-smoke", "exports/sched-smoke/"
	uploadWindows(t, ns, prefix, 3)
	s := scheduleFor(t, ns, "smoke", prefix+`{{ .Window.Start.UTC.Format "`+keyLayout+`" }}.csv`)
	createSchedule(t, s)
	t.Cleanup(func() { deleteSchedule(t, s) })

	var run v1alpha1.CsvIngestion
	waitFor(t, "a run at the next minute", 2*time.Minute, func() (bool, string) {
		rs := runsOf(t, s)
		if len(rs) > 0 {
			run = rs[0]
			return true, ""
		}
		return false, fmt.Sprintf("%+v", getSchedule(t, s).Status)
	})
	at := checkRun(t, s, &run, prefix)
	waitFor(t, "the run completes and the schedule records it", 3*time.Minute, func() (bool, string) {
		cur := getSchedule(t, s)
		rs := runsOf(t, s)
		for i := range rs {
			if rs[i].Name == run.Name && rs[i].Status.Phase.Terminal() && rs[i].Status.Phase != v1alpha1.PhaseCompleted {
				t.Fatalf("run %s ended %s: %s", run.Name, rs[i].Status.Phase, rs[i].Status.Message)
			}
		}
		return cur.Status.LastScheduleTime != nil && !cur.Status.LastScheduleTime.Time.Before(at) && cur.Status.LastSuccessfulTime != nil,
			fmt.Sprintf("%+v; runs %v", cur.Status, runNames(rs))
	})
	if ev := scheduleEvents(t, s); len(ev["RunCreated"]) == 0 || !strings.Contains(ev["RunCreated"][0], run.Name) {
		t.Fatalf("events %v", ev)
	}
	cur := getSchedule(t, s)
	t.Logf("run %s scheduled %s, created %s, completed %s (schedule created %s)", run.Name, at.Format(time.RFC3339),
		run.CreationTimestamp.Format(time.RFC3339), cur.Status.LastSuccessfulTime.Format(time.RFC3339), cur.CreationTimestamp.Format(time.RFC3339))
}

// deleteSchedule deletes the schedule (so it fires no more) and then its runs, and waits until
// they are gone.
func deleteSchedule(t *testing.T, s *v1alpha1.CsvIngestionSchedule) {
	ctx := context.Background()
	if err := st.Cluster.Client.Delete(ctx, s); client.IgnoreNotFound(err) != nil {
		t.Errorf("delete schedule: %v", err)
	}
	if err := st.Cluster.Client.DeleteAllOf(ctx, &v1alpha1.CsvIngestion{}, client.InNamespace(s.Namespace),
		client.MatchingLabels{controllers.LabelSchedule: s.Name}); err != nil {
		t.Errorf("delete runs: %v", err)
	}
	waitFor(t, "schedule and runs gone", time.Minute, func() (bool, string) {
		err := st.Cluster.Client.Get(ctx, client.ObjectKeyFromObject(s), &v1alpha1.CsvIngestionSchedule{})
		rs := runsOf(t, s)
		return apierrors.IsNotFound(err) && len(rs) == 0, fmt.Sprintf("%v %v", err, runNames(rs))
	})
}
