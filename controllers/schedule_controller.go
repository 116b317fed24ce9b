package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/schedule"
)

// Labels and annotations a schedule puts on its runs.
const (
	LabelSchedule            = "ingestion.vectordb.io/schedule"
	AnnotationScheduledTime  = "ingestion.vectordb.io/scheduled-time"
	AnnotationWindowStart    = "ingestion.vectordb.io/window-start"
	AnnotationWindowEnd      = "ingestion.vectordb.io/window-end"
	scheduleControllerName   = "csvingestionschedule"
	defaultSuccessfulHistory = 3
	defaultFailedHistory     = 1
	defaultWindow            = 24 * time.Hour
	scheduleRequeueSlack     = 100 * time.Millisecond
	scheduleMinRequeue       = time.Second
	scheduleEventAction      = "Schedule"
	// A refused run is retried after as long as it has been due, between these bounds: 5s, 5s,
	// 10s, 20s... like the CronJob controller's retries of a quota refusal, without a tight loop.
	rejectedRetryMin = 5 * time.Second
	rejectedRetryMax = 5 * time.Minute
	// pruneRetry is when a failed delete of an old run is tried again.
	pruneRetry = time.Minute
)

// ScheduleReconciler creates CsvIngestions from CsvIngestionSchedules, as the CronJob controller
// creates Jobs. What is due is decided by internal/schedule; this file reads the runs, acts and
// records.
type ScheduleReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Now is the clock; tests replace it.
	Now func() time.Time
	// APIReader reads the API server without the cache (mgr.GetAPIReader()): whose run holds a
	// name that is taken, which the cache may not have seen yet. Optional (Client is used).
	APIReader client.Reader
	// SkipNameValidation allows more than one controller in a process (tests restart the manager).
	SkipNameValidation bool
}

// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestionschedules,verbs=get;list;watch
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestionschedules/status,verbs=update
// finalizers: runs carry a controller owner reference with blockOwnerDeletion, which clusters with
// the OwnerReferencesPermissionEnforcement admission plugin only allow with this right.
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestionschedules/finalizers,verbs=update
// runs are created, cancelled (patch of spec.cancel) and pruned.
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=csvingestions,verbs=get;list;watch;create;patch;delete

// SetupWithManager watches schedules and the runs they own.
func (r *ScheduleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CsvIngestionSchedule{}).
		Owns(&v1alpha1.CsvIngestion{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2, SkipNameValidation: &r.SkipNameValidation}).
		Named(scheduleControllerName).
		Complete(r)
}

// runs are a schedule's CsvIngestions by state.
type runs struct {
	active, succeeded, failed []*v1alpha1.CsvIngestion
	byName                    map[string]*v1alpha1.CsvIngestion
}

func scheduledTime(o *v1alpha1.CsvIngestion) time.Time {
	t, err := time.Parse(time.RFC3339, o.Annotations[AnnotationScheduledTime])
	if err != nil {
		return o.CreationTimestamp.Time
	}
	return t
}

func (r *ScheduleReconciler) listRuns(ctx context.Context, sch *v1alpha1.CsvIngestionSchedule) (runs, error) {
	var list v1alpha1.CsvIngestionList
	if err := r.List(ctx, &list, client.InNamespace(sch.Namespace), client.MatchingLabels{LabelSchedule: sch.Name}); err != nil {
		return runs{}, fmt.Errorf("list runs of %s: %w", sch.Name, err)
	}
	out := runs{byName: map[string]*v1alpha1.CsvIngestion{}}
	for i := range list.Items {
		o := &list.Items[i]
		if ref := metav1.GetControllerOf(o); ref == nil || ref.UID != sch.UID {
			continue // same label, someone else's
		}
		out.byName[o.Name] = o
		if !o.DeletionTimestamp.IsZero() {
			continue
		}
		switch {
		case o.Status.Phase == v1alpha1.PhaseCompleted:
			out.succeeded = append(out.succeeded, o)
		case o.Status.Phase.Terminal():
			out.failed = append(out.failed, o)
		default:
			out.active = append(out.active, o)
		}
	}
	for _, l := range [][]*v1alpha1.CsvIngestion{out.active, out.succeeded, out.failed} {
		sort.Slice(l, func(i, j int) bool { return scheduledTime(l[i]).Before(scheduledTime(l[j])) })
	}
	return out, nil
}

