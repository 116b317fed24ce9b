package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConcurrencyPolicy says what a schedule does when a run is due while an earlier one is active.
// +kubebuilder:validation:Enum=Forbid;Replace;Allow
type ConcurrencyPolicy string

const (
	// ConcurrencyForbid skips the new run (the old service's lock table: the loser was SKIPPED).
	ConcurrencyForbid ConcurrencyPolicy = "Forbid"
	// ConcurrencyReplace cancels the active runs (spec.cancel) and starts the new one.
	ConcurrencyReplace ConcurrencyPolicy = "Replace"
	// ConcurrencyAllow starts the new run alongside the active ones.
	ConcurrencyAllow ConcurrencyPolicy = "Allow"
)

// CsvIngestionScheduleSpec creates a CsvIngestion from a template on a cron schedule, the way a
// CronJob creates Jobs. Each run gets a time window derived from its scheduled time, which the
// template's S3 key and Metabase parameters may use.
//
// +kubebuilder:validation:XValidation:rule="!self.schedule.contains('TZ=')",message="spec.schedule must not set CRON_TZ or TZ; use spec.timeZone"
// +kubebuilder:validation:XValidation:rule="!has(self.concurrencyPolicy) || self.concurrencyPolicy != 'Allow' || !has(self.template.spec.sync) || !has(self.template.spec.sync.deleteMissing) || !self.template.spec.sync.deleteMissing",message="spec.concurrencyPolicy Allow cannot be combined with spec.template.spec.sync.deleteMissing: two runs at once would delete each other's new vectors; use Forbid or Replace"
type CsvIngestionScheduleSpec struct {
	// Schedule in cron format (minute hour day-of-month month day-of-week, or @hourly, @daily,
	// @weekly, @monthly, @yearly, @every <duration>), read in timeZone.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.matches('^@(yearly|annually|monthly|weekly|daily|midnight|hourly|every [0-9a-z.]+)$') || self.matches('^ *[^ ]+( +[^ ]+){4} *$')",message="spec.schedule must have five fields (minute hour day-of-month month day-of-week), e.g. '0 1 * * *', or be a descriptor such as @daily"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('@every ') || !self.substring(7).matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.substring(7)) >= duration('1m')",message="spec.schedule: @every must be at least 1m (runs are named by their minute; two in one minute would collide), e.g. @every 5m"
	Schedule string `json:"schedule"`

	// TimeZone of the schedule and of the window's times, an IANA name such as Europe/Berlin;
	// empty means UTC.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9_+/-]*$`
	// +kubebuilder:validation:XValidation:rule="self.lowerAscii() != 'local'",message="spec.timeZone must be an explicit IANA time zone such as Europe/Berlin, not Local (the manager's own zone); as a CronJob's timeZone"
	TimeZone string `json:"timeZone,omitempty"`

	// StartingDeadlineSeconds: a run that could not start within this many seconds of its
	// scheduled time (the operator was down, say) is missed rather than started late. Unset: a
	// missed run is started late, once (the most recent one). At least 1: a run is never started
	// in the very second it is due, so 0 would skip every run.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="spec.startingDeadlineSeconds must be at least 1 (0 would skip every run; leave it unset to start missed runs late)"
	StartingDeadlineSeconds *int64 `json:"startingDeadlineSeconds,omitempty"`

	// ConcurrencyPolicy when a run is due while another is active: Forbid skips the new run,
	// Replace cancels the active one and starts the new one, Allow runs both.
	// +optional
	// +kubebuilder:default=Forbid
	ConcurrencyPolicy ConcurrencyPolicy `json:"concurrencyPolicy,omitempty"`

	// Suspend stops new runs; active runs go on.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// SuccessfulHistoryLimit is how many Completed runs are kept.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	SuccessfulHistoryLimit *int32 `json:"successfulHistoryLimit,omitempty"`

	// FailedHistoryLimit is how many Failed, PartiallyCompleted or Cancelled runs are kept.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	FailedHistoryLimit *int32 `json:"failedHistoryLimit,omitempty"`

	// Window is the span of time each run covers, exposed to the template as .Window.Start and
	// .Window.End.
	// +optional
	// +kubebuilder:default={}
	Window WindowSpec `json:"window,omitempty"`

	// Template is the CsvIngestion each run creates.
	Template CsvIngestionTemplate `json:"template"`
}

