// Package controllers holds the CsvIngestion reconciler: plan → per-chunk Jobs → status rollup,
// mirrored into the DynamoDB task table.
package controllers

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// FinalizerTaskCancel lets the controller mark the task cancelled in DynamoDB when a running
// ingestion is deleted. It is present only while the ingestion runs and has tracking.
const FinalizerTaskCancel = "ingestion.vectordb.io/task-cancel"

// Config holds the operator-wide defaults of the reconciler.
type Config struct {
	// EmbedderImage runs the planner and chunks unless spec.worker.image is set.
	EmbedderImage string
	// WorkerServiceAccount is used unless spec.worker.serviceAccountName is set.
	WorkerServiceAccount string
	// DefaultWorkerResources are the worker container's resources unless spec.worker.resources
	// sets any (REST-created ingestions never do), so workers are not BestEffort by default.
	DefaultWorkerResources corev1.ResourceRequirements
	// JobTTL is the Jobs' ttlSecondsAfterFinished: long enough for the outcome to be recorded first.
	JobTTL time.Duration
	// FinalizerTimeout bounds how long deletion waits for DynamoDB to accept the cancellation.
	FinalizerTimeout time.Duration
	// MaxConcurrentReconciles across ingestions.
	MaxConcurrentReconciles int
	// SkipNameValidation allows more than one controller in a process (tests restart the manager).
	SkipNameValidation bool
}

func (c *Config) defaults() {
	if c.EmbedderImage == "" {
		c.EmbedderImage = "vectordb-embedder:latest"
	}
	if c.WorkerServiceAccount == "" {
		c.WorkerServiceAccount = "vectordb-embedder"
	}
	if c.JobTTL <= 0 {
		c.JobTTL = time.Hour
	}
	if c.FinalizerTimeout <= 0 {
		c.FinalizerTimeout = 30 * time.Second
	}
	if c.MaxConcurrentReconciles <= 0 {
		c.MaxConcurrentReconciles = 4
	}
}

// Reconciler reconciles CsvIngestion objects.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	Config   Config
	// Tracker mirrors tasks into DynamoDB; nil disables tracking even when specs ask for it.
	Tracker Tracker
	Now     func() time.Time

	mu sync.Mutex
	// trackErr remembers the last mirror failure per ingestion for the TrackingDegraded condition.
	trackErr map[types.UID]error
	// pending holds chunk outcomes not yet accepted by the task table.
	pending map[types.UID]map[int]ChunkOutcome
	// mirrored is the last TrackingVersion the task table accepted, per ingestion.
	mirrored map[types.UID]int64
	// expected holds Jobs created but not yet seen in the cache, so a pass on a stale cache
	// neither creates them again nor starts more than parallelism chunks.
	expected map[types.UID]map[string]time.Time
}

// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the field indexes and watches.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	r.Config.defaults()
	if r.Now == nil {
		r.Now = time.Now
	}
	r.trackErr = map[types.UID]error{}
	r.pending = map[types.UID]map[int]ChunkOutcome{}
	r.mirrored = map[types.UID]int64{}
	r.expected = map[types.UID]map[string]time.Time{}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &batchv1.Job{}, jobOwnerUIDIndex, controllerUID); err != nil {
		return fmt.Errorf("index jobs by owner: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.ConfigMap{}, configMapOwnerIndex, controllerUID); err != nil {
		return fmt.Errorf("index configmaps by owner: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, podIngestionUIDIdx, podIngestionUID); err != nil {
		return fmt.Errorf("index pods by ingestion: %w", err)
	}
	podToIngestion := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[worker.LabelName]
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CsvIngestion{}).
		Owns(&batchv1.Job{}).
		Owns(&corev1.ConfigMap{}).
		// Only terminated pods matter: they carry the termination message.
		Watches(&corev1.Pod{}, podToIngestion, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			p, ok := o.(*corev1.Pod)
			return ok && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed)
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Config.MaxConcurrentReconciles, SkipNameValidation: &r.Config.SkipNameValidation}).
		Named("csvingestion").
		Complete(r)
}

// Reconcile derives the ingestion's state from its children, acts on it, writes status once, then
// emits events and mirrors the task.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	obj := &v1alpha1.CsvIngestion{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("get %s: %w", req, err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, obj)
	}
	if r.tracked(obj) && !obj.Status.Phase.Terminal() && !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) {
		controllerutil.AddFinalizer(obj, FinalizerTaskCancel)
		if err := r.Update(ctx, obj); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		return ctrl.Result{}, nil // the update triggers the next pass
	}

	kids, err := r.listChildren(ctx, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	p := r.newPass(obj, kids)
	if err := p.run(ctx); err != nil {
		return ctrl.Result{}, err
	}

	if !equality.Semantic.DeepEqual(obj.Status, p.status) {
		before := obj.Status.DeepCopy()
		obj.Status = p.status
		if err := r.Status().Update(ctx, obj); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				// A newer object exists: derive again from it rather than overwrite it.
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, fmt.Errorf("update status of %s: %w", req, err)
		}
		p.recordMetrics(before)
		p.emitEvents(before)
		log.V(1).Info("status written", "phase", p.status.Phase, "progress", p.status.Progress)
	}

	if obj.Status.Phase.Terminal() && controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) {
		// Nothing is running any more: deleting a finished ingestion needs no DynamoDB write.
		if r.tracked(obj) {
			r.mirror(ctx, obj, p.outcomes)
		}
		controllerutil.RemoveFinalizer(obj, FinalizerTaskCancel)
		if err := r.Update(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer of %s: %w", req, err)
		}
		return ctrl.Result{}, nil
	}
	var res ctrl.Result
	if r.tracked(obj) {
		if err := r.mirror(ctx, obj, p.outcomes); err != nil {
			res.RequeueAfter = 15 * time.Second
		}
	}
	if p.requeueAfter > 0 && (res.RequeueAfter == 0 || p.requeueAfter < res.RequeueAfter) {
		res.RequeueAfter = p.requeueAfter
	}
	return res, nil
}

func (r *Reconciler) tracked(obj *v1alpha1.CsvIngestion) bool {
	return r.Tracker != nil && obj.Spec.Tracking != nil && obj.Spec.Tracking.DynamoDB != nil
}

// finalize marks a running task cancelled in the task table before the ingestion goes away. It
// never blocks deletion for longer than FinalizerTimeout: after that it gives up with an event.
func (r *Reconciler) finalize(ctx context.Context, obj *v1alpha1.CsvIngestion) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) {
		return ctrl.Result{}, nil
	}
	if r.tracked(obj) && !obj.Status.Phase.Terminal() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.Tracker.Cancelled(cctx, obj, r.Now())
		cancel()
		if err != nil {
			waited := r.Now().Sub(obj.DeletionTimestamp.Time)
			if waited < r.Config.FinalizerTimeout {
				r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "TrackingCancelRetry", "Delete",
					"could not mark task %s cancelled in the task table, retrying: %v", obj.EffectiveTaskID(), err)
				return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
			}
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, "TrackingCancelAbandoned", "Delete",
				"gave up marking task %s cancelled after %s: %v", obj.EffectiveTaskID(), waited.Round(time.Second), err)
		}
	}
	controllerutil.RemoveFinalizer(obj, FinalizerTaskCancel)
	if err := r.Update(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, fmt.Errorf("remove finalizer of %s: %w", obj.Name, err)
	}
	r.forget(obj.UID)
	return ctrl.Result{}, nil
}

func (r *Reconciler) forget(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.trackErr, uid)
	delete(r.pending, uid)
	delete(r.mirrored, uid)
	delete(r.expected, uid)
	forgetMetrics(uid)
}
