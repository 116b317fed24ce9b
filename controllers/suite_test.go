package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/panics"
	"github.com/vectordb-io/vectordb-operator/test/poll"
)

const taskTable = "vectordb-tasks-test"

var (
	cluster *harness.Cluster
	dyn     *harness.Dynalite
	nsSeq   atomic.Int64
)

func TestMain(m *testing.M) {
	code, err := runSuite(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runSuite(m *testing.M) (int, error) {
	var err error
	if cluster, err = harness.NewCluster(harness.ClusterOptions{}); err != nil {
		return 0, fmt.Errorf("start cluster: %w", err)
	}
	defer cluster.Stop()
	if dyn, err = harness.NewDynalite(); err != nil {
		return 0, fmt.Errorf("start dynalite: %w", err)
	}
	defer dyn.Stop()
	// The tracker uses the SDK's default credential chain; dynalite accepts any key.
	os.Setenv("AWS_ACCESS_KEY_ID", "test")
	os.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	if err := tasktable.EnsureTable(context.Background(), dyn.Client(), taskTable); err != nil {
		return 0, fmt.Errorf("create task table: %w", err)
	}
	code := m.Run()
	// The manager recovers a panicking Reconcile, so nothing else would fail on one: any
	// reconcile panic in any test fails the suite (startManager also names the test).
	counts, err := panics.FromGatherer(ctrlmetrics.Registry)
	if err != nil {
		return 0, err
	}
	if err := counts.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		code = 1
	}
	return code, nil
}

// callCounter counts the manager's API writes and reads that reach the API server.
type callCounter struct {
	mu     sync.Mutex
	byVerb map[string]int
}

func (c *callCounter) add(verb string) {
	c.mu.Lock()
	c.byVerb[verb]++
	c.mu.Unlock()
}

func (c *callCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.byVerb {
		out[k] = v
	}
	return out
}

func (c *callCounter) total() int {
	n := 0
	for _, v := range c.snapshot() {
		n += v
	}
	return n
}

func (c *callCounter) wrap(cl client.WithWatch) client.Client {
	kind := func(o client.Object) string { return fmt.Sprintf("%T", o) }
	return interceptor.NewClient(cl, interceptor.Funcs{
		Create: func(ctx context.Context, w client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			c.add("create " + kind(o))
			return w.Create(ctx, o, opts...)
		},
		Update: func(ctx context.Context, w client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
			c.add("update " + kind(o))
			return w.Update(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, w client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			c.add("patch " + kind(o))
			return w.Patch(ctx, o, p, opts...)
		},
		Delete: func(ctx context.Context, w client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			c.add("delete " + kind(o))
			return w.Delete(ctx, o, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, w client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			c.add("update " + kind(o) + "/" + sub)
			return w.SubResource(sub).Update(ctx, o, opts...)
		},
		SubResourcePatch: func(ctx context.Context, w client.Client, sub string, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			c.add("patch " + kind(o) + "/" + sub)
			return w.SubResource(sub).Patch(ctx, o, p, opts...)
		},
	})
}

// startManager runs the real manager (its cache, controller and tracker) against the test
// API server, as cmd/manager would, and returns a function that stops it.
func startManager(t *testing.T, counter *callCounter, namespaces ...string) func() {
	t.Helper()
	return startManagerWith(t, counter, nil, namespaces...)
}

// startManagerWith is startManager with options changed by mutate (when not nil).
func startManagerWith(t *testing.T, counter *callCounter, mutate func(*manager.Options), namespaces ...string) func() {
	t.Helper()
	o := manager.DefaultOptions()
	o.RESTConfig = cluster.Config
	o.MetricsAddr = "0"
	o.ProbeAddr = "0"
	o.WatchNamespaces = namespaces
	if len(namespaces) > 0 {
		// The writers records (Leases) of each test's runs stay in its own namespace.
		o.LeaderElectionNamespace = namespaces[0]
	}
	o.DynamoDBEndpoint = dyn.Endpoint
	o.Controller.EmbedderImage = "vectordb-embedder:test"
	o.Controller.SkipNameValidation = true
	o.Controller.FinalizerTimeout = 5 * time.Second
	o.Shim.Addr = "127.0.0.1:0"
	o.Shim.APIEnabled = false
	if counter != nil {
		o.WrapClient = counter.wrap
	}
	if mutate != nil {
		mutate(&o)
	}
	base, err := panics.FromGatherer(ctrlmetrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- manager.Run(ctx, o) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("manager: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("manager did not stop")
			}
			if now, err := panics.FromGatherer(ctrlmetrics.Registry); err != nil {
				t.Error(err)
			} else if err := now.Since(base).Err(); err != nil {
				t.Errorf("while this test's manager ran: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("ctl-%d", nsSeq.Add(1))
	if err := cluster.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func newIngestion(ns, name string, mutate func(*v1alpha1.CsvIngestion)) *v1alpha1.CsvIngestion {
	obj := &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.CsvIngestionSpec{
			TaskID: ns + "-" + name,
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: "csv-storage", Key: "exports/239.csv",
				S3Connection: v1alpha1.S3Connection{CredentialsSecretRef: &v1alpha1.S3CredentialsSecretRef{Name: "s3-creds"}}}},
			Mapping: v1alpha1.MappingSpec{IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy"},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small",
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai", Key: "api-key"}, RequestsPerMinute: 300, TokensPerMinute: 1000000},
			Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: "clickbid-prod", Namespace: "v2",
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "pinecone", Key: "api-key"}}},
			Chunking: v1alpha1.ChunkingSpec{RowsPerChunk: 1000, Parallelism: 4, RetriesPerChunk: 3, MaxFailedRowsPercent: 1,
				ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute}},
			Tracking: &v1alpha1.TrackingSpec{DynamoDB: &v1alpha1.DynamoDBTracking{Table: taskTable}},
		},
	}
	if mutate != nil {
		mutate(obj)
	}
	return obj
}

func create(t *testing.T, obj *v1alpha1.CsvIngestion) *v1alpha1.CsvIngestion {
	t.Helper()
	if err := cluster.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create ingestion: %v", err)
	}
	return obj
}

