// Package controllers holds the CsvIngestion reconciler: plan → per-chunk Jobs → status rollup,
// mirrored into the DynamoDB task table.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
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
	// WritersNamespace keeps the writers records (Leases) that let an older run's sync step see
	// newer writers under its prefix even after they were deleted. "": no record (the manager
	// sets its own namespace).
	WritersNamespace string
	// RateLeaseURL and RateLeaseKey turn on rate leases: chunk pods renew a lease of their key's
	// budget at the URL (the manager's lease service), authenticated with a credential made with
	// the key. Either empty: each chunk keeps the share frozen into its Job (the old behaviour).
	RateLeaseURL string
	RateLeaseKey []byte
	// RateBudgets, with rate leases on, resolves the budget an ingestion's pods draw from (the
	// lease service's resolver), shown in status.rateBudget. nil: not shown.
	RateBudgets ratelease.Resolver
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
	// APIReader reads past the cache (the writers records); SetupWithManager sets the manager's.
	APIReader client.Reader
	// LiveBatches holds the running batch-mode chunks' live reports (nil: none; their batches
	// show when they end).
	LiveBatches LiveBatches

	mu sync.Mutex
	// trackErr remembers the last mirror failure per ingestion for the TrackingDegraded condition.
	trackErr map[types.UID]error
	// mirrored is the last TrackingVersion the task table accepted, per ingestion. Only an
	// optimisation: chunk entries are derived from what the cluster keeps, never from memory.
	mirrored map[types.UID]int64
	// expected holds Jobs created but not yet seen in the cache, so a pass on a stale cache
	// neither creates them again nor starts more than parallelism chunks.
	expected map[types.UID]map[string]time.Time
	// plans caches each ingestion's decoded plan by the ConfigMap's UID and resourceVersion.
	plans map[types.UID]cachedPlan
	// blockedRetries counts consecutive refused passes per ingestion, for the retry backoff.
	blockedRetries map[types.UID]int
	// registered holds the runs already in their prefix's writers record (an optimisation: the
	// record is read before each addition).
	registered map[types.UID]bool
	// unclaimed holds the runs whose sync step holds with no claim of theirs in the record.
	unclaimed map[types.UID]bool
	// leaseSecrets: ingestions whose lease Secret this process has written.
	leaseSecrets map[types.UID]bool
	// rateBudgetPausedUntil: status.rateBudget is not resolved before then (a resolve timed out).
	rateBudgetPausedUntil time.Time
	cleanupMu             sync.Mutex
	// cleanupFailures holds the failed cleanup Jobs already reported by an event.
	cleanupFailures map[types.UID]bool
}

// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions/status,verbs=update
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=vectordb-system
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// SetupWithManager registers the field indexes and watches.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	r.Config.defaults()
	if r.Now == nil {
		r.Now = time.Now
	}
	r.trackErr = map[types.UID]error{}
	r.mirrored = map[types.UID]int64{}
	r.expected = map[types.UID]map[string]time.Time{}
	r.plans = map[types.UID]cachedPlan{}
	r.blockedRetries = map[types.UID]int{}
	r.registered = map[types.UID]bool{}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &batchv1.Job{}, jobOwnerUIDIndex, controllerUID); err != nil {
		return fmt.Errorf("index jobs by owner: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.ConfigMap{}, configMapOwnerIndex, controllerUID); err != nil {
		return fmt.Errorf("index configmaps by owner: %w", err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.CsvIngestion{}, ingestionPrefixIndex, ingestionPrefix); err != nil {
		return fmt.Errorf("index ingestions by target and id prefix: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, podIngestionUIDIdx, podIngestionUID); err != nil {
		return fmt.Errorf("index pods by ingestion: %w", err)
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, podIngestionNameIdx, podIngestionName); err != nil {
		return fmt.Errorf("index pods by ingestion name: %w", err)
	}
	podToIngestion := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := ingestionNameOf(o)
		if name == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
	// The ingestion gauges are computed from this cache at scrape time, while this replica leads.
	if err := mgr.Add(&metricsRunnable{collector: &gaugeCollector{reader: mgr.GetCache(), log: mgr.GetLogger().WithName("metrics")}}); err != nil {
		return fmt.Errorf("add metrics collector: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CsvIngestion{}).
		// Only what a pass reads of a Job wakes it (not every status write of the Job controller).
		Owns(&batchv1.Job{}, builder.WithPredicates(jobChangePredicate)).
		Owns(&corev1.ConfigMap{}).
		// The cleanup Job of a deleted batch-mode ingestion is not owned (see cleanupStaged);
		// its end releases the ingestion's FinalizerBatchCleanup.
		Watches(&batchv1.Job{}, podToIngestion, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[worker.LabelRole] == worker.RoleCleanup && metav1.GetControllerOf(o) == nil
		}))).
		// Terminated pods carry the termination message; deleted ones may wait on the outcome
		// finalizer.
		Watches(&corev1.Pod{}, podToIngestion, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			p, ok := o.(*corev1.Pod)
			return ok && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !p.DeletionTimestamp.IsZero())
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Config.MaxConcurrentReconciles, SkipNameValidation: &r.Config.SkipNameValidation}).
		Named("csvingestion").
		Complete(r)
}

