package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// jobChangePredicate lets through every create, delete and generic event of an owned Job, and
// only those updates that change what a pass reads of it: its conditions, its active, succeeded
// and failed counts, its suspension, its TTL (set once the chunk is recorded), or its deletion. The Job controller also writes ready counts,
// uncounted-pod bookkeeping and probe times; waking every ingestion's pass for those would make
// the cost of a run grow with its pods' chatter instead of with its outcomes.
var jobChangePredicate = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, okOld := e.ObjectOld.(*batchv1.Job)
		cur, okNew := e.ObjectNew.(*batchv1.Job)
		if !okOld || !okNew {
			return true
		}
		return jobChanged(old, cur)
	},
}

// jobChanged reports whether cur differs from old in anything describeJob or a pass acts on.
func jobChanged(old, cur *batchv1.Job) bool {
	if old.DeletionTimestamp.IsZero() != cur.DeletionTimestamp.IsZero() {
		return true
	}
	if suspended(old) != suspended(cur) {
		return true
	}
	// The TTL marks a recorded chunk's Job as released (set by the controller after recording).
	if (old.Spec.TTLSecondsAfterFinished == nil) != (cur.Spec.TTLSecondsAfterFinished == nil) {
		return true
	}
	o, n := &old.Status, &cur.Status
	if o.Active != n.Active || o.Succeeded != n.Succeeded || o.Failed != n.Failed {
		return true
	}
	if len(o.Conditions) != len(n.Conditions) {
		return true
	}
	for i := range n.Conditions {
		a, b := &o.Conditions[i], &n.Conditions[i]
		// Probe and transition times alone are not news.
		if a.Type != b.Type || a.Status != b.Status || a.Reason != b.Reason || a.Message != b.Message {
			return true
		}
	}
	return false
}

func suspended(j *batchv1.Job) bool { return j.Spec.Suspend != nil && *j.Spec.Suspend }