func get(t *testing.T, obj *v1alpha1.CsvIngestion) *v1alpha1.CsvIngestion {
	t.Helper()
	out := &v1alpha1.CsvIngestion{}
	if err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), out); err != nil {
		t.Fatalf("get ingestion: %v", err)
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
}

// consistently checks that cond holds for the whole of d (poll.Holds).
func consistently(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll.Holds(t, what, d, 100*time.Millisecond, cond)
}

func waitPhase(t *testing.T, obj *v1alpha1.CsvIngestion, phase v1alpha1.Phase) *v1alpha1.CsvIngestion {
	t.Helper()
	var cur *v1alpha1.CsvIngestion
	eventually(t, "phase "+string(phase), 30*time.Second, func() (bool, string) {
		cur = get(t, obj)
		return cur.Status.Phase == phase && cur.Status.ObservedGeneration == cur.Generation,
			fmt.Sprintf("phase %q (gen %d/%d): %s", cur.Status.Phase, cur.Status.ObservedGeneration, cur.Generation, cur.Status.Message)
	})
	return cur
}

func listJobs(t *testing.T, obj *v1alpha1.CsvIngestion, role string) []batchv1.Job {
	t.Helper()
	var jobs batchv1.JobList
	if err := cluster.Client.List(context.Background(), &jobs, client.InNamespace(obj.Namespace),
		client.MatchingLabels{worker.LabelName: obj.Name, worker.LabelRole: role}); err != nil {
		t.Fatal(err)
	}
	return jobs.Items
}

func getJob(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	j := &batchv1.Job{}
	if err := cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, j); err != nil {
		t.Fatalf("get job %s: %v", name, err)
	}
	return j
}

func waitJob(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	j := &batchv1.Job{}
	eventually(t, "job "+name, 30*time.Second, func() (bool, string) {
		err := cluster.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, j)
		return err == nil, fmt.Sprint(err)
	})
	return j
}