// Reconcile looks at the schedule at r.Now(): keeps its history within the limits, starts the
// run that is due (at most one, the most recent, however many were missed) under the
// concurrency policy, records what it did, and comes back at the next scheduled time.
func (r *ScheduleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := logr.FromContextOrDiscard(ctx)
	sch := &v1alpha1.CsvIngestionSchedule{}
	if err := r.Get(ctx, req.NamespacedName, sch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !sch.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references delete the runs
	}
	now := r.Now()
	rs, err := r.listRuns(ctx, sch)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := sch.Status.DeepCopy()
	st.ObservedGeneration = sch.Generation

	// A run that cannot be deleted is reported and retried; it does not stop scheduling.
	pruneErr := r.prune(ctx, sch, &rs)
	if err := pruneErr; err != nil {
		msg := truncateMsg(err.Error(), 1024)
		if setScheduleCond(st, v1alpha1.ConditionHistoryPruned, metav1.ConditionFalse, "DeleteFailed", msg, sch.Generation) {
			r.event(sch, corev1.EventTypeWarning, "HistoryPruneFailed", "%s", msg)
		}
		log.Info("history not pruned", "error", err.Error())
	} else if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionHistoryPruned); c != nil && c.Status != metav1.ConditionTrue {
		setScheduleCond(st, v1alpha1.ConditionHistoryPruned, metav1.ConditionTrue, "WithinLimits", "finished runs are within the history limits", sch.Generation)
	}
	for _, o := range rs.succeeded {
		if t := o.Status.CompletionTime; t != nil && (st.LastSuccessfulTime == nil || t.After(st.LastSuccessfulTime.Time)) {
			st.LastSuccessfulTime = t.DeepCopy()
		}
	}

	var res ctrl.Result
	cs, loc, perr := schedule.Parse(sch.Spec.Schedule, sch.Spec.TimeZone)
	reason := "InvalidSchedule"
	if perr != nil {
		perr = fmt.Errorf("spec.schedule: %w", perr)
	} else {
		// Render the templates once for a sample run, so a bad template is reported now rather
		// than at the first run.
		if _, perr = schedule.RenderSpec(sch.Spec.Template.Spec, r.runData(sch, now, loc)); perr != nil {
			reason = "InvalidTemplate"
		}
	}
	if perr != nil {
		msg := truncateMsg(perr.Error(), 1024)
		if setScheduleCond(st, v1alpha1.ConditionScheduleReady, metav1.ConditionFalse, reason, msg, sch.Generation) {
			r.event(sch, corev1.EventTypeWarning, reason, "%s", msg)
		}
		st.Message = truncateMsg("not scheduling: "+msg, 1024)
		st.NextScheduleTime = nil
	} else {
		// A refused run keeps Ready=False until a run is created: this pass (a status write
		// re-triggers one) must not report the schedule healthy while its runs are refused.
		if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionScheduleReady); c == nil || c.Reason != v1alpha1.ReasonRunRejected {
			setScheduleCond(st, v1alpha1.ConditionScheduleReady, metav1.ConditionTrue, "Valid", "schedule and template are valid", sch.Generation)
		}
		res, err = r.schedule(ctx, sch, st, &rs, cs, loc, now)
		if err != nil {
			return ctrl.Result{}, err
		}
	}
	if pruneErr != nil && (res.RequeueAfter == 0 || res.RequeueAfter > pruneRetry) {
		res.RequeueAfter = pruneRetry
	}

	st.Active = st.Active[:0]
	for _, o := range rs.active {
		if len(st.Active) < 100 {
			st.Active = append(st.Active, v1alpha1.ScheduledRun{Name: o.Name, ScheduledTime: metav1.NewTime(scheduledTime(o))})
		}
	}
	if len(st.Active) == 0 {
		st.Active = nil
	}
	st.ActiveCount = int32(len(rs.active))

	if !equality.Semantic.DeepEqual(&sch.Status, st) {
		sch.Status = *st
		if err := r.Status().Update(ctx, sch); err != nil {
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, fmt.Errorf("update status of schedule %s: %w", req, err)
		}
		log.V(1).Info("schedule status written", "active", st.ActiveCount, "lastScheduleTime", st.LastScheduleTime, "next", st.NextScheduleTime)
	}
	return res, nil
}

