package controllers

import (
	"fmt"
	"maps"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// containerName is the worker container in every Job; the podFailurePolicy refers to it.
const containerName = "embedder"

// childLabels are always valid label values: a name or taskID that is not (too long, or with
// characters such as ':') is hashed, and childAnnotations keep the full values.
func childLabels(obj *v1alpha1.CsvIngestion, role string) map[string]string {
	return map[string]string{
		worker.LabelName:   worker.LabelValue(obj.Name),
		worker.LabelUID:    string(obj.UID),
		worker.LabelTaskID: worker.LabelValue(obj.EffectiveTaskID()),
		worker.LabelRole:   role,
	}
}

func childAnnotations(obj *v1alpha1.CsvIngestion) map[string]string {
	return map[string]string{
		worker.AnnotationName:   obj.Name,
		worker.AnnotationTaskID: obj.EffectiveTaskID(),
	}
}

func ownerRef(obj *v1alpha1.CsvIngestion) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "CsvIngestion",
		Name:               obj.Name,
		UID:                obj.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

func secretEnv(name string, ref v1alpha1.SecretKeyRef) corev1.EnvVar {
	key := ref.Key
	if key == "" {
		key = "api-key"
	}
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: key,
	}}}
}

// s3Env passes S3 credentials by reference; without a Secret the pod's identity is used.
func s3Env(conn v1alpha1.S3Connection) []corev1.EnvVar {
	ref := conn.CredentialsSecretRef
	if ref == nil {
		return nil
	}
	idKey, secretKey := ref.AccessKeyIDKey, ref.SecretAccessKeyKey
	if idKey == "" {
		idKey = "AWS_ACCESS_KEY_ID"
	}
	if secretKey == "" {
		secretKey = "AWS_SECRET_ACCESS_KEY"
	}
	sel := func(k string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: k,
		}}
	}
	return []corev1.EnvVar{
		{Name: worker.EnvAWSAccessKeyID, ValueFrom: sel(idKey)},
		{Name: worker.EnvAWSSecretKey, ValueFrom: sel(secretKey)},
	}
}

func sourceConnection(spec *v1alpha1.CsvIngestionSpec) v1alpha1.S3Connection {
	if spec.Source.Metabase != nil {
		return spec.Source.Metabase.StageTo.S3Connection
	}
	if spec.Source.S3 != nil {
		return spec.Source.S3.S3Connection
	}
	return v1alpha1.S3Connection{}
}

// podSpec is what the planner and chunk pods share: restricted security context, the worker's
// service account and scheduling settings, and the ingestion as JSON (references only, no secrets).
func (r *Reconciler) podSpec(obj *v1alpha1.CsvIngestion, args []string, env []corev1.EnvVar, needAPI bool) (corev1.PodSpec, error) {
	ing, err := worker.FromObject(obj).Encode()
	if err != nil {
		return corev1.PodSpec{}, err
	}
	image := obj.Spec.Worker.Image
	if image == "" {
		image = r.Config.EmbedderImage
	}
	sa := obj.Spec.Worker.ServiceAccountName
	if sa == "" {
		sa = r.Config.WorkerServiceAccount
	}
	env = append([]corev1.EnvVar{{Name: worker.EnvIngestion, Value: ing}}, env...)
	env = append(env, s3Env(sourceConnection(&obj.Spec))...)
	// The Go runtime collects harder as the heap nears the container's memory limit instead of
	// being OOM-killed (without a limit the kubelet gives the node's allocatable memory).
	env = append(env, corev1.EnvVar{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{
		ResourceFieldRef: &corev1.ResourceFieldSelector{ContainerName: containerName, Resource: "limits.memory"}}})
	return corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		ServiceAccountName:            sa,
		AutomountServiceAccountToken:  ptr.To(needAPI),
		NodeSelector:                  obj.Spec.Worker.NodeSelector,
		Tolerations:                   obj.Spec.Worker.Tolerations,
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:                     containerName,
			Image:                    image,
			Args:                     args,
			Env:                      env,
			Resources:                r.workerResources(obj),
			TerminationMessagePath:   worker.DefaultTerminationLog,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				RunAsNonRoot:             ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}, nil
}

