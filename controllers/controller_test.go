package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func envByName(c corev1.Container) map[string]corev1.EnvVar {
	out := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		out[e.Name] = e
	}
	return out
}

func checkSecretRef(t *testing.T, env map[string]corev1.EnvVar, name, secret, key string) {
	t.Helper()
	e, ok := env[name]
	if !ok {
		t.Errorf("env %s missing", name)
		return
	}
	if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("env %s must come from a secretKeyRef, got %+v", name, e)
		return
	}
	if ref := e.ValueFrom.SecretKeyRef; ref.Name != secret || ref.Key != key {
		t.Errorf("env %s = secret %s/%s, want %s/%s", name, ref.Name, ref.Key, secret, key)
	}
}

func checkCommonJob(t *testing.T, obj *v1alpha1.CsvIngestion, j *batchv1.Job, role string) {
	t.Helper()
	labels := map[string]string{worker.LabelName: obj.Name, worker.LabelUID: string(obj.UID),
		worker.LabelTaskID: obj.Spec.TaskID, worker.LabelRole: role}
	for k, v := range labels {
		if j.Labels[k] != v || j.Spec.Template.Labels[k] != v {
			t.Errorf("%s: label %s = %q/%q, want %q", j.Name, k, j.Labels[k], j.Spec.Template.Labels[k], v)
		}
	}
	refs := j.OwnerReferences
	if len(refs) != 1 || refs[0].UID != obj.UID || refs[0].Kind != "CsvIngestion" || refs[0].Controller == nil || !*refs[0].Controller {
		t.Errorf("%s: owner references %+v", j.Name, refs)
	}
	spec := j.Spec
	if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("%s: restartPolicy %s", j.Name, spec.Template.Spec.RestartPolicy)
	}
	if *spec.BackoffLimit != 3 {
		t.Errorf("%s: backoffLimit %d", j.Name, *spec.BackoffLimit)
	}
	if got := *spec.Template.Spec.ActiveDeadlineSeconds; got != 1800 {
		t.Errorf("%s: pod activeDeadlineSeconds %d, want 1800 (chunkTimeout)", j.Name, got)
	}
	if got := *spec.ActiveDeadlineSeconds; got != 1800*4 {
		t.Errorf("%s: job activeDeadlineSeconds %d, want 7200 (chunkTimeout × attempts)", j.Name, got)
	}
	// No TTL until the outcome is recorded; the pods hold their outcome with a finalizer.
	if spec.TTLSecondsAfterFinished != nil {
		t.Errorf("%s: ttlSecondsAfterFinished %d set before the outcome is recorded", j.Name, *spec.TTLSecondsAfterFinished)
	}
	if !slices.Contains(spec.Template.Finalizers, worker.FinalizerOutcome) {
		t.Errorf("%s: pod template finalizers %v lack %s", j.Name, spec.Template.Finalizers, worker.FinalizerOutcome)
	}
	if j.Annotations[worker.AnnotationName] != obj.Name || j.Annotations[worker.AnnotationTaskID] != obj.EffectiveTaskID() {
		t.Errorf("%s: annotations %v", j.Name, j.Annotations)
	}
	pfp := spec.PodFailurePolicy
	if pfp == nil || len(pfp.Rules) == 0 || pfp.Rules[0].Action != batchv1.PodFailurePolicyActionFailJob ||
		pfp.Rules[0].OnExitCodes == nil || !slices.Equal(pfp.Rules[0].OnExitCodes.Values, []int32{worker.ExitPermanent}) {
		t.Errorf("%s: podFailurePolicy %+v must fail the Job on exit code %d", j.Name, pfp, worker.ExitPermanent)
	}
	pod := spec.Template.Spec
	if pod.ServiceAccountName != "vectordb-embedder" {
		t.Errorf("%s: serviceAccountName %q", j.Name, pod.ServiceAccountName)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: pod must run as non-root", j.Name)
	}
	c := pod.Containers[0]
	if c.Image != "vectordb-embedder:test" {
		t.Errorf("%s: image %q", j.Name, c.Image)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("%s: container security context not restricted: %+v", j.Name, sc)
	}
	env := envByName(c)
	checkSecretRef(t, env, worker.EnvAWSAccessKeyID, "s3-creds", "AWS_ACCESS_KEY_ID")
	checkSecretRef(t, env, worker.EnvAWSSecretKey, "s3-creds", "AWS_SECRET_ACCESS_KEY")
	ing, err := worker.DecodeIngestion(env[worker.EnvIngestion].Value)
	if err != nil || ing.UID != string(obj.UID) || ing.TaskID != obj.Spec.TaskID || ing.Spec.Mapping.IDPrefix != "239." {
		t.Errorf("%s: %s = %+v, %v", j.Name, worker.EnvIngestion, ing, err)
	}
	if r := env["GOMEMLIMIT"].ValueFrom; r == nil || r.ResourceFieldRef == nil || r.ResourceFieldRef.Resource != "limits.memory" ||
		r.ResourceFieldRef.ContainerName != c.Name {
		t.Errorf("%s: GOMEMLIMIT = %+v, want the container's memory limit", j.Name, env["GOMEMLIMIT"])
	}
	for _, e := range c.Env {
		if e.Value != "" && e.Name != worker.EnvIngestion {
			t.Errorf("%s: env %s has an inline value; only references are allowed", j.Name, e.Name)
		}
	}
}

