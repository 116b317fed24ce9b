package podrunner_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/podrunner"
)

const (
	ns = "default"
	// waitTimeout bounds every wait; generous because the Job controller backs off 10 s, 20 s…
	// between retries and the machines are shared.
	waitTimeout = 3 * time.Minute
	// fakeImage is mapped by repository (any tag); exactImage only as written.
	fakeImage  = "example.com/fakeworker:v1"
	exactImage = "exact.example.com/worker:v2"
)

type env struct {
	cs         kubernetes.Interface
	runner     *podrunner.Runner
	kubeconfig string
}

func TestRunnerRunsJobs(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{ControllerManager: true, NoCRDs: true})
	bin := buildFakeWorker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	r, err := podrunner.Start(ctx, podrunner.Options{
		Config:     c.Config,
		Kubeconfig: c.Kubeconfig,
		Images:     map[string]string{"example.com/fakeworker": bin, exactImage: bin},
		WorkDir:    t.TempDir(),
		ExtraEnv:   []string{"RUNNER_EXTRA=from-runner"},
		Logger:     testr.New(t),
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(r.Stop)
	e := &env{cs: kubernetes.NewForConfigOrDie(c.Config), runner: r, kubeconfig: c.Kubeconfig}

	t.Run("node is registered Ready", func(t *testing.T) {
		node, err := e.cs.CoreV1().Nodes().Get(ctx, podrunner.DefaultNodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get node: %v", err)
		}
		if !nodeReady(node) {
			t.Fatalf("node conditions = %+v, want Ready=True", node.Status.Conditions)
		}
		if node.Status.Allocatable.Cpu().IsZero() || node.Status.Allocatable.Pods().IsZero() {
			t.Errorf("node allocatable = %v, want cpu and pods", node.Status.Allocatable)
		}
	})

	t.Run("jobs", func(t *testing.T) {
		t.Run("completes with termination message, resolved env and logs", func(t *testing.T) {
			t.Parallel()
			e.testComplete(ctx, t)
		})
		t.Run("secretKeyRef waits for its Secret", func(t *testing.T) {
			t.Parallel()
			e.testSecretEnv(ctx, t)
		})
		t.Run("exit code in podFailurePolicy fails the Job at once", func(t *testing.T) {
			t.Parallel()
			e.testFailurePolicy(ctx, t)
		})
		t.Run("failing pods are retried up to backoffLimit", func(t *testing.T) {
			t.Parallel()
			e.testBackoffLimit(ctx, t)
		})
		t.Run("killed process is retried", func(t *testing.T) {
			t.Parallel()
			e.testKill(ctx, t)
		})
		t.Run("pod activeDeadlineSeconds", func(t *testing.T) {
			t.Parallel()
			e.testPodDeadline(ctx, t)
		})
		t.Run("deleting the Job kills its process", func(t *testing.T) {
			t.Parallel()
			e.testDeleteJob(ctx, t)
		})
		t.Run("unknown image fails the pod", func(t *testing.T) {
			t.Parallel()
			e.testUnknownImage(ctx, t)
		})
		t.Run("unmatched nodeSelector stays unscheduled", func(t *testing.T) {
			t.Parallel()
			e.testNodeSelector(ctx, t)
		})
		t.Run("logs through the API server", func(t *testing.T) {
			t.Parallel()
			e.testLogs(ctx, t)
		})
		t.Run("logs follow a running process", func(t *testing.T) {
			t.Parallel()
			e.testLogsFollow(ctx, t)
		})
	})

	t.Run("Stop kills running processes", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		job := e.createJob(ctx, t, newJob("stop", "-sleep", "1h", "-pid-file", pidFile))
		pod := e.waitProcess(ctx, t, job.Name)
		pid := waitPID(ctx, t, pidFile)
		r.Stop()
		if running := r.Running(); len(running) != 0 {
			t.Errorf("Running() after Stop = %v, want none", running)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d of pod %s still exists after Stop (kill 0: %v)", pid, pod, err)
		}
	})
}

