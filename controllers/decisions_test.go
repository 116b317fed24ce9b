package controllers

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/ranges"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Table-driven tests of the pure decisions of a pass: what a finished chunk records, which
// chunks start, how a run ends, whether the plan is still the pinned one.

func pod(phase corev1.PodPhase, created int, res *worker.Result, finalizer bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(time.Unix(int64(created), 0))},
		Status: corev1.PodStatus{Phase: phase}}
	if finalizer {
		p.Finalizers = []string{worker.FinalizerOutcome}
	}
	if res != nil {
		code := int32(0)
		if phase == corev1.PodFailed {
			code = 1
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: string(res.Encode())}}}}
	}
	return p
}

func job(conds ...batchv1.JobCondition) *batchv1.Job {
	return &batchv1.Job{Status: batchv1.JobStatus{Conditions: conds}}
}

var (
	complete = batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}
	backoff  = batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonBackoffLimitExceeded, Message: "Job has reached the specified backoff limit"}
	policy   = batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonPodFailurePolicy, Message: "container embedder exited with 42"}
)

func TestJudgeChunk(t *testing.T) {
	now := time.Unix(10000, 0)
	justNow := metav1.NewTime(now.Add(-2 * time.Second))
	longAgo := metav1.NewTime(now.Add(-time.Hour))
	ok := &worker.Result{Processed: 100, VectorsUpserted: 100, Tokens: 1500, Requests: 1}
	failedAttempt := &worker.Result{Error: "pinecone: unavailable", Tokens: 700, Requests: 3, Retries: 2}
	for _, tc := range []struct {
		name      string
		job       *batchv1.Job
		pods      []*corev1.Pod
		finished  *metav1.Time
		wantWait  bool
		wantOK    bool
		wantCount worker.Result // processed, failed, skipped, vectors
		wantUsage worker.Result // tokens, requests, retries
		reason    string
		permanent bool
		warns     bool
	}{
		{name: "succeeded with result", job: job(complete), pods: []*corev1.Pod{pod(corev1.PodSucceeded, 1, ok, true)},
			finished: &longAgo, wantOK: true, wantCount: worker.Result{Processed: 100, VectorsUpserted: 100},
			wantUsage: worker.Result{Tokens: 1500, Requests: 1}},
		{name: "failed attempts before a success are paid for", job: job(complete),
			pods:     []*corev1.Pod{pod(corev1.PodFailed, 1, failedAttempt, true), pod(corev1.PodFailed, 2, failedAttempt, true), pod(corev1.PodSucceeded, 3, ok, true)},
			finished: &longAgo, wantOK: true, wantCount: worker.Result{Processed: 100, VectorsUpserted: 100},
			wantUsage: worker.Result{Tokens: 2900, Requests: 7, Retries: 4}},
		{name: "result not in the cache yet: wait", job: job(complete), pods: []*corev1.Pod{pod(corev1.PodSucceeded, 1, nil, true)},
			finished: &justNow, wantWait: true},
		{name: "pods gone past the grace: unknown, never processed", job: job(complete), finished: &longAgo,
			wantCount: worker.Result{Failed: 100}, reason: ReasonOutcomeUnknown},
		{name: "over-reported counts are cut to the chunk", job: job(complete),
			pods:     []*corev1.Pod{pod(corev1.PodSucceeded, 1, &worker.Result{Processed: 150, Failed: 5, VectorsUpserted: 150}, true)},
			finished: &longAgo, wantOK: true, wantCount: worker.Result{Processed: 95, Failed: 5, VectorsUpserted: 100}, warns: true},
		{name: "unaccounted rows count as failed", job: job(complete),
			pods:     []*corev1.Pod{pod(corev1.PodSucceeded, 1, &worker.Result{Processed: 90, VectorsUpserted: 90}, true)},
			finished: &longAgo, wantOK: true, wantCount: worker.Result{Processed: 90, Failed: 10, VectorsUpserted: 90}, warns: true},
		{name: "negative counts are zero", job: job(complete),
			pods:     []*corev1.Pod{pod(corev1.PodSucceeded, 1, &worker.Result{Processed: 100, Failed: -3, VectorsUpserted: -1}, true)},
			finished: &longAgo, wantOK: true, wantCount: worker.Result{Processed: 100}, warns: true},
		{name: "out of retries: every row failed, usage of all attempts", job: job(backoff),
			pods:     []*corev1.Pod{pod(corev1.PodFailed, 1, failedAttempt, true), pod(corev1.PodFailed, 2, failedAttempt, true)},
			finished: &longAgo, wantCount: worker.Result{Failed: 100}, wantUsage: worker.Result{Tokens: 1400, Requests: 6, Retries: 4},
			reason: batchv1.JobReasonBackoffLimitExceeded},
		{name: "permanent exit", job: job(policy),
			pods:     []*corev1.Pod{pod(corev1.PodFailed, 1, &worker.Result{Reason: worker.ReasonUnauthorized, Error: "401"}, true)},
			finished: &longAgo, wantCount: worker.Result{Failed: 100}, reason: worker.ReasonUnauthorized, permanent: true},
		{name: "running", job: job(), pods: []*corev1.Pod{pod(corev1.PodRunning, 1, nil, true)}, wantWait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := describeJob(tc.job, tc.pods)
			v := judgeChunk(c, 100, tc.finished, now)
			if v.wait != tc.wantWait {
				t.Fatalf("wait = %v, want %v", v.wait, tc.wantWait)
			}
			if tc.wantWait {
				return
			}
			if v.succeeded != tc.wantOK || v.reason != tc.reason || v.permanent != tc.permanent || (v.warning != "") != tc.warns {
				t.Errorf("verdict %+v", v)
			}
			got := worker.Result{Processed: v.res.Processed, Failed: v.res.Failed, Skipped: v.res.Skipped, VectorsUpserted: v.res.VectorsUpserted}
			if got.Processed != tc.wantCount.Processed || got.Failed != tc.wantCount.Failed || got.VectorsUpserted != tc.wantCount.VectorsUpserted {
				t.Errorf("counts %+v, want %+v", got, tc.wantCount)
			}
			if v.res.Processed+v.res.Failed+v.res.Skipped != 100 {
				t.Errorf("counts add up to %d for a chunk of 100 rows", v.res.Processed+v.res.Failed+v.res.Skipped)
			}
			if c.usage.Tokens != tc.wantUsage.Tokens || c.usage.Requests != tc.wantUsage.Requests || c.usage.Retries != tc.wantUsage.Retries {
				t.Errorf("usage %+v, want %+v", c.usage, tc.wantUsage)
			}
			out := outcomeOf(3, worker.ChunkArgs{FirstRow: 300, Rows: 100}, v)
			if out.StartRow != 300 || out.EndRow != 399 || (out.Status == "completed") != tc.wantOK || (!tc.wantOK && !strings.HasPrefix(out.Error, tc.reason)) {
				t.Errorf("task-table entry %+v", out)
			}
		})
	}
}