func TestJobsCarryTheContract(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "contract", nil))

	planner := waitJob(t, ns, worker.PlanJobName(obj.Name))
	obj = get(t, obj)
	checkCommonJob(t, obj, planner, worker.RolePlan)
	if args := planner.Spec.Template.Spec.Containers[0].Args; !slices.Equal(args, []string{"plan"}) {
		t.Errorf("planner args %v", args)
	}
	// The planner runs the vector-space guard: it reads the index and re-embeds a few stored
	// texts, so it gets both keys, by secretKeyRef only.
	plannerEnv := envByName(planner.Spec.Template.Spec.Containers[0])
	checkSecretRef(t, plannerEnv, worker.EnvOpenAIAPIKey, "openai", "api-key")
	checkSecretRef(t, plannerEnv, worker.EnvPineconeAPIKey, "pinecone", "api-key")
	if a := planner.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || !*a {
		t.Errorf("the planner needs its service account token to write the plan")
	}
	obj = waitPhase(t, obj, v1alpha1.PhasePlanning)
	eventually(t, "task item while planning", 15*time.Second, func() (bool, string) {
		item, _, err := tasktable.NewFromAPI(dyn.Client(), taskTable).Get(context.Background(), obj.Spec.TaskID)
		if err != nil {
			return false, err.Error()
		}
		return item.Status == "processing" && item.TaskType == "s3_csv_processing" && item.Parameters.QuestionID == 239 &&
			item.Parameters.S3Key == "exports/239.csv" && item.Parameters.Namespace == "v2" && item.Parameters.ChunkSize == 1000 &&
			item.K8s.Name == obj.Name && item.K8s.UID == string(obj.UID) && !item.CreatedAt.IsZero() && !item.StartedAt.IsZero(), fmt.Sprintf("%+v", item)
	})

	plan := writePlan(t, obj, 3500, 1000)
	var chunks []batchv1.Job
	eventually(t, "4 chunk jobs", 30*time.Second, func() (bool, string) {
		chunks = listJobs(t, obj, worker.RoleChunk)
		return len(chunks) == 4, fmt.Sprintf("%d jobs", len(chunks))
	})
	var rpm, tpm float64
	for _, j := range chunks {
		checkCommonJob(t, obj, &j, worker.RoleChunk)
		idx := j.Labels[worker.LabelChunk]
		var i int
		fmt.Sscan(idx, &i)
		if j.Name != worker.ChunkJobName(obj.Name, i) {
			t.Errorf("job %s for chunk %d", j.Name, i)
		}
		c := j.Spec.Template.Spec.Containers[0]
		env := envByName(c)
		checkSecretRef(t, env, worker.EnvOpenAIAPIKey, "openai", "api-key")
		checkSecretRef(t, env, worker.EnvPineconeAPIKey, "pinecone", "api-key")
		if a := j.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s: chunk pods need no API token", j.Name)
		}
		want, _ := plan.Chunk(i)
		args := strings.Join(c.Args, " ")
		for _, f := range want.Flags()[:7] {
			if !strings.Contains(args, f) {
				t.Errorf("%s: args %q lack %q", j.Name, args, f)
			}
		}
		var r, k float64
		for _, a := range c.Args {
			fmt.Sscanf(a, "--rpm=%g", &r)
			fmt.Sscanf(a, "--tpm=%g", &k)
		}
		rpm += r
		tpm += k
	}
	if rpm != 300 || tpm != 1000000 {
		t.Errorf("budget shares add up to %g RPM and %g TPM, want 300 and 1000000", rpm, tpm)
	}

	obj = waitPhase(t, obj, v1alpha1.PhaseProcessingChunks)
	for i, j := range chunks {
		rows := int64(1000)
		if j.Labels[worker.LabelChunk] == "3" {
			rows = 500
		}
		res := okResult(rows)
		res.Chunk = i
		finishJob(t, &j, res, 0, "")
	}
	obj = waitPhase(t, obj, v1alpha1.PhaseCompleted)
	st := obj.Status
	if st.Records.Total != 3500 || st.Records.Processed != 3500 || st.Records.Failed != 0 || st.CompletedChunks != "0-3" ||
		st.Progress != "4/4" || st.Usage == nil || st.Usage.VectorsUpserted != 3500 || st.CompletionTime == nil {
		t.Errorf("status after completion: %s", mustJSON(st))
	}
	for _, c := range st.Conditions {
		if c.ObservedGeneration != obj.Generation {
			t.Errorf("condition %s observedGeneration %d, want %d", c.Type, c.ObservedGeneration, obj.Generation)
		}
	}
	if !meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionComplete) || !meta.IsStatusConditionTrue(st.Conditions, v1alpha1.ConditionPlanned) {
		t.Errorf("conditions: %s", mustJSON(st.Conditions))
	}
	eventually(t, "task item completed", 15*time.Second, func() (bool, string) {
		item, chunks := taskItem(t, obj.Spec.TaskID)
		ok := item.Status == "completed" && item.TotalRecords == 3500 && item.ProcessedRecords == 3500 && item.ChunksTotal == 4 &&
			item.ChunksCompleted == 4 && item.VectorsUpserted == 3500 && item.ProgressPercentage == 100 && !item.CompletedAt.IsZero() &&
			len(chunks) == 4 && chunks["chunk_0003"].StartRow == 3000 && chunks["chunk_0003"].EndRow == 3499 && chunks["chunk_0003"].Status == "completed"
		return ok, fmt.Sprintf("%+v %+v", item, chunks)
	})
	wantEvents(t, obj, "Planned", "Completed")
	eventually(t, "finalizer removed", 15*time.Second, func() (bool, string) {
		got := get(t, obj)
		return !slices.Contains(got.Finalizers, controllers.FinalizerTaskCancel), "a finished ingestion keeps no finalizer"
	})
	// Recorded (and mirrored): the Jobs get their TTL and the pods lose the outcome finalizer.
	eventually(t, "jobs and pods released", 15*time.Second, func() (bool, string) {
		for _, j := range listJobs(t, obj, worker.RoleChunk) {
			if j.Spec.TTLSecondsAfterFinished == nil || *j.Spec.TTLSecondsAfterFinished != 3600 {
				return false, j.Name + " has no TTL"
			}
		}
		for _, p := range listPods(t, obj) {
			if slices.Contains(p.Finalizers, worker.FinalizerOutcome) {
				return false, p.Name + " still held"
			}
		}
		return true, ""
	})
}