func (r *ScheduleReconciler) runData(sch *v1alpha1.CsvIngestionSchedule, at time.Time, loc *time.Location) schedule.Data {
	at = at.In(loc)
	length := defaultWindow
	if d := sch.Spec.Window.Duration; d != nil && d.Duration > 0 {
		length = d.Duration
	}
	// Unset: the window ends at the scheduled time. An explicit 0s starts it there.
	lookback := length
	if sch.Spec.Window.Lookback != nil {
		lookback = sch.Spec.Window.Lookback.Duration
	}
	return schedule.Data{Window: schedule.WindowFor(at, length, lookback), ScheduledTime: at, ScheduleName: sch.Name}
}

// schedule acts on the due time, if any, and returns when to look again.
func (r *ScheduleReconciler) schedule(ctx context.Context, sch *v1alpha1.CsvIngestionSchedule, st *v1alpha1.CsvIngestionScheduleStatus,
	rs *runs, cs cronSchedule, loc *time.Location, now time.Time) (ctrl.Result, error) {
	last := sch.CreationTimestamp.Time
	for _, t := range []*metav1.Time{st.LastScheduleTime, st.LastSkippedTime} {
		if t != nil && t.After(last) {
			last = t.Time
		}
	}
	var deadline time.Duration
	if d := sch.Spec.StartingDeadlineSeconds; d != nil {
		deadline = time.Duration(*d) * time.Second
	}
	due := schedule.MostRecent(cs, loc, last, now, deadline)
	res := ctrl.Result{}
	if !due.Next.IsZero() {
		st.NextScheduleTime = &metav1.Time{Time: due.Next}
		res.RequeueAfter = max(due.Next.Sub(now)+scheduleRequeueSlack, scheduleMinRequeue)
	} else {
		st.NextScheduleTime = nil
	}
	if due.Time.IsZero() {
		return res, nil
	}
	at := metav1.NewTime(due.Time)
	// A refused time still pending (after last) is being retried, or superseded: not missed.
	retrying := st.LastRejectedTime != nil && st.LastRejectedTime.Equal(&at)
	if st.LastRejectedTime != nil && st.LastRejectedTime.After(last) && !st.LastRejectedTime.After(due.Time) {
		due.Missed--
	}
	if sch.Spec.Suspend {
		st.Message = "suspended: no new runs"
		return res, nil
	}
	if retrying {
		// (the missed times were reported when this time was first due)
	} else if due.Missed > schedule.TooManyMissed {
		r.event(sch, corev1.EventTypeWarning, "TooManyMissedTimes", "missed about %d scheduled times (clock skew or a long outage); starting only the run for %s",
			due.Missed, due.Time.Format(time.RFC3339))
	} else if due.Missed > 1 {
		r.event(sch, corev1.EventTypeNormal, "MissedRuns", "%d scheduled times passed while the operator was not running; starting only the most recent, %s",
			due.Missed, due.Time.Format(time.RFC3339))
	}
	if due.TooLate {
		r.skip(sch, st, at, "StartingDeadlineExceeded", fmt.Sprintf("run for %s not started: more than startingDeadlineSeconds (%ds) late",
			due.Time.Format(time.RFC3339), *sch.Spec.StartingDeadlineSeconds))
		return res, nil
	}

	name := schedule.RunName(sch.Name, due.Time)
	if _, ok := rs.byName[name]; ok {
		// Created by an earlier pass whose status write was lost.
		r.created(sch, st, at, name)
		return res, nil
	}
	if len(rs.active) > 0 {
		switch sch.Spec.ConcurrencyPolicy {
		case v1alpha1.ConcurrencyAllow:
		case v1alpha1.ConcurrencyReplace:
			for _, o := range rs.active {
				if err := r.cancelRun(ctx, o); err != nil {
					return ctrl.Result{}, err
				}
				r.event(sch, corev1.EventTypeNormal, "RunReplaced", "cancelled %s (scheduled %s) to start %s (concurrencyPolicy Replace)",
					o.Name, scheduledTime(o).Format(time.RFC3339), name)
			}
		default: // Forbid
			r.skip(sch, st, at, "ConcurrencyForbid", fmt.Sprintf("run for %s skipped: %s still active (concurrencyPolicy Forbid)",
				due.Time.Format(time.RFC3339), runNames(rs.active)))
			return res, nil
		}
	}

	data := r.runData(sch, due.Time, loc)
	run, err := r.newRun(sch, name, data)
	if err == nil {
		err = r.Create(ctx, run)
	}
	if apierrors.IsAlreadyExists(err) {
		if err = r.checkExisting(ctx, sch, name); apierrors.IsNotFound(err) {
			// Deleted since: look again shortly rather than report a refusal.
			res.RequeueAfter = scheduleMinRequeue
			return res, nil
		}
	}
	if err != nil {
		// Refused (admission policy, quota, validation) or failed: reported until a run is
		// created, and retried with backoff as long as this time is the one due.
		msg := truncateMsg(fmt.Sprintf("run %s for %s not created: %v", name, due.Time.Format(time.RFC3339), err), 1024)
		if st.LastRejectedTime == nil || !st.LastRejectedTime.Equal(&at) {
			st.SkippedRuns++
			st.LastRejectedTime = &at
		}
		changed := setScheduleCond(st, v1alpha1.ConditionScheduleReady, metav1.ConditionFalse, v1alpha1.ReasonRunRejected, msg, sch.Generation)
		changed = setScheduleCond(st, v1alpha1.ConditionRunSkipped, metav1.ConditionTrue, v1alpha1.ReasonRunRejected, msg, sch.Generation) || changed
		if changed {
			r.event(sch, corev1.EventTypeWarning, v1alpha1.ReasonRunRejected, "%s", msg)
		}
		st.Message = msg
		retry := min(max(now.Sub(due.Time), rejectedRetryMin), rejectedRetryMax)
		if res.RequeueAfter == 0 || retry < res.RequeueAfter {
			res.RequeueAfter = retry
		}
		log := logr.FromContextOrDiscard(ctx)
		log.Info("run not created", "run", name, "retryAfter", retry, "error", err.Error())
		return res, nil
	}
	rs.active = append(rs.active, run)
	r.created(sch, st, at, name)
	st.Message = fmt.Sprintf("created %s for the window %s to %s", name, data.Window.Start.Format(time.RFC3339), data.Window.End.Format(time.RFC3339))
	r.event(sch, corev1.EventTypeNormal, "RunCreated", "%s", st.Message)
	return res, nil
}