func TestNextChunks(t *testing.T) {
	parse := func(s string) ranges.Set {
		r, err := ranges.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name                      string
		total, room               int
		completed, failed, hasJob string
		want                      []int
	}{
		{"fresh", 10, 4, "", "", "", []int{0, 1, 2, 3}},
		{"lowest gaps first", 10, 3, "0-2,5", "", "3", []int{4, 6, 7}},
		{"failed are recorded too", 10, 3, "0-1", "2,4", "", []int{3, 5, 6}},
		{"completed and failed touch", 10, 2, "0-2,6", "3-5", "", []int{7, 8}},
		{"interleaved sets", 12, 3, "0,2,4,6", "1,3,5,7", "8", []int{9, 10, 11}},
		{"no room", 10, 0, "", "", "", nil},
		{"all done", 5, 4, "0-2", "3-4", "", nil},
		{"recorded to the end", 5, 4, "0-9", "", "", nil},
		{"tail", 5, 4, "0-2", "", "3", []int{4}},
		{"never more than room", 100, 2, "", "", "", []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := nextChunks(tc.total, tc.room, parse(tc.completed), parse(tc.failed), parse(tc.hasJob).Has)
			if !slices.Equal(got, tc.want) {
				t.Errorf("nextChunks = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOutcomePhase(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		total, finished, failedChunks int
		failedRows                    int64
		budget                        float64
		permanent                     bool
		want                          v1alpha1.Phase
		reason                        string
	}{
		{"running", 10, 4, 0, 0, 100, false, "", ""},
		{"all good", 10, 10, 0, 0, 100, false, v1alpha1.PhaseCompleted, "Completed"},
		{"some rows failed within budget", 10, 10, 0, 5, 100, false, v1alpha1.PhasePartiallyCompleted, "PartiallyCompleted"},
		{"a failed chunk within budget", 10, 10, 1, 100, 100, false, v1alpha1.PhasePartiallyCompleted, "PartiallyCompleted"},
		{"over budget before the end", 10, 3, 0, 101, 100, false, v1alpha1.PhaseFailed, "TooManyFailedRows"},
		{"permanent wins", 10, 10, 1, 0, 100, true, v1alpha1.PhaseFailed, "Permanent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := outcomePhase(tc.total, tc.finished, tc.failedChunks, tc.failedRows, tc.budget, tc.permanent)
			if got != tc.want || reason != tc.reason {
				t.Errorf("outcomePhase = %s/%s, want %s/%s", got, reason, tc.want, tc.reason)
			}
		})
	}
}

func TestCheckPlan(t *testing.T) {
	plan := &worker.Plan{ETag: `"e1"`, TotalRows: 300, RowsPerChunk: 100, Offsets: []int64{10, 110, 210, 310}}
	moved := *plan
	moved.Offsets = []int64{10, 120, 210, 310}
	reExported := *plan
	reExported.ETag = `"e2"`
	pinned := fingerprint(plan)
	for _, tc := range []struct {
		name    string
		pinned  *v1alpha1.PlanFingerprint
		kids    children
		ok      bool
		problem string
	}{
		{"nothing pinned, no plan yet", nil, children{}, true, ""},
		{"nothing pinned, a plan", nil, children{planFound: true, plan: plan}, true, ""},
		{"same plan", pinned, children{planFound: true, plan: plan}, true, ""},
		{"deleted", pinned, children{}, false, "deleted"},
		{"unusable", pinned, children{planFound: true, planErr: errString("decode plan: bad")}, false, "unusable"},
		{"offsets moved", pinned, children{planFound: true, plan: &moved}, false, "changed"},
		{"object re-exported", pinned, children{planFound: true, plan: &reExported}, false, `etag "e2"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, problem := checkPlan(tc.pinned, &tc.kids)
			if ok != tc.ok || !strings.Contains(problem, tc.problem) {
				t.Errorf("checkPlan = %v %q, want %v containing %q", ok, problem, tc.ok, tc.problem)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestChunkIndexOf(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, tc := range []struct {
		ing, job string
		idx      int
		ok       bool
	}{
		{"q239", "q239-chunk-12", 12, true},
		{"q239", "q239-plan", 0, false},
		{"q239", "q239-chunk-x", 0, false},
		{"q", "q-plan", 0, false}, // shorter than "-chunk-": once a slice-bounds panic
		{long, worker.ChunkJobName(long, 100), 100, true},
		{long, worker.PlanJobName(long), 0, false},
		{"q239", "other-chunk-1", 0, false},
		{"q239", worker.SyncJobName("q239"), 0, false},
		{long, worker.SyncJobName(long), 0, false},
	} {
		idx, ok := chunkIndexOf(tc.ing, tc.job)
		if idx != tc.idx || ok != tc.ok {
			t.Errorf("chunkIndexOf(%q, %q) = %d %v, want %d %v", tc.ing, tc.job, idx, ok, tc.idx, tc.ok)
		}
	}
}

func TestBlockedBackoff(t *testing.T) {
	r := &Reconciler{blockedRetries: map[types.UID]int{}}
	var got []time.Duration
	for i := 0; i < 7; i++ {
		got = append(got, r.blockedBackoff("u", true))
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("backoff %v, want %v", got, want)
	}
	if d := r.blockedBackoff("u", false); d != 0 || r.blockedBackoff("u", true) != 2*time.Second {
		t.Errorf("an unblocked pass must reset the backoff")
	}
}

// TestSyncDecision: which action and MissingDeleted reason the sync step takes.
func TestSyncDecision(t *testing.T) {
	done := v1alpha1.PhaseCompleted
	partial := v1alpha1.PhasePartiallyCompleted
	on := func(f syncFacts) syncFacts { f.DeleteMissing = true; return f }
	for _, tc := range []struct {
		name   string
		f      syncFacts
		action syncAction
		reason string
	}{
		{"no deleteMissing", syncFacts{Outcome: done}, syncNone, ""},
		{"dry run", on(syncFacts{DryRun: true, Outcome: done}), syncNone, ""},
		{"completed", on(syncFacts{Outcome: done}), syncRun, ""},
		{"partially completed runs too (failed rows keep their ids)", on(syncFacts{Outcome: partial}), syncRun, ""},
		{"failed", on(syncFacts{Outcome: v1alpha1.PhaseFailed}), syncEnd, ReasonRunFailed},
		{"suspended before the Job", on(syncFacts{Outcome: done, Suspend: true}), syncHold, ReasonSyncSuspended},
		{"suspended with the Job", on(syncFacts{Outcome: done, Suspend: true, JobExists: true}), syncHold, ReasonSyncSuspended},
		{"suspended after the Job finished: its outcome ends the run", on(syncFacts{Outcome: done, Suspend: true, JobExists: true, JobDone: true}), syncRun, ""},
		{"a failed run never deletes, even with a Job", on(syncFacts{Outcome: v1alpha1.PhaseFailed, JobExists: true, JobDone: true}), syncEnd, ReasonRunFailed},
		{"suspend wins over a peer", on(syncFacts{Outcome: done, Suspend: true, WaitFor: "b"}), syncHold, ReasonSyncSuspended},
		{"Job exists: it finishes whatever peers do", on(syncFacts{Outcome: done, JobExists: true, Superseded: "b", WaitFor: "c"}), syncRun, ""},
		{"newer run finished writing", on(syncFacts{Outcome: done, Superseded: "b"}), syncEnd, ReasonSuperseded},
		{"superseded wins over waiting", on(syncFacts{Outcome: partial, Superseded: "b", WaitFor: "c"}), syncEnd, ReasonSuperseded},
		{"another writer still runs", on(syncFacts{Outcome: done, WaitFor: "b"}), syncHold, ReasonSyncWaiting},
	} {
		v := syncDecision(tc.f)
		if v.action != tc.action || v.reason != tc.reason {
			t.Errorf("%s: syncDecision = %v %q, want %v %q", tc.name, v.action, v.reason, tc.action, tc.reason)
		}
		if (v.action == syncHold || v.action == syncEnd) && v.message == "" {
			t.Errorf("%s: no message", tc.name)
		}
	}
}

// TestJudgeSync: how a finished sync Job ends the run.
func TestJudgeSync(t *testing.T) {
	done, partial, failed := v1alpha1.PhaseCompleted, v1alpha1.PhasePartiallyCompleted, v1alpha1.PhaseFailed
	res := &worker.Result{Role: worker.RoleSync, Listed: 1100, Missing: 150, Deletable: 50, Deleted: 50, LeftAlone: 100, Unmarked: 30}
	for _, tc := range []struct {
		name       string
		outcome    v1alpha1.Phase
		succeeded  bool
		res        *worker.Result
		failReason string
		max        int32
		ok         bool
		reason     string
		phase      v1alpha1.Phase
		msg        []string
	}{
		{"deleted", done, true, res, "", 10, true, ReasonDeleted, done,
			[]string{"deleted 62 vectors", "100 vectors under the prefix belong to another source; left alone", "30 of them carry no owner marker"}},
		{"deleted after a partial run", partial, true, res, "", 10, true, ReasonDeleted, partial, []string{"deleted 62"}},
		{"report only", done, true, res, "", 0, false, ReasonReportOnly, done, []string{"report only", "50 vectors", "would be deleted", "left alone"}},
		{"report only after a partial run", partial, true, res, "", 0, false, ReasonReportOnly, partial, []string{"report only"}},
		{"no result", done, true, nil, "", 10, false, ReasonOutcomeUnknown, failed, []string{"unknown"}},
		{"guard", done, false, res, worker.ReasonDeleteGuard, 10, false, worker.ReasonDeleteGuard, failed, []string{"boom", "left alone"}},
		{"row without id", partial, false, nil, worker.ReasonNoKey, 10, false, worker.ReasonNoKey, partial, []string{"boom"}},
		{"job failed", done, false, nil, "ChunkFailed", 10, false, "SyncFailed", failed, []string{"failed: boom"}},
		{"job failed with a reason", done, false, nil, worker.ReasonUnauthorized, 10, false, worker.ReasonUnauthorized, failed, []string{"boom"}},
	} {
		deleted := int64(0)
		if tc.res != nil {
			deleted = tc.res.Deleted + 12 // earlier attempts' deletions count too
		}
		e := judgeSync(tc.outcome, tc.succeeded, tc.res, deleted, tc.failReason, "boom", "q1.", tc.max)
		if e.ok != tc.ok || e.condReason != tc.reason || e.phase != tc.phase {
			t.Errorf("%s: judgeSync = ok %v %s %s, want %v %s %s", tc.name, e.ok, e.condReason, e.phase, tc.ok, tc.reason, tc.phase)
		}
		for _, w := range tc.msg {
			if !strings.Contains(e.msg, w) {
				t.Errorf("%s: message %q lacks %q", tc.name, e.msg, w)
			}
		}
	}
}

// TestPeersVerdict: one deleter at a time per (index, namespace, prefix), and never an older
// file's deletions after a newer file was written.
func TestPeersVerdict(t *testing.T) {
	for _, tc := range []struct {
		name                string
		ps                  peers
		superseded, waitFor string
		olderDeleting       string
	}{
		{"alone", nil, "", "", ""},
		{"newer finished", peers{{name: "b", newer: true, terminal: true, syncReason: ReasonDeleted}}, "b", "", ""},
		{"newer failed in planning", peers{{name: "b", newer: true, terminal: true}}, "b", "", ""},
		{"newer at its sync step", peers{{name: "b", newer: true, syncReason: ReasonSyncWaiting}}, "b", "", ""},
		{"newer still writing", peers{{name: "b", newer: true}}, "", "b", ""},
		{"older still writing", peers{{name: "a"}}, "", "a", ""},
		{"older deleting", peers{{name: "a", syncReason: ReasonDeleting}}, "", "a", "a"},
		{"older suspended before its sync Job", peers{{name: "a", syncReason: ReasonSyncSuspended}}, "", "a", ""},
		{"older with its sync Job suspended", peers{{name: "a", syncReason: ReasonSyncSuspended, syncJob: true}}, "", "a", "a"},
		{"older blocked creating its sync Job", peers{{name: "a", syncReason: ReasonDeleteBlocked}}, "", "a", "a"},
		{"older held behind this one", peers{{name: "a", syncReason: ReasonSyncWaiting}}, "", "", ""},
		{"older finished", peers{{name: "a", terminal: true, syncReason: ReasonDeleted}}, "", "", ""},
		{"several", peers{{name: "c", newer: true}, {name: "b", newer: true}, {name: "x", newer: true, terminal: true}}, "x", "b (and 1 more)", ""},
	} {
		sup, wait := tc.ps.verdict()
		if sup != tc.superseded || wait != tc.waitFor || tc.ps.olderDeleting() != tc.olderDeleting {
			t.Errorf("%s: verdict %q %q, olderDeleting %q; want %q %q %q", tc.name, sup, wait, tc.ps.olderDeleting(), tc.superseded, tc.waitFor, tc.olderDeleting)
		}
	}
}

// TestPeersDeleter: a run records itself as a writer only while a peer that deletes under the
// prefix is running (only a deleter's sync step reads the record).
func TestPeersDeleter(t *testing.T) {
	for _, tc := range []struct {
		name string
		ps   peers
		want bool
	}{
		{"alone", nil, false},
		{"plain writers only", peers{{name: "a"}, {name: "b", newer: true}}, false},
		{"a deleter that ended", peers{{name: "a", deletes: true, terminal: true, syncReason: ReasonDeleted}}, false},
		{"an older deleter still writing", peers{{name: "a", deletes: true}}, true},
		{"an older deleter at its sync step", peers{{name: "a", deletes: true, syncReason: ReasonDeleting}}, true},
		{"a newer deleter", peers{{name: "b", newer: true, deletes: true}}, true},
		{"one of several", peers{{name: "a"}, {name: "c", deletes: true, terminal: true}, {name: "b", deletes: true, syncReason: ReasonSyncWaiting}}, true},
	} {
		if got := tc.ps.deleter(); got != tc.want {
			t.Errorf("%s: deleter() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestSharesNamespace: runs under one index and prefix are peers when they may write to a common
// namespace; with namespaceColumn routing that is any namespace, so a routed run's sync step
// must take turns with a run writing straight to one of the namespaces it routes to. A run that
// names the index's host and one that has it looked up write to the same index.
func TestSharesNamespace(t *testing.T) {
	spec := func(ns, column string) *v1alpha1.CsvIngestionSpec {
		s := &v1alpha1.CsvIngestionSpec{}
		s.Target.Pinecone.Index = "idx"
		s.Target.Pinecone.Namespace = ns
		s.Mapping.IDPrefix = "q1."
		s.Mapping.NamespaceColumn = column
		return s
	}
	withHost := func(s *v1alpha1.CsvIngestionSpec, host string) *v1alpha1.CsvIngestionSpec {
		s.Target.Pinecone.Host = host
		return s
	}
	for _, tc := range []struct {
		name string
		a, b *v1alpha1.CsvIngestionSpec
		want bool
	}{
		{"same namespace", spec("eu", ""), spec("eu", ""), true},
		{"different namespaces", spec("eu", ""), spec("us", ""), false},
		{"one routes", spec("default", "region"), spec("eu", ""), true},
		{"both route", spec("a", "region"), spec("b", "region"), true},
		{"one names the host, the other looks it up", withHost(spec("eu", ""), "idx-1.svc.pinecone.io"), spec("eu", ""), true},
		{"the same host", withHost(spec("eu", ""), "idx-1.svc.pinecone.io"), withHost(spec("eu", ""), "idx-1.svc.pinecone.io"), true},
		{"two hosts: two projects' indexes", withHost(spec("eu", ""), "idx-1.svc.pinecone.io"), withHost(spec("eu", ""), "idx-2.svc.pinecone.io"), false},
	} {
		if got := sharesNamespace(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: sharesNamespace = %v, want %v", tc.name, got, tc.want)
		}
		if got := sharesNamespace(tc.b, tc.a); got != tc.want {
			t.Errorf("%s (swapped): sharesNamespace = %v, want %v", tc.name, got, tc.want)
		}
		// Peers are found by the field index: the key must not split runs that share a namespace.
		if tc.want && prefixKey(tc.a) != prefixKey(tc.b) {
			t.Errorf("%s: prefixKey differs for runs that share a namespace", tc.name)
		}
	}
}

// TestNewerThan: creation time, then name.
func TestNewerThan(t *testing.T) {
	at := func(name string, sec int64) *v1alpha1.CsvIngestion {
		return &v1alpha1.CsvIngestion{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: metav1.NewTime(time.Unix(sec, 0))}}
	}
	if !newerThan(at("a", 2), at("b", 1)) || newerThan(at("b", 1), at("a", 2)) || !newerThan(at("b", 1), at("a", 1)) || newerThan(at("a", 1), at("b", 1)) {
		t.Fatal("newerThan orders by creation time, then name")
	}
}

// TestOpenOutcomes: which recorded chunks the task table is sent again, and with what. The
// released-pods row is the race e2e TestFaultTable/plan-replaced-mid-run met: the pods' release
// reached the cache before the Job's TTL patch, and the accepted entry was overwritten with
// OutcomeUnknown.
func TestOpenOutcomes(t *testing.T) {
	plan := &worker.Plan{TotalRows: 300, RowsPerChunk: 100, Offsets: []int64{0, 100, 200, 300}}
	ok := &worker.Result{Processed: 100, VectorsUpserted: 100}
	ttl := int32(60)
	withTTL := func(j *batchv1.Job) *batchv1.Job { j.Spec.TTLSecondsAfterFinished = &ttl; return j }
	// counted is a Job as the Job controller leaves it: a finished Job whose pod ran counts it.
	counted := func(j *batchv1.Job, succeeded, failed int32) *batchv1.Job {
		j.Status.Succeeded, j.Status.Failed = succeeded, failed
		return j
	}
	deadline := batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: batchv1.JobReasonDeadlineExceeded,
		Message: "Job was active longer than specified deadline"}
	for _, tc := range []struct {
		name                string
		completed, failed   bool
		thisPass            bool
		c                   *childJob
		wantEntry           bool
		wantStatus, wantWhy string
	}{
		{name: "not recorded", c: describeJob(job(complete), []*corev1.Pod{pod(corev1.PodSucceeded, 1, ok, true)})},
		{name: "recorded earlier, pods held: derived again", completed: true,
			c: describeJob(job(complete), []*corev1.Pod{pod(corev1.PodSucceeded, 1, ok, true)}), wantEntry: true, wantStatus: "completed"},
		{name: "recorded earlier, pods released, Job's TTL not yet in the cache: the table has it", completed: true,
			c: describeJob(counted(job(complete), 1, 0), nil)},
		{name: "recorded earlier as failed, pods released, Job's TTL not yet in the cache: the table has it", failed: true,
			c: describeJob(counted(job(backoff), 0, 2), nil)},
		{name: "recorded earlier, pods released, Job released", completed: true,
			c: describeJob(withTTL(counted(job(complete), 1, 0)), nil)},
		// Never released, so the table may not have the entry (its write failed, or the manager
		// stopped between the status write and the table's): skipping it would lose it.
		{name: "recorded earlier as failed, the Job never had a pod (its deadline passed while pod creation was refused)", failed: true,
			c: describeJob(job(deadline), nil), wantEntry: true, wantStatus: "failed", wantWhy: batchv1.JobReasonDeadlineExceeded},
		{name: "recorded earlier, a user removed the finalizer from its pods before the table had it", completed: true,
			c: describeJob(counted(job(complete), 1, 0), []*corev1.Pod{pod(corev1.PodSucceeded, 1, ok, false)}), wantEntry: true, wantStatus: "completed"},
		{name: "recorded earlier as failed, pods held, a pod says succeeded: the status's verdict stands", failed: true,
			c: describeJob(job(complete), []*corev1.Pod{pod(corev1.PodSucceeded, 1, ok, true)}), wantEntry: true, wantStatus: "failed", wantWhy: ReasonOutcomeUnknown},
		{name: "recorded earlier as failed, pods held", failed: true,
			c: describeJob(job(backoff), []*corev1.Pod{pod(corev1.PodFailed, 1, &worker.Result{Error: "boom"}, true)}), wantEntry: true, wantStatus: "failed"},
		{name: "recorded in this pass: this pass's entry, even with no pods in the cache", completed: true, thisPass: true,
			c: describeJob(job(complete), nil), wantEntry: true, wantStatus: "completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var completed, failed ranges.Set
			if tc.completed {
				completed.Add(1)
			}
			if tc.failed {
				failed.Add(1)
			}
			p := &pass{kids: &children{plan: plan, chunks: map[int]*childJob{1: tc.c}}, completed: completed, failed: failed,
				outcomes: map[int]ChunkOutcome{}}
			if tc.thisPass {
				args, _ := plan.Chunk(1)
				p.outcomes[1] = outcomeOf(1, args, verdict{succeeded: true, res: *ok})
			}
			got, has := p.openOutcomes()[1]
			if has != tc.wantEntry {
				t.Fatalf("entry %v (%+v), want %v", has, got, tc.wantEntry)
			}
			if !has {
				return
			}
			if got.Status != tc.wantStatus || got.StartRow != 100 || got.EndRow != 199 {
				t.Errorf("entry %+v, want status %s rows 100-199", got, tc.wantStatus)
			}
			if tc.wantWhy != "" && !strings.Contains(got.Error, tc.wantWhy) {
				t.Errorf("entry error %q, want %s", got.Error, tc.wantWhy)
			}
		})
	}
}

func TestKueueWithdraw(t *testing.T) {
	q := func(idx ...int) []*childJob {
		out := make([]*childJob, 0, len(idx))
		for _, i := range idx {
			out = append(out, &childJob{index: i})
		}
		return out
	}
	indexes := func(cs []*childJob) []int {
		out := []int{}
		for _, c := range cs {
			out = append(out, c.index)
		}
		return out
	}
	for _, tc := range []struct {
		name            string
		admitted, limit int
		queued          []*childJob
		keep, withdraw  []int
	}{
		{"room for all", 1, 4, q(2, 3), []int{2, 3}, []int{}},
		{"lowered: the highest indexes go", 1, 2, q(2, 3, 4), []int{2}, []int{3, 4}},
		{"admitted alone over the limit: every queued one goes, none admitted is touched", 3, 2, q(5), []int{}, []int{5}},
		{"suspended (limit 0)", 2, 0, q(3, 4), []int{}, []int{3, 4}},
		{"nothing queued", 0, 3, nil, []int{}, []int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, drop := kueueWithdraw(tc.admitted, tc.queued, tc.limit)
			if k, d := indexes(keep), indexes(drop); fmt.Sprint(k) != fmt.Sprint(tc.keep) || fmt.Sprint(d) != fmt.Sprint(tc.withdraw) {
				t.Errorf("keep %v withdraw %v, want %v and %v", k, d, tc.keep, tc.withdraw)
			}
		})
	}
}