func listPods(t *testing.T, obj *v1alpha1.CsvIngestion) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := cluster.Client.List(context.Background(), &pods, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelUID: string(obj.UID)}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func wantEvents(t *testing.T, obj *v1alpha1.CsvIngestion, reasons ...string) {
	t.Helper()
	eventually(t, "events "+strings.Join(reasons, ","), 15*time.Second, func() (bool, string) {
		var evs eventsv1.EventList
		if err := cluster.Client.List(context.Background(), &evs, client.InNamespace(obj.Namespace)); err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			if e.Regarding.UID == obj.UID {
				seen[e.Reason] = true
			}
		}
		for _, r := range reasons {
			if !seen[r] {
				return false, fmt.Sprintf("no %s event in %v", r, seen)
			}
		}
		return true, ""
	})
}

// drive finishes running chunk Jobs one at a time (lowest first) until the ingestion is terminal,
// checking after each step that no more than parallelism chunks run.
func drive(t *testing.T, obj *v1alpha1.CsvIngestion, rowsPerChunk int64, result func(i int) (worker.Result, int32, string), step func(n int)) *v1alpha1.CsvIngestion {
	t.Helper()
	finishedJobs := map[string]bool{}
	for n := 0; ; n++ {
		cur := get(t, obj)
		if cur.Status.Phase.Terminal() {
			return cur
		}
		if step != nil {
			step(n)
			cur = get(t, obj)
		}
		var next *batchv1.Job
		eventually(t, "a running chunk", 30*time.Second, func() (bool, string) {
			cur = get(t, obj)
			if cur.Status.Phase.Terminal() {
				return true, ""
			}
			running := runningChunkJobs(t, obj)
			limit := int(cur.Spec.Chunking.Parallelism)
			if cur.Status.ObservedGeneration == cur.Generation && len(running) > limit {
				t.Fatalf("%d chunk jobs running, parallelism %d", len(running), limit)
			}
			for i := range running {
				if !finishedJobs[running[i].Name] {
					next = &running[i]
					return true, ""
				}
			}
			return false, fmt.Sprintf("phase %s, %d running", cur.Status.Phase, len(running))
		})
		if cur.Status.Phase.Terminal() {
			return cur
		}
		var i int
		fmt.Sscan(next.Labels[worker.LabelChunk], &i)
		res, code, reason := result(i)
		finishedJobs[next.Name] = true
		finishJob(t, next, res, code, reason)
	}
}