// WindowSpec places a run's window relative to its scheduled time T:
// Start = T - lookback, End = Start + duration. With the defaults a daily run at 01:00 covers the
// 24 hours before it; the old Metabase runs (start yesterday, end start + 2 days) are
// lookback 24h, duration 48h.
type WindowSpec struct {
	// Duration of the window; its whole days are calendar days in timeZone.
	// +optional
	// +kubebuilder:default="24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="spec.window.duration must be at least 1s, e.g. 24h"
	Duration *metav1.Duration `json:"duration,omitempty"`

	// Lookback is how long before the scheduled time the window starts; unset: duration, so the
	// window ends at the scheduled time. 0s is a window that starts at the scheduled time. Whole
	// days of lookback and duration are calendar days in timeZone (docs/scheduling.md).
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="spec.window.lookback must be at most 2562047h (the longest duration the manager can read), e.g. 24h"
	Lookback *metav1.Duration `json:"lookback,omitempty"`
}

// CsvIngestionTemplate is the CsvIngestion a run creates. spec.source.s3.key and the values of
// spec.source.metabase.parameters are Go templates over the run:
// {{ .Window.Start.Format "2006-01-02" }}, .Window.End, .ScheduledTime (all in timeZone) and
// .ScheduleName. Other fields are copied as they are, except that a template without spec.sync
// gives its runs sync.mode incremental.
//
// +kubebuilder:validation:XValidation:rule="!has(self.spec.taskID)",message="leave spec.template.spec.taskID unset: every run gets its own task id (its uid)"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.cancel) || !self.spec.cancel",message="spec.template.spec.cancel must be false: a cancelled template would start runs that do nothing"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.suspend) || !self.spec.suspend",message="spec.template.spec.suspend must be false: every run would stay suspended (and under Forbid block all later runs); suspend the schedule with spec.suspend"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.source.s3) || self.spec.source.s3.key.matches('^([^{}]|[{][{][^{}]*[}][}])*$')",message="spec.template.spec.source.s3.key: template actions must be written {{ ... }} and braces may appear only around them"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.source.s3) || !self.spec.source.s3.key.matches('[{][{]([^}]*[^A-Za-z0-9_.$])?(if|else|end|range|with|define|template|block|break|continue|printf|print|println|call|index|slice|len|html|js|urlquery|and|or|not|eq|ne|lt|le|gt|ge)([^A-Za-z0-9_]|$)')",message="spec.template.spec.source.s3.key: a template may only read fields (.Window.Start, .Window.StartDate, .ScheduledTime...) and call addDays, addHours, addMinutes, date, utc and time methods such as .Format; if, range, with, define, template, block and built-in functions such as printf are not allowed"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.sync) || !has(self.spec.sync.deleteMissing) || !self.spec.sync.deleteMissing || !has(self.spec.mapping.idPrefix) || size(self.spec.mapping.idPrefix) == 0 || ('.:/-_#|'.contains(self.spec.mapping.idPrefix.substring(size(self.spec.mapping.idPrefix) - 1)) && !self.spec.mapping.idPrefix.substring(0, size(self.spec.mapping.idPrefix) - 1).contains(self.spec.mapping.idPrefix.substring(size(self.spec.mapping.idPrefix) - 1)))",message="spec.sync.deleteMissing needs a prefix-free spec.mapping.idPrefix: it must end with one of . : / - _ # | and that character must not occur earlier in it (e.g. \"q1.\" or \"orders-\", not \"q1\", \"q1.a.\" or \"orders-eu-\"), so that no other source's prefix of that form starts with it (\"q1\" would also list \"q10…\")"
type CsvIngestionTemplate struct {
	// Metadata: labels and annotations copied to every run.
	// +optional
	Metadata TemplateMetadata `json:"metadata,omitempty"`

	// Spec of every run.
	Spec CsvIngestionSpec `json:"spec"`
}