// workerResources is spec.worker.resources when it sets anything, else the operator's default
// (whole: a spec's requests are never mixed with default limits they may exceed).
func (r *Reconciler) workerResources(obj *v1alpha1.CsvIngestion) corev1.ResourceRequirements {
	if res := obj.Spec.Worker.Resources; len(res.Requests) > 0 || len(res.Limits) > 0 || len(res.Claims) > 0 {
		return res
	}
	return *r.Config.DefaultWorkerResources.DeepCopy()
}

// failurePolicy fails the Job at once on the embedder's permanent exit code, and does not count
// node disruptions (evictions, preemption) against the retries.
func failurePolicy() *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
				ContainerName: ptr.To(containerName),
				Operator:      batchv1.PodFailurePolicyOnExitCodesOpIn,
				Values:        []int32{worker.ExitPermanent},
			},
		},
		{
			Action: batchv1.PodFailurePolicyActionIgnore,
			OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
				{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue},
			},
		},
	}}
}

// job builds a child Job. Each attempt is bounded by timeout, or chunkTimeout when it is 0 (the
// pod's deadline); the Job's deadline leaves room for every allowed retry.
func (r *Reconciler) job(obj *v1alpha1.CsvIngestion, name, role string, pod corev1.PodSpec, extraLabels map[string]string, timeout time.Duration) *batchv1.Job {
	labels := childLabels(obj, role)
	for k, v := range extraLabels {
		labels[k] = v
	}
	if timeout <= 0 {
		timeout = obj.Spec.Chunking.ChunkTimeout.Duration
	}
	if timeout <= 0 {
		timeout = 30 * time.Minute
	}
	retries := obj.Spec.Chunking.RetriesPerChunk
	pod.ActiveDeadlineSeconds = ptr.To(int64(timeout.Seconds()))
	// No ttlSecondsAfterFinished yet: the controller sets it once the outcome is recorded (and
	// mirrored), so a Job never expires unread however long the manager is away. The pods carry
	// a finalizer for the same reason (PodGC, a deleted Job, a user's kubectl delete).
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       obj.Namespace,
			Labels:          labels,
			Annotations:     childAnnotations(obj),
			OwnerReferences: []metav1.OwnerReference{ownerRef(obj)},
		},
		Spec: batchv1.JobSpec{
			Parallelism:           ptr.To[int32](1),
			Completions:           ptr.To[int32](1),
			BackoffLimit:          ptr.To(retries),
			ActiveDeadlineSeconds: ptr.To(int64(timeout.Seconds()) * int64(retries+1)),
			PodFailurePolicy:      failurePolicy(),
			Suspend:               ptr.To(false),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: childAnnotations(obj),
					Finalizers: []string{worker.FinalizerOutcome}},
				Spec: pod,
			},
		},
	}
}

// plannerJob reads the object once and writes the plan ConfigMap, so it alone needs API access.
// It also runs the vector-space guard (package vectorspace), which reads the index and embeds a
// few stored texts, so it gets the OpenAI and Pinecone keys too, and a rate lease when leasing.
func (r *Reconciler) plannerJob(obj *v1alpha1.CsvIngestion) (*batchv1.Job, error) {
	env := []corev1.EnvVar{
		secretEnv(worker.EnvOpenAIAPIKey, obj.Spec.Embedding.APIKeySecretRef),
		secretEnv(worker.EnvPineconeAPIKey, obj.Spec.Target.Pinecone.APIKeySecretRef),
	}
	if mb := obj.Spec.Source.Metabase; mb != nil {
		env = append(env, secretEnv(worker.EnvMetabaseAPIKey, mb.APIKeySecretRef))
	}
	// The guard's request draws from the key's budget: it leases like a chunk pod.
	env = append(env, r.leaseEnv(obj, worker.PlanJobName(obj.Name))...)
	pod, err := r.podSpec(obj, []string{"plan"}, env, true)
	if err != nil {
		return nil, err
	}
	// A dry run with deleteMissing lists the prefix while planning: spec.sync.timeout, when
	// longer, bounds it too.
	var timeout time.Duration
	if obj.Spec.Sync != nil && obj.Spec.Sync.Timeout != nil && obj.Spec.Sync.Timeout.Duration > obj.Spec.Chunking.ChunkTimeout.Duration {
		timeout = obj.Spec.Sync.Timeout.Duration
	}
	return r.job(obj, worker.PlanJobName(obj.Name), worker.RolePlan, pod, nil, timeout), nil
}