func TestParallelismNeverExceeded(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "parallel", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 3 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 20000, 1000)
	setParallelism := func(p int32) {
		update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = p })
		eventually(t, fmt.Sprintf("parallelism %d applied", p), 30*time.Second, func() (bool, string) {
			cur := get(t, obj)
			n := len(runningChunkJobs(t, obj))
			return cur.Status.ObservedGeneration == cur.Generation && n <= int(p) && (n == int(p) || cur.Status.Chunks.Pending == 0),
				fmt.Sprintf("%d running", n)
		})
	}
	final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }, func(n int) {
		switch n {
		case 4:
			setParallelism(6)
		case 10:
			setParallelism(2)
		}
	})
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 20000 || final.Status.CompletedChunks != "0-19" {
		t.Fatalf("final status %s", mustJSON(final.Status))
	}
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 20 {
		t.Errorf("%d chunk jobs created, want 20", n)
	}
}

func TestTerminalPhases(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)

	t.Run("PartiallyCompleted", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "partial", nil))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 4000, 1000)
		final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
			r := okResult(1000)
			if i == 2 {
				r.Processed, r.Failed, r.VectorsUpserted = 990, 10, 990
				r.FailedSamples = []worker.FailedRow{{Row: 2005, Reason: "missing_id"}}
			}
			return r, 0, ""
		}, nil)
		if final.Status.Phase != v1alpha1.PhasePartiallyCompleted || final.Status.Records.Failed != 10 || final.Status.Records.Processed != 3990 {
			t.Fatalf("status %s", mustJSON(final.Status))
		}
		if !meta.IsStatusConditionTrue(final.Status.Conditions, v1alpha1.ConditionComplete) {
			t.Errorf("PartiallyCompleted sets Complete=True")
		}
		eventually(t, "task item partially_completed", 15*time.Second, func() (bool, string) {
			item, _ := taskItem(t, final.Spec.TaskID)
			return item.Status == "partially_completed" && item.FailedRecords == 10, fmt.Sprintf("%+v", item)
		})
		wantEvents(t, obj, "PartiallyCompleted")
	})

	t.Run("FailedOnPermanentError", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "permanent", nil))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 8000, 1000)
		final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
			if i == 1 {
				return worker.Result{Role: "chunk", Reason: worker.ReasonUnauthorized, Error: "openai: 401 Incorrect API key provided"}, worker.ExitPermanent, batchv1.JobReasonPodFailurePolicy
			}
			return okResult(1000), 0, ""
		}, nil)
		if final.Status.Phase != v1alpha1.PhaseFailed {
			t.Fatalf("phase %s", final.Status.Phase)
		}
		c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
		if c == nil || c.Status != "True" || c.Reason != worker.ReasonUnauthorized || !strings.Contains(c.Message, "401 Incorrect API key") {
			t.Fatalf("Failed condition %+v", c)
		}
		if len(final.Status.FailedChunks) != 1 || final.Status.FailedChunks[0].Index != 1 || final.Status.FailedChunks[0].Rows != "1000-1999" {
			t.Errorf("failedChunks %+v", final.Status.FailedChunks)
		}
		eventually(t, "running jobs deleted", 15*time.Second, func() (bool, string) {
			n := len(runningChunkJobs(t, obj))
			return n == 0, fmt.Sprintf("%d running", n)
		})
		eventually(t, "task item failed", 15*time.Second, func() (bool, string) {
			item, chunks := taskItem(t, final.Spec.TaskID)
			return item.Status == "failed" && strings.Contains(item.ErrorMessage, "401") && chunks["chunk_0001"].Status == "failed", fmt.Sprintf("%+v", item)
		})
		wantEvents(t, obj, "ChunkFailed", "Failed")
	})

	t.Run("FailedOnTooManyFailedRows", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "toomany", nil))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 10000, 1000)
		final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
			r := okResult(1000)
			r.Processed, r.Failed = 940, 60 // 6% of a chunk: over the 1% budget of the file after two chunks
			return r, 0, ""
		}, nil)
		c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
		if final.Status.Phase != v1alpha1.PhaseFailed || c == nil || c.Reason != "TooManyFailedRows" {
			t.Fatalf("status %s", mustJSON(final.Status))
		}
		if final.Status.Records.Failed <= 100 {
			t.Errorf("failed rows %d should be over the budget of 100", final.Status.Records.Failed)
		}
	})

	t.Run("FailedChunkOutOfRetriesWithinBudget", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "outofretries", func(o *v1alpha1.CsvIngestion) {
			o.Spec.Chunking.MaxFailedRowsPercent = 20
		}))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 10000, 1000)
		final := drive(t, obj, 1000, func(i int) (worker.Result, int32, string) {
			if i == 4 {
				return worker.Result{Role: "chunk", Error: "pinecone: unavailable"}, 1, batchv1.JobReasonBackoffLimitExceeded
			}
			return okResult(1000), 0, ""
		}, nil)
		if final.Status.Phase != v1alpha1.PhasePartiallyCompleted || final.Status.Records.Failed != 1000 || final.Status.FailedChunkIndexes != "4" ||
			final.Status.CompletedChunks != "0-3,5-9" {
			t.Fatalf("status %s", mustJSON(final.Status))
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "cancel", nil))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 10000, 1000)
		eventually(t, "running", 15*time.Second, func() (bool, string) { return len(runningChunkJobs(t, obj)) == 4, "" })
		update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Cancel = true })
		final := waitPhase(t, obj, v1alpha1.PhaseCancelled)
		eventually(t, "jobs deleted", 15*time.Second, func() (bool, string) {
			n := len(runningChunkJobs(t, obj))
			return n == 0, fmt.Sprintf("%d running", n)
		})
		eventually(t, "task item cancelled", 15*time.Second, func() (bool, string) {
			item, _ := taskItem(t, final.Spec.TaskID)
			return item.Status == "cancelled", item.Status
		})
		wantEvents(t, obj, "Cancelled")
	})

	t.Run("DryRun", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "dryrun", func(o *v1alpha1.CsvIngestion) { o.Spec.DryRun = true }))
		waitPhase(t, obj, v1alpha1.PhasePlanning)
		writePlan(t, obj, 100000, 1000)
		final := waitPhase(t, obj, v1alpha1.PhaseCompleted)
		c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionComplete)
		if c == nil || c.Reason != "DryRun" {
			t.Errorf("Complete condition %+v, want reason DryRun", c)
		}
		e := final.Status.Estimate
		// 100,000 rows × 150 tokens at 1M TPM is 15 minutes; 49 requests at 300 RPM is less.
		if e == nil || e.Tokens != 15000000 || e.CostUSD != "0.30" || e.MinDuration != "15m0s" {
			t.Errorf("estimate %+v", e)
		}
		if n := len(listJobs(t, obj, worker.RoleChunk)); n != 0 {
			t.Errorf("dry run created %d chunk jobs", n)
		}
	})

	t.Run("PlannerFailed", func(t *testing.T) {
		obj := create(t, newIngestion(ns, "badheader", nil))
		planner := waitJob(t, ns, worker.PlanJobName(obj.Name))
		msg := `the header lacks column(s) formatted_text; header: id,text,record_type`
		finishJob(t, planner, worker.Result{Role: "plan", Reason: worker.ReasonHeaderMismatch, Error: msg}, worker.ExitPermanent, batchv1.JobReasonPodFailurePolicy)
		final := waitPhase(t, obj, v1alpha1.PhaseFailed)
		c := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
		if c == nil || c.Reason != worker.ReasonHeaderMismatch || !strings.Contains(c.Message, msg) {
			t.Fatalf("Failed condition %+v", c)
		}
	})
}