// created records the run of at as created: the refusal, if any, is over.
func (r *ScheduleReconciler) created(sch *v1alpha1.CsvIngestionSchedule, st *v1alpha1.CsvIngestionScheduleStatus, at metav1.Time, name string) {
	st.LastScheduleTime = &at
	st.LastRejectedTime = nil
	setScheduleCond(st, v1alpha1.ConditionRunSkipped, metav1.ConditionFalse, "RunCreated", "run "+name+" created", sch.Generation)
	setScheduleCond(st, v1alpha1.ConditionScheduleReady, metav1.ConditionTrue, "Valid", "schedule and template are valid", sch.Generation)
}

// checkExisting is called when the run's name is taken: by our own run (created by a pass whose
// status write was lost, not yet in the cache) it is fine; by anything else it is a refusal.
func (r *ScheduleReconciler) checkExisting(ctx context.Context, sch *v1alpha1.CsvIngestionSchedule, name string) error {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	o := &v1alpha1.CsvIngestion{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: sch.Namespace, Name: name}, o); err != nil {
		if apierrors.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("the name is taken, and reading it failed: %w", err)
	}
	if ref := metav1.GetControllerOf(o); ref != nil && ref.UID == sch.UID {
		return nil
	}
	return fmt.Errorf("a CsvIngestion named %s already exists and is not a run of this schedule (delete or rename it)", name)
}

type cronSchedule = cron.Schedule

// newRun is the CsvIngestion for one scheduled time: the rendered template, owned by the
// schedule, labelled with it and annotated with its scheduled time and window.
func (r *ScheduleReconciler) newRun(sch *v1alpha1.CsvIngestionSchedule, name string, d schedule.Data) (*v1alpha1.CsvIngestion, error) {
	spec, err := schedule.RenderSpec(sch.Spec.Template.Spec, d)
	if err != nil {
		return nil, err
	}
	if spec.Sync == nil {
		// A schedule re-reads overlapping data day after day: unchanged rows are not paid for again.
		spec.Sync = &v1alpha1.SyncSpec{Mode: v1alpha1.SyncIncremental}
	}
	run := &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   sch.Namespace,
			Labels:      map[string]string{},
			Annotations: map[string]string{},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sch,
				v1alpha1.GroupVersion.WithKind("CsvIngestionSchedule"))},
		},
		Spec: spec,
	}
	for k, v := range sch.Spec.Template.Metadata.Labels {
		run.Labels[k] = v
	}
	for k, v := range sch.Spec.Template.Metadata.Annotations {
		run.Annotations[k] = v
	}
	run.Labels[LabelSchedule] = sch.Name
	run.Annotations[AnnotationScheduledTime] = d.ScheduledTime.UTC().Format(time.RFC3339)
	run.Annotations[AnnotationWindowStart] = d.Window.Start.Format(time.RFC3339)
	run.Annotations[AnnotationWindowEnd] = d.Window.End.Format(time.RFC3339)
	return run, nil
}