// chunkJob embeds one chunk. Its budget shares are fixed at creation; with rate leases they are
// only its start and its fallback, and the lease service's grants replace them while it runs.
func (r *Reconciler) chunkJob(obj *v1alpha1.CsvIngestion, args worker.ChunkArgs) (*batchv1.Job, error) {
	name := worker.ChunkJobName(obj.Name, args.Index)
	env := []corev1.EnvVar{
		secretEnv(worker.EnvOpenAIAPIKey, obj.Spec.Embedding.APIKeySecretRef),
		secretEnv(worker.EnvPineconeAPIKey, obj.Spec.Target.Pinecone.APIKeySecretRef),
	}
	env = append(env, r.leaseEnv(obj, name)...)
	pod, err := r.podSpec(obj, args.Flags(), env, false)
	if err != nil {
		return nil, err
	}
	var timeout time.Duration
	if obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch {
		batchPod(&pod)
		// The Batch API answers within its 24-hour completion window and the chunk's pod waits
		// for it, polling: chunkTimeout bounds the rest of the work.
		timeout = max(obj.Spec.Chunking.ChunkTimeout.Duration, 30*time.Minute) + BatchWindow
	}
	job := r.job(obj, name, worker.RoleChunk, pod,
		map[string]string{worker.LabelChunk: strconv.Itoa(args.Index)}, timeout)
	if q := obj.Spec.Worker.QueueName; q != "" {
		// Kueue admits a Job it finds suspended with its queue label, and unsuspends it then.
		// The Job's labels are shared with its pod template: only the Job gets the label.
		job.Labels = maps.Clone(job.Labels)
		job.Labels[LabelKueueQueue] = q
		job.Spec.Suspend = ptr.To(true)
	}
	return job, nil
}

// LabelKueueQueue is Kueue's label naming the LocalQueue a Job is submitted to.
const LabelKueueQueue = "kueue.x-k8s.io/queue-name"

// BatchWindow is the Batch API's completion window, which a batch-mode chunk's deadline allows.
const BatchWindow = 24 * time.Hour

// BatchSpoolDir is where a batch-mode chunk writes its batch files and collected vectors: an
// emptyDir over /tmp (os.TempDir), since the root filesystem is read-only.
const BatchSpoolDir = "/tmp"

func batchPod(pod *corev1.PodSpec) {
	pod.Volumes = append(pod.Volumes, corev1.Volume{Name: "batch-spool",
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	c := &pod.Containers[0]
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "batch-spool", MountPath: BatchSpoolDir})
}

// budgetShare splits a per-minute budget across the chunks that can run at once: never more
// than parallelism, never more than the chunks still unfinished, so the tail gets the whole budget.
func budgetShare(total float64, parallelism int32, unfinished int) float64 {
	n := int(parallelism)
	if unfinished < n {
		n = unfinished
	}
	if n < 1 {
		n = 1
	}
	return total / float64(n)
}

func chunkRows(args worker.ChunkArgs) string {
	if args.Rows <= 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", args.FirstRow, args.FirstRow+args.Rows-1)
}