// writePlan does what the planner does: the plan ConfigMap, owned by the ingestion.
func writePlan(t *testing.T, obj *v1alpha1.CsvIngestion, totalRows, rowsPerChunk int64) *worker.Plan {
	t.Helper()
	obj = get(t, obj)
	chunks := (totalRows + rowsPerChunk - 1) / rowsPerChunk
	plan := &worker.Plan{Bucket: "csv-storage", Key: "exports/239.csv", ETag: `"etag-1"`, SizeBytes: totalRows * 100,
		Compression: "none", Header: []string{"id", "formatted_text", "record_type"}, TotalRows: totalRows,
		RowsPerChunk: rowsPerChunk, EstimatedTokens: totalRows * 150, EstimatedCostUSD: "0.30"}
	for i := int64(0); i <= chunks; i++ {
		off := 40 + i*rowsPerChunk*100
		if i == chunks {
			off = 40 + totalRows*100
		}
		plan.Offsets = append(plan.Offsets, off)
	}
	data, err := plan.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: worker.PlanConfigMapName(obj.Name), Namespace: obj.Namespace,
			Labels: map[string]string{worker.LabelName: obj.Name, worker.LabelUID: string(obj.UID),
				worker.LabelTaskID: worker.LabelValue(obj.EffectiveTaskID()), worker.LabelRole: worker.RolePlan},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "CsvIngestion",
				Name: obj.Name, UID: obj.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		Data: map[string]string{worker.PlanDataKey: data},
	}
	if err := cluster.Client.Create(context.Background(), cm); err != nil {
		t.Fatalf("write plan: %v", err)
	}
	return plan
}

// finishJob plays kubelet and Job controller: a terminated pod with the embedder's termination
// message, then the Job's terminal conditions.
func finishJob(t *testing.T, job *batchv1.Job, res worker.Result, exitCode int32, failReason string) {
	t.Helper()
	if err := finishJobErr(job, res, exitCode, failReason); err != nil {
		t.Fatal(err)
	}
}

// finishJobErr is finishJob for goroutines.
func finishJobErr(job *batchv1.Job, res worker.Result, exitCode int32, failReason string) error {
	ctx := context.Background()
	msg := string(res.Encode())
	phase := corev1.PodSucceeded
	if exitCode != 0 {
		phase = corev1.PodFailed
	}
	labels := map[string]string{"batch.kubernetes.io/job-name": job.Name, "job-name": job.Name}
	for k, v := range job.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: job.Name + "-", Namespace: job.Namespace, Labels: labels,
			Annotations: job.Spec.Template.Annotations, Finalizers: job.Spec.Template.Finalizers,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}},
		},
		Spec: job.Spec.Template.Spec,
	}
	if err := cluster.Client.Create(ctx, pod); err != nil {
		return fmt.Errorf("create pod: %w", err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "embedder", Image: job.Spec.Template.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exitCode, Message: msg, StartedAt: now, FinishedAt: now}},
	}}}
	if err := cluster.Client.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("update pod status: %w", err)
	}
	j := &batchv1.Job{}
	if err := cluster.Client.Get(ctx, types.NamespacedName{Namespace: job.Namespace, Name: job.Name}, j); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // the controller deleted it meanwhile (the ingestion ended)
		}
		return fmt.Errorf("get job %s: %w", job.Name, err)
	}
	start := metav1.NewTime(now.Add(-5 * time.Second))
	j.Status.StartTime = &start
	if exitCode == 0 {
		j.Status.Succeeded = 1
		j.Status.CompletionTime = &now
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now},
			batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now})
	} else {
		j.Status.Failed = 1
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: failReason, Message: "job failed", LastTransitionTime: now, LastProbeTime: now},
			batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: failReason, Message: "job failed", LastTransitionTime: now, LastProbeTime: now})
	}
	if err := cluster.Client.Status().Update(ctx, j); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("update job status: %w", err)
	}
	return nil
}