func (e *env) testComplete(ctx context.Context, t *testing.T) {
	if _, err := e.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "complete-cm", Namespace: ns},
		Data:       map[string]string{"greeting": "hi from configmap"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	job := newJob("complete", "-msg", "done", "-stdout", "hello on stdout",
		"-msg-env", "KUBECONFIG,RUNNER_EXTRA,POD_NAME,ROLE,FROM_CM,PLAIN,MEM_LIMIT,CPU_REQUEST_M,NO_CPU_LIMIT")
	job.Spec.Template.Labels = map[string]string{"role": "tester"}
	c0 := &job.Spec.Template.Spec.Containers[0]
	c0.Resources = corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
	}
	job.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "PLAIN", Value: "plain value"},
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "ROLE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['role']"}}},
		{Name: "FROM_CM", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "complete-cm"}, Key: "greeting"}}},
		{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: c0.Name, Resource: "limits.memory"}}},
		{Name: "CPU_REQUEST_M", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: c0.Name, Resource: "requests.cpu", Divisor: resource.MustParse("1m")}}},
		// No CPU limit: the node's allocatable, in whole cores.
		{Name: "NO_CPU_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
			ContainerName: c0.Name, Resource: "limits.cpu"}}},
	}
	job = e.createJob(ctx, t, job)
	e.waitJob(ctx, t, job.Name, batchv1.JobComplete)

	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 1 {
		t.Fatalf("job has %d pods, want 1", len(pods))
	}
	pod := pods[0]
	if pod.Status.Phase != corev1.PodSucceeded || pod.Spec.NodeName != podrunner.DefaultNodeName {
		t.Fatalf("pod phase %s on node %q, want Succeeded on %s", pod.Status.Phase, pod.Spec.NodeName, podrunner.DefaultNodeName)
	}
	term := terminated(t, &pod)
	want := "done" +
		"\nKUBECONFIG=" + e.kubeconfig +
		"\nRUNNER_EXTRA=from-runner" +
		"\nPOD_NAME=" + pod.Name +
		"\nROLE=tester" +
		"\nFROM_CM=hi from configmap" +
		"\nPLAIN=plain value" +
		"\nMEM_LIMIT=67108864" +
		"\nCPU_REQUEST_M=250" +
		"\nNO_CPU_LIMIT=64"
	if term.ExitCode != 0 || term.Reason != "Completed" || term.Message != want {
		t.Errorf("terminated = exit %d, reason %q, message %q; want 0, Completed, %q", term.ExitCode, term.Reason, term.Message, want)
	}
	if term.StartedAt.IsZero() || term.FinishedAt.Before(&term.StartedAt) {
		t.Errorf("terminated times: started %v, finished %v", term.StartedAt, term.FinishedAt)
	}
	if logs := e.runner.Logs(ns, pod.Name); !strings.Contains(logs, "hello on stdout") {
		t.Errorf("Logs = %q, want the process's stdout", logs)
	}
}

func (e *env) testSecretEnv(ctx context.Context, t *testing.T) {
	job := newJob("secret-env", "-msg-env", "TOKEN,OPTIONAL")
	job.Spec.Template.Spec.Containers[0].Image = exactImage
	job.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "late-secret"}, Key: "token"}}},
		{Name: "OPTIONAL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "absent-secret"}, Key: "k", Optional: ptr.To(true)}}},
	}
	job = e.createJob(ctx, t, job)

	var waiting *corev1.ContainerStateWaiting
	poll(ctx, t, "pod waiting with CreateContainerConfigError", func() (bool, error) {
		for _, p := range e.jobPods(ctx, t, job.Name) {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && w.Reason == "CreateContainerConfigError" {
					if p.Status.Phase != corev1.PodPending {
						return false, fmt.Errorf("pod %s phase %s with a config error, want Pending", p.Name, p.Status.Phase)
					}
					waiting = w
					return true, nil
				}
			}
		}
		return false, nil
	})
	if !strings.Contains(waiting.Message, `"late-secret"`) {
		t.Errorf("waiting message %q does not name the missing Secret", waiting.Message)
	}
	if _, err := e.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "late-secret", Namespace: ns},
		StringData: map[string]string{"token": "tok-123"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret: %v", err)
	}
	e.waitJob(ctx, t, job.Name, batchv1.JobComplete)
	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 1 {
		t.Fatalf("job has %d pods, want 1 (a config error is not a pod failure)", len(pods))
	}
	if got, want := terminated(t, &pods[0]).Message, "\nTOKEN=tok-123\nOPTIONAL=<unset>"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
}

func (e *env) testFailurePolicy(ctx context.Context, t *testing.T) {
	job := newJob("permanent", "-exit", "42", "-msg", "permanent failure")
	job.Spec.BackoffLimit = ptr.To[int32](3)
	job.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
		Action: batchv1.PodFailurePolicyActionFailJob,
		OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: ptr.To("embedder"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{42},
		},
	}}}
	job = e.createJob(ctx, t, job)
	done := e.waitJob(ctx, t, job.Name, batchv1.JobFailed)
	if reason := condition(done, batchv1.JobFailed).Reason; reason != batchv1.JobReasonPodFailurePolicy {
		t.Errorf("Failed reason = %q, want %q", reason, batchv1.JobReasonPodFailurePolicy)
	}
	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 1 || done.Status.Failed != 1 {
		t.Fatalf("job made %d pods (%d failed), want exactly 1: no retry after a FailJob exit code", len(pods), done.Status.Failed)
	}
	term := terminated(t, &pods[0])
	if term.ExitCode != 42 || term.Reason != "Error" || term.Message != "permanent failure" {
		t.Errorf("terminated = exit %d, reason %q, message %q", term.ExitCode, term.Reason, term.Message)
	}
}