// skip records a due run that was not started, in status and as an event.
func (r *ScheduleReconciler) skip(sch *v1alpha1.CsvIngestionSchedule, st *v1alpha1.CsvIngestionScheduleStatus, at metav1.Time, reason, msg string) {
	st.LastSkippedTime = &at
	if st.LastRejectedTime == nil || !st.LastRejectedTime.Equal(&at) {
		st.SkippedRuns++ // (a refused time was counted when refused)
	}
	st.LastRejectedTime = nil
	st.Message = msg
	setScheduleCond(st, v1alpha1.ConditionRunSkipped, metav1.ConditionTrue, reason, msg, sch.Generation)
	r.event(sch, corev1.EventTypeWarning, "RunSkipped", "%s", msg)
}

// cancelRun sets spec.cancel, the ingestion's one-way cancel: its controller deletes its Jobs and
// ends it Cancelled.
func (r *ScheduleReconciler) cancelRun(ctx context.Context, o *v1alpha1.CsvIngestion) error {
	if o.Spec.Cancel {
		return nil
	}
	patch := client.MergeFrom(o.DeepCopy())
	o.Spec.Cancel = true
	if err := r.Patch(ctx, o, patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("cancel run %s: %w", o.Name, err)
	}
	return nil
}

// prune deletes the oldest finished runs beyond the history limits. A run it cannot delete is
// kept (and returned in the error); the others are still deleted.
func (r *ScheduleReconciler) prune(ctx context.Context, sch *v1alpha1.CsvIngestionSchedule, rs *runs) error {
	limit := func(p *int32, def int) int {
		if p == nil {
			return def
		}
		return int(*p)
	}
	var err1, err2 error
	rs.succeeded, err1 = r.pruneList(ctx, sch, rs.succeeded, limit(sch.Spec.SuccessfulHistoryLimit, defaultSuccessfulHistory))
	rs.failed, err2 = r.pruneList(ctx, sch, rs.failed, limit(sch.Spec.FailedHistoryLimit, defaultFailedHistory))
	return errors.Join(err1, err2)
}

func (r *ScheduleReconciler) pruneList(ctx context.Context, sch *v1alpha1.CsvIngestionSchedule, l []*v1alpha1.CsvIngestion, keep int) ([]*v1alpha1.CsvIngestion, error) {
	// A run whose cleanup Job has not yet deleted what its planner staged stays, over the limit
	// for a while: deleting it would delete that Job and leak the staged copies. A run whose
	// delete fails stays too; the errors are reported together and pruning goes on. Either way
	// only the oldest runs past the limit are candidates: a newer run is never deleted in their
	// place.
	var kept []*v1alpha1.CsvIngestion
	var errs []error
	for n := len(l) - keep; n > 0; n-- {
		o := l[0]
		l = l[1:]
		pending, err := stagedCleanupPending(ctx, r.Client, o)
		if err != nil {
			errs = append(errs, fmt.Errorf("check the cleanup of old run %s: %w", o.Name, err))
			kept = append(kept, o)
			continue
		}
		if pending {
			kept = append(kept, o)
			continue
		}
		if err := r.Delete(ctx, o, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("delete old run %s (history limit %d): %w", o.Name, keep, err))
			kept = append(kept, o)
			continue
		}
		r.event(sch, corev1.EventTypeNormal, "RunDeleted", "deleted %s run %s (history limit %d)", o.Status.Phase, o.Name, keep)
	}
	return append(kept, l...), errors.Join(errs...)
}

func (r *ScheduleReconciler) event(sch *v1alpha1.CsvIngestionSchedule, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(sch, nil, typ, reason, scheduleEventAction, format, args...)
	}
}

// setCond sets a condition and reports whether it changed.
func setScheduleCond(st *v1alpha1.CsvIngestionScheduleStatus, typ string, status metav1.ConditionStatus, reason, msg string, gen int64) bool {
	return meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func runNames(l []*v1alpha1.CsvIngestion) string {
	out := make([]string, 0, len(l))
	for _, o := range l {
		out = append(out, o.Name)
	}
	return strings.Join(out, ", ")
}

func truncateMsg(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
