package controllers

import "errors"

// TrackingRefusal is implemented by Tracker errors that are a decision rather than an outage:
// the operator's policy refuses the spec's table or endpoint, or the task item belongs to another
// ingestion. Its reason replaces TaskTableUnavailable in the TrackingDegraded condition, so the
// author sees what to change.
type TrackingRefusal interface {
	error
	TrackingReason() string
}

// trackingReason is the TrackingDegraded reason for a failed mirror.
func trackingReason(err error) string {
	var r TrackingRefusal
	if errors.As(err, &r) && r.TrackingReason() != "" {
		return r.TrackingReason()
	}
	return "TaskTableUnavailable"
}