func (e *env) testBackoffLimit(ctx context.Context, t *testing.T) {
	job := newJob("transient", "-exit", "1", "-stderr", "boom: transient trouble")
	job.Spec.BackoffLimit = ptr.To[int32](2)
	job = e.createJob(ctx, t, job)
	done := e.waitJob(ctx, t, job.Name, batchv1.JobFailed)
	if reason := condition(done, batchv1.JobFailed).Reason; reason != batchv1.JobReasonBackoffLimitExceeded {
		t.Errorf("Failed reason = %q, want %q", reason, batchv1.JobReasonBackoffLimitExceeded)
	}
	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 3 || done.Status.Failed != 3 {
		t.Fatalf("job made %d pods (%d failed), want 3: the first try and 2 retries", len(pods), done.Status.Failed)
	}
	for _, p := range pods {
		term := terminated(t, &p)
		// FallbackToLogsOnError: no message file written, so the log's tail is the message.
		if p.Status.Phase != corev1.PodFailed || term.ExitCode != 1 || !strings.Contains(term.Message, "boom: transient trouble") {
			t.Errorf("pod %s: phase %s, exit %d, message %q", p.Name, p.Status.Phase, term.ExitCode, term.Message)
		}
	}
}

func (e *env) testKill(ctx context.Context, t *testing.T) {
	held := filepath.Join(t.TempDir(), "held")
	job := newJob("killed", "-hold-unless", held, "-msg", "second attempt")
	job.Spec.BackoffLimit = ptr.To[int32](1)
	job = e.createJob(ctx, t, job)
	pod := e.waitProcess(ctx, t, job.Name)
	// The first attempt holds only once it has created the file; the retry then runs through.
	poll(ctx, t, "hold file", func() (bool, error) {
		_, err := os.Stat(held)
		return err == nil, nil
	})
	if err := e.runner.Kill(pod, ns); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	done := e.waitJob(ctx, t, job.Name, batchv1.JobComplete)
	if done.Status.Failed != 1 || done.Status.Succeeded != 1 {
		t.Errorf("job failed %d, succeeded %d; want 1 and 1", done.Status.Failed, done.Status.Succeeded)
	}
	for _, p := range e.jobPods(ctx, t, job.Name) {
		term := terminated(t, &p)
		switch {
		case p.Name == pod && (p.Status.Phase != corev1.PodFailed || term.ExitCode != 137):
			t.Errorf("killed pod %s: phase %s, exit %d; want Failed, 137", p.Name, p.Status.Phase, term.ExitCode)
		case p.Name != pod && (p.Status.Phase != corev1.PodSucceeded || term.Message != "second attempt"):
			t.Errorf("retry pod %s: phase %s, message %q", p.Name, p.Status.Phase, term.Message)
		}
	}
	if err := e.runner.Kill(pod, ns); err == nil {
		t.Errorf("Kill of a pod whose process has exited succeeded")
	}
}

func (e *env) testPodDeadline(ctx context.Context, t *testing.T) {
	job := newJob("deadline", "-sleep", "1h")
	job.Spec.Template.Spec.ActiveDeadlineSeconds = ptr.To[int64](2)
	job = e.createJob(ctx, t, job)
	e.waitJob(ctx, t, job.Name, batchv1.JobFailed)
	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 1 {
		t.Fatalf("job has %d pods, want 1", len(pods))
	}
	p := pods[0]
	if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "DeadlineExceeded" {
		t.Errorf("pod phase %s, reason %q; want Failed, DeadlineExceeded", p.Status.Phase, p.Status.Reason)
	}
	// Stopped with SIGTERM, which the sleeping process does not catch.
	if term := terminated(t, &p); term.ExitCode != 128+int32(syscall.SIGTERM) {
		t.Errorf("exit code %d, want %d", term.ExitCode, 128+int32(syscall.SIGTERM))
	}
	if slices.Contains(e.runner.Running(), ns+"/"+p.Name) {
		t.Errorf("process of pod %s still running", p.Name)
	}
}

func (e *env) testDeleteJob(ctx context.Context, t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	job := e.createJob(ctx, t, newJob("deleted", "-sleep", "1h", "-pid-file", pidFile))
	pod := e.waitProcess(ctx, t, job.Name)
	pid := waitPID(ctx, t, pidFile)
	if err := e.cs.BatchV1().Jobs(ns).Delete(ctx, job.Name, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
	}); err != nil {
		t.Fatalf("delete job: %v", err)
	}
	poll(ctx, t, "pods of the deleted Job gone", func() (bool, error) {
		return len(e.jobPods(ctx, t, job.Name)) == 0, nil
	})
	if slices.Contains(e.runner.Running(), ns+"/"+pod) {
		t.Errorf("process of deleted pod %s still running", pod)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d of deleted pod still exists (kill 0: %v)", pid, err)
	}
}