func TestSuspendResume(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "suspend", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 5000, 1000)
	eventually(t, "2 running", 15*time.Second, func() (bool, string) { return len(runningChunkJobs(t, obj)) == 2, "" })

	setSuspend := func(s bool) { update(t, obj, func(o *v1alpha1.CsvIngestion) { o.Spec.Suspend = s }) }
	setSuspend(true)
	eventually(t, "suspended", 15*time.Second, func() (bool, string) {
		cur := get(t, obj)
		jobs := listJobs(t, obj, worker.RoleChunk)
		for _, j := range jobs {
			if j.Spec.Suspend == nil || !*j.Spec.Suspend {
				return false, j.Name + " not suspended"
			}
		}
		return len(jobs) == 2 && meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionSuspended) &&
			cur.Status.ObservedGeneration == cur.Generation, fmt.Sprintf("%d jobs", len(jobs))
	})
	consistently(t, "no new chunk job while suspended", 2*time.Second, func() (bool, string) {
		n := len(listJobs(t, obj, worker.RoleChunk))
		return n == 2, fmt.Sprintf("%d chunk jobs exist while suspended", n)
	})
	// A suspended ingestion is not stalled: the stalled alert's series is gone.
	if progressSeries(t, ns, "suspend") {
		t.Fatal("vectordb_ingestion_last_progress_timestamp_seconds is exported while suspended")
	}
	setSuspend(false)
	eventually(t, "progress clock restarted", 15*time.Second, func() (bool, string) { return progressSeries(t, ns, "suspend"), "" })
	final := drive(t, obj, 1000, func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }, nil)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 5000 {
		t.Fatalf("status %s", mustJSON(final.Status))
	}
	wantEvents(t, obj, "Suspended", "Resumed", "Completed")
}