// failAttempt plays the kubelet for one failed attempt of a Job that will be retried: a failed
// pod with the embedder's message; the Job stays active.
func failAttempt(t *testing.T, job *batchv1.Job, res worker.Result) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"batch.kubernetes.io/job-name": job.Name, "job-name": job.Name}
	for k, v := range job.Spec.Template.Labels {
		labels[k] = v
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: job.Name + "-", Namespace: job.Namespace, Labels: labels,
			Annotations: job.Spec.Template.Annotations, Finalizers: job.Spec.Template.Finalizers,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}},
		},
		Spec: job.Spec.Template.Spec,
	}
	if err := cluster.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{
		Name: "embedder", Image: job.Spec.Template.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: string(res.Encode()), StartedAt: now, FinishedAt: now}},
	}}}
	if err := cluster.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// runningChunkJobs are the chunk Jobs neither finished nor suspended.
func runningChunkJobs(t *testing.T, obj *v1alpha1.CsvIngestion) []batchv1.Job {
	var out []batchv1.Job
	for _, j := range listJobs(t, obj, worker.RoleChunk) {
		if finished(&j) || (j.Spec.Suspend != nil && *j.Spec.Suspend) || !j.DeletionTimestamp.IsZero() {
			continue
		}
		out = append(out, j)
	}
	return out
}

func finished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func okResult(rows int64) worker.Result {
	return worker.Result{Role: "chunk", RowsRead: rows, Processed: rows, VectorsUpserted: rows, Tokens: rows * 150, Requests: 1, DurationMillis: 5000}
}

func taskItem(t *testing.T, taskID string) (*tasktable.Task, map[string]tasktable.ChunkEntry) {
	t.Helper()
	task, chunks, err := tasktable.NewFromAPI(dyn.Client(), taskTable).Get(context.Background(), taskID)
	if err != nil {
		t.Fatalf("task item %s: %v", taskID, err)
	}
	return task, chunks
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// update changes the spec, retrying on conflicts with the controller's status writes.
func update(t *testing.T, obj *v1alpha1.CsvIngestion, mutate func(*v1alpha1.CsvIngestion)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := get(t, obj)
		mutate(cur)
		return cluster.Client.Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatalf("update %s: %v", obj.Name, err)
	}
}

// enforcePolicy binds policy to namespace ns, creates both, deletes them when the test ends
// (before cleanups registered earlier), and waits until probe sees the API server enforce it.
// lift deletes the binding, so the API server stops enforcing it.
func enforcePolicy(t *testing.T, ns string, policy *admissionregistrationv1.ValidatingAdmissionPolicy, probe func() (bool, string)) (lift func()) {
	t.Helper()
	ctx := context.Background()
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policy.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}},
		},
	}
	for _, o := range []client.Object{policy, binding} {
		if err := cluster.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = cluster.Client.Delete(ctx, binding)
		_ = cluster.Client.Delete(ctx, policy)
	})
	eventually(t, "policy enforced", 30*time.Second, probe)
	return func() {
		t.Helper()
		if err := cluster.Client.Delete(ctx, binding); err != nil {
			t.Fatal(err)
		}
	}
}

// denyJobs makes the API server refuse the creation of Jobs with the given role in ns (an
// admission policy, as a quota or a cluster's policy would) until the test ends.
func denyJobs(t *testing.T, ns, role string) (lift func()) {
	t.Helper()
	ctx := context.Background()
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-" + role + "-" + ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{"batch"}, APIVersions: []string{"v1"}, Resources: []string{"jobs"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: fmt.Sprintf(`!has(object.metadata.labels) || !('ingestion.vectordb.io/role' in object.metadata.labels) || object.metadata.labels['ingestion.vectordb.io/role'] != %q`, role),
				Message:    role + " Jobs are not allowed here by policy",
			}},
		},
	}
	return enforcePolicy(t, ns, policy, func() (bool, string) {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns, Labels: map[string]string{worker.LabelRole: role}},
			Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "c", Image: "x"}}}}}}
		err := cluster.Client.Create(ctx, j, client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "not allowed here by policy"), fmt.Sprint(err)
	})
}