// podIngestionNameIdx finds the pods still holding the outcome finalizer by the (full) name of
// their ingestion, to release those of an ingestion that is gone. Only held pods are indexed, so
// the lookup costs what is still open.
const podIngestionNameIdx = ".metadata.annotations.ingestionName.held"

// ingestionNameOf is the full ingestion name of a child: the annotation, else the label (which
// is the full name whenever it did not need hashing).
func ingestionNameOf(o client.Object) string {
	if n := o.GetAnnotations()[worker.AnnotationName]; n != "" {
		return n
	}
	return o.GetLabels()[worker.LabelName]
}

func podIngestionName(o client.Object) []string {
	if n := ingestionNameOf(o); n != "" && slices.Contains(o.GetFinalizers(), worker.FinalizerOutcome) {
		return []string{n}
	}
	return nil
}

// Reconcile derives the ingestion's state from its children, acts on it, writes status once, then
// emits events, mirrors the task and releases what the written status has recorded.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	obj := &v1alpha1.CsvIngestion{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.releaseGone(ctx, req.NamespacedName, "")
		}
		return ctrl.Result{}, fmt.Errorf("get %s: %w", req, err)
	}
	if err := r.releaseGone(ctx, req.NamespacedName, obj.UID); err != nil {
		return ctrl.Result{}, err
	}
	deleting := !obj.DeletionTimestamp.IsZero()
	// A deleted running batch-mode ingestion is stopped like spec.cancel by the pass below, so
	// that its cleanup Job cancels its batches before FinalizerBatchCleanup lets it go.
	if deleting && !obj.Status.Phase.Terminal() && !holdsBatchCleanup(obj) {
		return r.finalize(ctx, obj)
	}
	if !deleting && !obj.Status.Phase.Terminal() {
		addTask := r.tracked(obj) && !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel)
		addBatch := decideBatchFinalizer(batchFinalizerInput{batch: obj.Spec.Embedding.Mode == v1alpha1.EmbeddingBatch,
			has: controllerutil.ContainsFinalizer(obj, FinalizerBatchCleanup)}) == finalizerAdd
		if addTask || addBatch {
			if addTask {
				controllerutil.AddFinalizer(obj, FinalizerTaskCancel)
			}
			if addBatch {
				controllerutil.AddFinalizer(obj, FinalizerBatchCleanup)
			}
			if err := r.Update(ctx, obj); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
			return ctrl.Result{}, nil // the update triggers the next pass
		}
	}

	completed, failed, err := recordedSets(obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	kids, err := r.listChildren(ctx, obj, func(i int) bool { return completed.Has(i) || failed.Has(i) })
	if err != nil {
		return ctrl.Result{}, err
	}
	p := r.newPass(obj, kids, completed, failed)
	if err := p.run(ctx); err != nil {
		return ctrl.Result{}, err
	}
	p.markProgress()

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
		p.recordMetrics()
		p.emitEvents(before)
		log.V(1).Info("status written", "phase", p.status.Phase, "progress", p.status.Progress)
	}

	// The status is written: what it records may now be mirrored and then released.
	// Staged copies (gzip, other encodings) go once the ingestion has ended.
	var cleanupRetry time.Duration
	if err := r.cleanupStaged(ctx, obj, kids); err != nil {
		var nt *namespaceTerminatingError
		switch {
		case errors.As(err, &nt) && deleting && holdsBatchCleanup(obj):
			if err := r.giveUpBatchCleanup(ctx, obj, err); err != nil {
				return ctrl.Result{}, err
			}
		case holdsBatchCleanup(obj):
			if cleanupRetry, err = r.batchCleanupRefused(ctx, obj, err); err != nil {
				return ctrl.Result{}, err
			}
		default:
			log.Error(err, "staged objects not cleaned up yet")
		}
	}
	if _, retry, err := r.batchCleanup(ctx, obj, kids); err != nil {
		return ctrl.Result{}, err
	} else if retry > 0 && (cleanupRetry == 0 || retry < cleanupRetry) {
		cleanupRetry = retry
	}
	var res ctrl.Result
	mirrorErr := error(nil)
	open := p.openOutcomes()
	if r.tracked(obj) {
		if mirrorErr = r.mirror(ctx, obj, open); mirrorErr != nil {
			res.RequeueAfter = 15 * time.Second
		}
	}
	// Released only once the table has the entries; a finished ingestion whose table stayed
	// away past the finalizer timeout (finalizer gone, item marked stale) lets go regardless.
	gaveUp := obj.Status.Phase.Terminal() && !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel)
	if mirrorErr == nil || gaveUp {
		if err := r.release(ctx, p, open); err != nil {
			return ctrl.Result{}, err
		}
	}

	if obj.Status.Phase.Terminal() {
		res, err := r.finishTerminal(ctx, obj, mirrorErr)
		if err == nil && !res.Requeue && cleanupRetry > 0 && (res.RequeueAfter == 0 || cleanupRetry < res.RequeueAfter) {
			res.RequeueAfter = cleanupRetry
		}
		return res, err
	}
	if p.requeueAfter > 0 && (res.RequeueAfter == 0 || p.requeueAfter < res.RequeueAfter) {
		res.RequeueAfter = p.requeueAfter
	}
	if b := r.blockedBackoff(obj.UID, p.blocked != nil); b > 0 && (res.RequeueAfter == 0 || b < res.RequeueAfter) {
		res.RequeueAfter = b
	}
	return res, nil
}