// TemplateMetadata are the labels and annotations of a run.
type TemplateMetadata struct {
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Schedule condition types.
const (
	// ConditionScheduleReady is True while the schedule, time zone and templates are valid.
	ConditionScheduleReady = "Ready"
	// ConditionRunSkipped is True when the last due run was not created: skipped under Forbid,
	// past the starting deadline, or refused by the API server (reason RunRejected).
	ConditionRunSkipped = "RunSkipped"
	// ConditionHistoryPruned is False when a finished run beyond the history limits could not be
	// deleted; scheduling goes on.
	ConditionHistoryPruned = "HistoryPruned"
	// ReasonRunRejected is the reason of Ready=False and RunSkipped=True while the latest due
	// run's creation is refused (admission policy, quota, validation) or fails; both stay until
	// a run is created.
	ReasonRunRejected = "RunRejected"
)

// CsvIngestionScheduleStatus is what the schedule has done.
type CsvIngestionScheduleStatus struct {
	// ObservedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready, RunSkipped, HistoryPruned.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// Active lists the runs that have not finished.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	Active []ScheduledRun `json:"active,omitempty"`

	// ActiveCount is len(active), for kubectl.
	// +optional
	ActiveCount int32 `json:"activeCount,omitempty"`

	// LastScheduleTime is the scheduled time of the last run created.
	// +optional
	LastScheduleTime *metav1.Time `json:"lastScheduleTime,omitempty"`

	// LastSuccessfulTime is when the last Completed run finished.
	// +optional
	LastSuccessfulTime *metav1.Time `json:"lastSuccessfulTime,omitempty"`

	// LastSkippedTime is the scheduled time of the last run skipped (Forbid, starting deadline).
	// +optional
	LastSkippedTime *metav1.Time `json:"lastSkippedTime,omitempty"`

	// LastRejectedTime is the scheduled time of the last run whose creation was refused or
	// failed; it is retried with backoff until created, superseded by a later time or too late.
	// +optional
	LastRejectedTime *metav1.Time `json:"lastRejectedTime,omitempty"`

	// SkippedRuns counts the scheduled times not run: skipped under Forbid, past the starting
	// deadline, or refused (each scheduled time once, however often it is retried).
	// +optional
	SkippedRuns int64 `json:"skippedRuns,omitempty"`

	// NextScheduleTime is when the next run is due.
	// +optional
	NextScheduleTime *metav1.Time `json:"nextScheduleTime,omitempty"`

	// Message is a human summary of the last decision.
	// +optional
	Message string `json:"message,omitempty"`
}

// ScheduledRun is one run of a schedule.
type ScheduledRun struct {
	// Name of the CsvIngestion.
	Name string `json:"name"`
	// ScheduledTime the run is for.
	ScheduledTime metav1.Time `json:"scheduledTime"`
}

// CsvIngestionSchedule creates CsvIngestions on a cron schedule, each covering a time window.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=csvis,categories=vectordb
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Timezone",type=string,JSONPath=`.spec.timeZone`,priority=1
// +kubebuilder:printcolumn:name="Suspend",type=boolean,JSONPath=`.spec.suspend`
// +kubebuilder:printcolumn:name="Active",type=integer,JSONPath=`.status.activeCount`
// +kubebuilder:printcolumn:name="Last Schedule",type=date,JSONPath=`.status.lastScheduleTime`
// +kubebuilder:printcolumn:name="Last Success",type=date,JSONPath=`.status.lastSuccessfulTime`
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.skippedRuns`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 40",message="metadata.name of a CsvIngestionSchedule must be at most 40 characters: runs are named <name>-<scheduled time in unix minutes>, and their Jobs add a suffix to that"
type CsvIngestionSchedule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CsvIngestionScheduleSpec   `json:"spec,omitempty"`
	Status CsvIngestionScheduleStatus `json:"status,omitempty"`
}

// CsvIngestionScheduleList is a list of CsvIngestionSchedule.
// +kubebuilder:object:root=true
type CsvIngestionScheduleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CsvIngestionSchedule `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CsvIngestionSchedule{}, &CsvIngestionScheduleList{})
}