func (e *env) testUnknownImage(ctx context.Context, t *testing.T) {
	job := newJob("unknown-image")
	job.Spec.Template.Spec.Containers[0].Image = "registry.invalid/nothing:1"
	job = e.createJob(ctx, t, job)
	e.waitJob(ctx, t, job.Name, batchv1.JobFailed)
	pods := e.jobPods(ctx, t, job.Name)
	if len(pods) != 1 {
		t.Fatalf("job has %d pods, want 1", len(pods))
	}
	if p := pods[0]; p.Status.Phase != corev1.PodFailed || p.Status.Reason != "ErrImagePull" ||
		!strings.Contains(p.Status.Message, "registry.invalid/nothing:1") {
		t.Errorf("pod phase %s, reason %q, message %q; want Failed with ErrImagePull naming the image",
			p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
}

func (e *env) testNodeSelector(ctx context.Context, t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "wants-ssd", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			NodeSelector:  map[string]string{"disk": "ssd"},
			Containers:    []corev1.Container{{Name: "embedder", Image: fakeImage}},
		},
	}
	if _, err := e.cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var got *corev1.Pod
	poll(ctx, t, "PodScheduled=False", func() (bool, error) {
		p, err := e.cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true, nil
			}
		}
		return p.Spec.NodeName != "", nil
	})
	if got.Spec.NodeName != "" {
		t.Fatalf("pod with an unmatched nodeSelector was bound to %q", got.Spec.NodeName)
	}
	if err := e.cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete pod: %v", err)
	}
}

// newJob is a one-pod Job without retries running the fake worker with args.
func newJob(name string, args ...string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name:                     "embedder",
					Image:                    fakeImage,
					Args:                     args,
					TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				}},
			}},
		},
	}
}

func (e *env) createJob(ctx context.Context, t *testing.T, job *batchv1.Job) *batchv1.Job {
	t.Helper()
	created, err := e.cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create job %s: %v", job.Name, err)
	}
	return created
}

// waitJob waits until the Job has condition want, failing at once if it finishes the other way.
func (e *env) waitJob(ctx context.Context, t *testing.T, name string, want batchv1.JobConditionType) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	poll(ctx, t, fmt.Sprintf("job %s %s", name, want), func() (bool, error) {
		j, err := e.cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		job = j
		for _, typ := range []batchv1.JobConditionType{batchv1.JobComplete, batchv1.JobFailed} {
			if c := condition(j, typ); c != nil && c.Status == corev1.ConditionTrue {
				if typ != want {
					return false, fmt.Errorf("job %s finished %s (%s: %s), want %s", name, typ, c.Reason, c.Message, want)
				}
				return true, nil
			}
		}
		return false, nil
	})
	return job
}

// waitProcess waits until a pod of the Job has a running process and returns the pod's name.
func (e *env) waitProcess(ctx context.Context, t *testing.T, job string) string {
	t.Helper()
	var name string
	poll(ctx, t, "process of job "+job, func() (bool, error) {
		for _, p := range e.jobPods(ctx, t, job) {
			if slices.Contains(e.runner.Running(), ns+"/"+p.Name) {
				name = p.Name
				return true, nil
			}
		}
		return false, nil
	})
	return name
}

func (e *env) jobPods(ctx context.Context, t *testing.T, job string) []corev1.Pod {
	t.Helper()
	list, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
	if err != nil {
		t.Fatalf("list pods of job %s: %v", job, err)
	}
	return list.Items
}

func waitPID(ctx context.Context, t *testing.T, path string) int {
	t.Helper()
	var pid int
	poll(ctx, t, "pid file", func() (bool, error) {
		data, err := os.ReadFile(path)
		if err != nil || len(data) == 0 {
			return false, nil
		}
		pid, err = strconv.Atoi(string(data))
		return err == nil, err
	})
	return pid
}

func poll(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, waitTimeout, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func condition(job *batchv1.Job, typ batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if job.Status.Conditions[i].Type == typ {
			return &job.Status.Conditions[i]
		}
	}
	return nil
}

func terminated(t *testing.T, pod *corev1.Pod) *corev1.ContainerStateTerminated {
	t.Helper()
	if len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("pod %s container statuses = %+v, want one terminated", pod.Name, pod.Status.ContainerStatuses)
	}
	return pod.Status.ContainerStatuses[0].State.Terminated
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// buildFakeWorker compiles testdata/fakeworker, the process the test pods run.
func buildFakeWorker(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fakeworker")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/fakeworker")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building fake worker: %v\n%s", err, b)
	}
	return out
}