// progressSeries reports whether the last-progress gauge has a series for the ingestion.
func progressSeries(t *testing.T, namespace, name string) bool {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "vectordb_ingestion_last_progress_timestamp_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == namespace && labels["name"] == name {
				return true
			}
		}
	}
	return false
}

func TestDeleteMidRunCancelsTask(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "deleted", nil))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 10000, 1000)
	eventually(t, "running with finalizer", 15*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return len(runningChunkJobs(t, obj)) == 4 && slices.Contains(cur.Finalizers, controllers.FinalizerTaskCancel), ""
	})
	if err := cluster.Client.Delete(context.Background(), get(t, obj)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ingestion gone", 20*time.Second, func() (bool, string) {
		err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
		return err != nil && ignoreNotFound(err) == nil, fmt.Sprint(err)
	})
	item, _ := taskItem(t, obj.Spec.TaskID)
	if item.Status != "cancelled" || item.CompletedAt.IsZero() {
		t.Fatalf("task item after delete: %+v", item)
	}
	// Garbage collection of the Jobs is kube-controller-manager's (the end-to-end suite checks
	// it); here every Job must at least be owned by the ingestion so it will be collected.
	for _, j := range listJobs(t, obj, worker.RoleChunk) {
		if len(j.OwnerReferences) != 1 || j.OwnerReferences[0].UID != obj.UID {
			t.Errorf("job %s not owned by the ingestion", j.Name)
		}
	}
}

