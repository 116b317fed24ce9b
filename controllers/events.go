package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// emitEvents runs after the status write: events describe what the written status says.
func (p *pass) emitEvents(before *v1alpha1.CsvIngestionStatus) {
	rec, obj, st := p.r.Recorder, p.obj, &p.status
	if rec == nil {
		return
	}
	if isTrue(st, v1alpha1.ConditionPlanned) && !isTrue(before, v1alpha1.ConditionPlanned) {
		rec.Eventf(obj, nil, corev1.EventTypeNormal, "Planned", "Plan", "%d rows in %d chunks; estimate %d tokens, %s USD, at least %s",
			st.Records.Total, st.Chunks.Total, estTokens(st), estCost(st), estDuration(st))
	}
	for _, fc := range p.newlyFailed {
		rec.Eventf(obj, nil, corev1.EventTypeWarning, "ChunkFailed", "RunChunk", "chunk %d (rows %s) failed: %s: %s", fc.Index, fc.Rows, fc.Reason, fc.Message)
	}
	for _, w := range p.warnings {
		rec.Eventf(obj, nil, corev1.EventTypeWarning, "ChunkCountsAdjusted", "RecordChunk", "%s", w)
	}
	// A refusal is announced when it starts or its message changes, and when it clears.
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionBlocked); c != nil {
		was := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionBlocked)
		switch {
		case c.Status == "True" && (was == nil || was.Status != "True" || was.Message != c.Message):
			rec.Eventf(obj, nil, corev1.EventTypeWarning, "Blocked", "Create", "%s", c.Message)
		case c.Status != "True" && was != nil && was.Status == "True":
			rec.Eventf(obj, nil, corev1.EventTypeNormal, "Unblocked", "Create", "%s", c.Message)
		}
	}
	if st.Phase == v1alpha1.PhaseProcessingChunks {
		was, is := isTrue(before, v1alpha1.ConditionSuspended), isTrue(st, v1alpha1.ConditionSuspended)
		if is && !was {
			rec.Eventf(obj, nil, corev1.EventTypeNormal, "Suspended", "Suspend", "suspended at %s chunks", st.Progress)
		}
		if was && !is {
			rec.Eventf(obj, nil, corev1.EventTypeNormal, "Resumed", "Resume", "resumed at %s chunks", st.Progress)
		}
	}
	// The deletion step of spec.sync.deleteMissing: when it starts, and how it ended.
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionMissingDeleted); c != nil {
		was := meta.FindStatusCondition(before.Conditions, v1alpha1.ConditionMissingDeleted)
		if was == nil || was.Status != c.Status || was.Reason != c.Reason {
			switch {
			case c.Status == "True":
				rec.Eventf(obj, nil, corev1.EventTypeNormal, ReasonDeleted, "DeleteMissing", "%s", c.Message)
			case c.Reason == ReasonDeleting || c.Reason == ReasonSyncWaiting || c.Reason == ReasonSyncSuspended || c.Reason == ReasonReportOnly:
				rec.Eventf(obj, nil, corev1.EventTypeNormal, c.Reason, "DeleteMissing", "%s", c.Message)
			case c.Reason != ReasonDeleteBlocked: // the Blocked event says it
				rec.Eventf(obj, nil, corev1.EventTypeWarning, c.Reason, "DeleteMissing", "%s", c.Message)
			}
		}
	}
	if isTrue(st, v1alpha1.ConditionSourceTruncated) && !isTrue(before, v1alpha1.ConditionSourceTruncated) {
		c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionSourceTruncated)
		rec.Eventf(obj, nil, corev1.EventTypeWarning, v1alpha1.ConditionSourceTruncated, "Plan", "%s", c.Message)
	}
	if st.Phase != before.Phase && st.Phase.Terminal() {
		typ := corev1.EventTypeNormal
		if st.Phase == v1alpha1.PhaseFailed || st.Phase == v1alpha1.PhasePartiallyCompleted {
			typ = corev1.EventTypeWarning
		}
		rec.Eventf(obj, nil, typ, string(st.Phase), "Finish", "%s", st.Message)
	}
}

func isTrue(st *v1alpha1.CsvIngestionStatus, t string) bool {
	return meta.IsStatusConditionTrue(st.Conditions, t)
}

func estTokens(st *v1alpha1.CsvIngestionStatus) int64 {
	if st.Estimate == nil {
		return 0
	}
	return st.Estimate.Tokens
}

func estCost(st *v1alpha1.CsvIngestionStatus) string {
	if st.Estimate == nil {
		return "?"
	}
	return st.Estimate.CostUSD
}

func estDuration(st *v1alpha1.CsvIngestionStatus) string {
	if st.Estimate == nil {
		return "?"
	}
	return st.Estimate.MinDuration
}