// blockedBackoff is how soon a refused write is tried again: 2 s, doubling to 30 s. Nothing
// announces that a quota was raised, so the retry is what notices.
func (r *Reconciler) blockedBackoff(uid types.UID, blocked bool) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !blocked {
		delete(r.blockedRetries, uid)
		return 0
	}
	n := r.blockedRetries[uid]
	r.blockedRetries[uid] = n + 1
	d := 2 * time.Second << min(n, 4)
	return min(d, 30*time.Second)
}

// finishTerminal removes the task-cancel finalizer of a finished ingestion once its final state
// is in the task table. A table that stays unreachable holds the finalizer for at most
// FinalizerTimeout (counted from completion, or from deletion); then the TrackingDegraded
// condition and a Warning event say the task item is stale, and the finalizer goes.
func (r *Reconciler) finishTerminal(ctx context.Context, obj *v1alpha1.CsvIngestion, mirrorErr error) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) {
		if mirrorErr != nil {
			return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
		}
		if !obj.DeletionTimestamp.IsZero() {
			r.forget(obj.UID)
		}
		return ctrl.Result{}, nil
	}
	if mirrorErr != nil && r.tracked(obj) {
		since := obj.Status.CompletionTime
		if !obj.DeletionTimestamp.IsZero() && (since == nil || obj.DeletionTimestamp.After(since.Time)) {
			since = obj.DeletionTimestamp
		}
		waited := time.Duration(0)
		if since != nil {
			waited = r.Now().Sub(since.Time)
		}
		if waited < r.Config.FinalizerTimeout {
			return ctrl.Result{RequeueAfter: 2 * time.Second}, nil
		}
		msg := fmt.Sprintf("the final state (%s) could not be written to the task table for %s; task item %s is stale: %v",
			obj.Status.Phase, waited.Round(time.Second), obj.EffectiveTaskID(), mirrorErr)
		r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonTaskItemStale, "Track", "%s", msg)
		if obj.DeletionTimestamp.IsZero() {
			meta.SetStatusCondition(&obj.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionTrackingDegraded,
				Status: metav1.ConditionTrue, Reason: ReasonTaskItemStale, Message: truncate(msg, 1000), ObservedGeneration: obj.Generation})
			if err := r.Status().Update(ctx, obj); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
		}
	}
	controllerutil.RemoveFinalizer(obj, FinalizerTaskCancel)
	if err := r.Update(ctx, obj); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("remove finalizer of %s: %w", obj.Name, err)
		}
	}
	if !obj.DeletionTimestamp.IsZero() {
		r.forget(obj.UID)
	}
	if mirrorErr != nil {
		// Keep trying: the item catches up whenever the table is back.
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) tracked(obj *v1alpha1.CsvIngestion) bool {
	return r.Tracker != nil && obj.Spec.Tracking != nil && obj.Spec.Tracking.DynamoDB != nil
}

// finalize marks a running task cancelled in the task table before the ingestion goes away. It
// never blocks deletion for longer than FinalizerTimeout: after that it gives up with an event.
func (r *Reconciler) finalize(ctx context.Context, obj *v1alpha1.CsvIngestion) (ctrl.Result, error) {
	// A running ingestion that goes records nothing more: its pods need not wait (with foreground
	// deletion, they would otherwise hold their Jobs, and the Jobs the ingestion).
	if err := r.releaseGone(ctx, types.NamespacedName{Namespace: obj.Namespace, Name: obj.Name}, ""); err != nil {
		return ctrl.Result{}, err
	}
	// FinalizerBatchCleanup on an ingestion that is not in batch mode (added by hand, or copied
	// from another object's manifest) is never ours to hold: no cleanup runs for it.
	stray := obj.Spec.Embedding.Mode != v1alpha1.EmbeddingBatch && controllerutil.ContainsFinalizer(obj, FinalizerBatchCleanup)
	if !controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) && !stray {
		return ctrl.Result{}, nil
	}
	if controllerutil.ContainsFinalizer(obj, FinalizerTaskCancel) && r.tracked(obj) && !obj.Status.Phase.Terminal() {
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
	if stray {
		controllerutil.RemoveFinalizer(obj, FinalizerBatchCleanup)
	}
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
	delete(r.mirrored, uid)
	delete(r.expected, uid)
	delete(r.plans, uid)
	delete(r.blockedRetries, uid)
	delete(r.registered, uid)
	delete(r.unclaimed, uid)
	delete(r.leaseSecrets, uid)
}