func TestDeleteWithTaskTableDownIsBounded(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, nil, ns)
	obj := create(t, newIngestion(ns, "notable", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Tracking.DynamoDB.Table = "no-such-table"
	}))
	eventually(t, "tracking degraded", 20*time.Second, func() (bool, string) {
		cur := get(t, obj)
		return meta.IsStatusConditionTrue(cur.Status.Conditions, v1alpha1.ConditionTrackingDegraded), cur.Status.Message
	})
	wantEvents(t, obj, "TrackingDegraded")
	if get(t, obj).Status.Phase != v1alpha1.PhasePlanning {
		t.Errorf("ingestion must go on without its task table")
	}
	start := time.Now()
	if err := cluster.Client.Delete(context.Background(), get(t, obj)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ingestion gone despite the missing table", 30*time.Second, func() (bool, string) {
		err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.CsvIngestion{})
		return err != nil, ""
	})
	t.Logf("deletion with an unreachable task table took %s (finalizer timeout 5s)", time.Since(start).Round(time.Second))
}

func TestManagerRestartRedoesNothing(t *testing.T) {
	ns := newNamespace(t)
	first := &callCounter{byVerb: map[string]int{}}
	stop := startManager(t, first, ns)
	obj := create(t, newIngestion(ns, "restart", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 3 }))
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, obj, 10000, 1000)
	done := 0
	result := func(int) (worker.Result, int32, string) { return okResult(1000), 0, "" }
	for done < 4 {
		var next []batchv1.Job
		eventually(t, "running chunks", 15*time.Second, func() (bool, string) {
			next = runningChunkJobs(t, obj)
			return len(next) > 0 && get(t, obj).Status.Chunks.Succeeded == int32(done), ""
		})
		r, c, s := result(0)
		finishJob(t, &next[0], r, c, s)
		done++
	}
	eventually(t, "4 recorded", 15*time.Second, func() (bool, string) { return get(t, obj).Status.Chunks.Succeeded == 4, "" })
	stop()
	// While no controller runs, two more chunks finish.
	for _, j := range runningChunkJobs(t, obj)[:2] {
		r, c, s := result(0)
		finishJob(t, &j, r, c, s)
	}
	second := &callCounter{byVerb: map[string]int{}}
	startManager(t, second, ns)
	final := drive(t, obj, 1000, result, nil)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 10000 || final.Status.Usage.VectorsUpserted != 10000 ||
		final.Status.CompletedChunks != "0-9" {
		t.Fatalf("status after restart %s", mustJSON(final.Status))
	}
	created := first.snapshot()["create *v1.Job"] + second.snapshot()["create *v1.Job"]
	if created != 11 { // the planner and ten chunks, each once
		t.Errorf("jobs created %d times across both managers, want 11 (first %v, second %v)", created, first.snapshot(), second.snapshot())
	}
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 10 {
		t.Errorf("%d chunk jobs exist, want 10", n)
	}
}
