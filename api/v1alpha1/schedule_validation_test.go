package v1alpha1_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

const (
	scheduleQ239    = "ingestion_v1alpha1_csvingestionschedule_q239.yaml"
	scheduleS3Daily = "ingestion_v1alpha1_csvingestionschedule_s3daily.yaml"
)

func TestScheduleSamplesAcceptedWithDefaults(t *testing.T) {
	ctx := context.Background()
	for _, file := range []string{scheduleQ239, scheduleS3Daily} {
		u := loadSample(t, file)
		if err := cluster.Client.Create(ctx, u); err != nil {
			t.Fatalf("%s rejected: %v", file, err)
		}
		got := &v1alpha1.CsvIngestionSchedule{}
		if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.ConcurrencyPolicy != v1alpha1.ConcurrencyForbid || got.Spec.SuccessfulHistoryLimit == nil ||
			got.Spec.FailedHistoryLimit == nil || got.Spec.Window.Duration == nil {
			t.Fatalf("%s: defaults not applied: %+v", file, got.Spec)
		}
		// The template's own defaults apply too.
		if got.Spec.Template.Spec.Chunking.RowsPerChunk != 1000 || got.Spec.Template.Spec.Target.Pinecone.BatchSize != 100 {
			t.Fatalf("%s: template defaults not applied: %+v", file, got.Spec.Template.Spec)
		}
		if err := cluster.Client.Delete(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	s := loadSample(t, scheduleS3Daily)
	if err := cluster.Client.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha1.CsvIngestionSchedule{}
	_ = cluster.Client.Get(ctx, client.ObjectKeyFromObject(s), got)
	if got.Spec.Window.Duration == nil || got.Spec.Window.Duration.Duration.String() != "24h0m0s" || got.Spec.SuccessfulHistoryLimit == nil || *got.Spec.SuccessfulHistoryLimit != 3 || *got.Spec.FailedHistoryLimit != 1 {
		t.Fatalf("defaults %+v", got.Spec)
	}
	_ = cluster.Client.Delete(ctx, s)
}

func TestScheduleValidation(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mutate func(u *unstructured.Unstructured)
		want   string // substring of the rejection; "" means accepted
	}{
		{"four fields", func(u *unstructured.Unstructured) { setField(u, "0 1 * *", "spec", "schedule") }, "must have five fields"},
		{"six fields", func(u *unstructured.Unstructured) { setField(u, "0 0 1 * * *", "spec", "schedule") }, "must have five fields"},
		{"descriptor", func(u *unstructured.Unstructured) { setField(u, "@hourly", "spec", "schedule") }, ""},
		{"every", func(u *unstructured.Unstructured) { setField(u, "@every 15m", "spec", "schedule") }, ""},
		{"TZ in the schedule", func(u *unstructured.Unstructured) { setField(u, "CRON_TZ=UTC 0 1 * * *", "spec", "schedule") }, "use spec.timeZone"},
		{"bad policy", func(u *unstructured.Unstructured) { setField(u, "Sometimes", "spec", "concurrencyPolicy") }, "Unsupported value"},
		{"every minute", func(u *unstructured.Unstructured) { setField(u, "@every 1m", "spec", "schedule") }, ""},
		{"every 90 seconds", func(u *unstructured.Unstructured) { setField(u, "@every 1m30s", "spec", "schedule") }, ""},
		{"every 30 seconds", func(u *unstructured.Unstructured) { setField(u, "@every 30s", "spec", "schedule") }, "@every must be at least 1m"},
		{"every 59.5 seconds", func(u *unstructured.Unstructured) { setField(u, "@every 59.5s", "spec", "schedule") }, "@every must be at least 1m"},
		{"negative deadline", func(u *unstructured.Unstructured) { setField(u, int64(-1), "spec", "startingDeadlineSeconds") }, "spec.startingDeadlineSeconds must be at least 1"},
		{"zero deadline", func(u *unstructured.Unstructured) { setField(u, int64(0), "spec", "startingDeadlineSeconds") }, "spec.startingDeadlineSeconds must be at least 1"},
		{"one second deadline", func(u *unstructured.Unstructured) { setField(u, int64(1), "spec", "startingDeadlineSeconds") }, ""},
		{"zero lookback", func(u *unstructured.Unstructured) { setField(u, "0s", "spec", "window", "lookback") }, ""},
		{"century lookback", func(u *unstructured.Unstructured) { setField(u, "876000h", "spec", "window", "lookback") }, ""},
		// Past Go's longest duration the manager cannot decode the schedule, and one such object
		// fails the list of every schedule in the cluster.
		{"lookback past Go range", func(u *unstructured.Unstructured) { setField(u, "3000000h", "spec", "window", "lookback") }, "spec.window.lookback"},
		{"window past Go range", func(u *unstructured.Unstructured) { setField(u, "3000000h", "spec", "window", "duration") }, "spec.window.duration"},
		{"Local time zone", func(u *unstructured.Unstructured) { setField(u, "Local", "spec", "timeZone") }, "spec.timeZone must be an explicit"},
		{"local time zone", func(u *unstructured.Unstructured) { setField(u, "local", "spec", "timeZone") }, "spec.timeZone must be an explicit"},
		{"IANA time zone", func(u *unstructured.Unstructured) { setField(u, "Australia/Lord_Howe", "spec", "timeZone") }, ""},
		{"suspended template", func(u *unstructured.Unstructured) { setField(u, true, "spec", "template", "spec", "suspend") }, "spec.template.spec.suspend must be false"},
		{"the template bomb", func(u *unstructured.Unstructured) {
			setField(u, `exports/{{range 3}}{{printf "%0999999d" 0}}{{end}}.csv`, "spec", "template", "spec", "source", "s3", "key")
		}, "spec.template.spec.source.s3.key: a template may only read fields"},
		{"printf in a pipeline", func(u *unstructured.Unstructured) {
			setField(u, `exports/{{ .ScheduleName | printf "%0999s" }}.csv`, "spec", "template", "spec", "source", "s3", "key")
		}, "spec.template.spec.source.s3.key: a template may only read fields"},
		{"if", func(u *unstructured.Unstructured) {
			setField(u, `exports/{{- if .ScheduleName }}x{{ end }}.csv`, "spec", "template", "spec", "source", "s3", "key")
		}, "if, range, with, define, template, block"},
		{"allowed functions and fields", func(u *unstructured.Unstructured) {
			setField(u, `exports/{{ .Window.StartDate }}-{{ addDays -1 .Window.End | date "2006-01-02" }}-{{ .Window.Start.Format "Monday" }}.csv`,
				"spec", "template", "spec", "source", "s3", "key")
		}, ""},
		{"zero window", func(u *unstructured.Unstructured) { setField(u, "0s", "spec", "window", "duration") }, "spec.window.duration must be at least 1s"},
		{"taskID in the template", func(u *unstructured.Unstructured) { setField(u, "fixed", "spec", "template", "spec", "taskID") }, "leave spec.template.spec.taskID unset"},
		{"cancelled template", func(u *unstructured.Unstructured) { setField(u, true, "spec", "template", "spec", "cancel") }, "spec.template.spec.cancel must be false"},
		{"stray brace in the key", func(u *unstructured.Unstructured) {
			setField(u, "exports/{{ .Window.Start.Format \"2006\" }.csv", "spec", "template", "spec", "source", "s3", "key")
		}, "template actions must be written {{ ... }}"},
		{"Allow with deleteMissing", func(u *unstructured.Unstructured) {
			setField(u, "Allow", "spec", "concurrencyPolicy")
			setField(u, true, "spec", "template", "spec", "sync", "deleteMissing")
		}, "spec.concurrencyPolicy Allow cannot be combined with spec.template.spec.sync.deleteMissing"},
		{"Forbid with deleteMissing", func(u *unstructured.Unstructured) {
			setField(u, "Forbid", "spec", "concurrencyPolicy")
			setField(u, true, "spec", "template", "spec", "sync", "deleteMissing")
		}, ""},
		{"Allow without deleteMissing", func(u *unstructured.Unstructured) { setField(u, "Allow", "spec", "concurrencyPolicy") }, ""},
		{"template's prefix must be prefix-free with deleteMissing", func(u *unstructured.Unstructured) {
			setField(u, "239", "spec", "template", "spec", "mapping", "idPrefix")
			setField(u, true, "spec", "template", "spec", "sync", "deleteMissing")
		}, "prefix-free spec.mapping.idPrefix"},
		{"name too long for run names", func(u *unstructured.Unstructured) { u.SetName(strings.Repeat("s", 41)) }, "at most 40 characters"},
		{"template's own rules still apply", func(u *unstructured.Unstructured) {
			setField(u, "x", "spec", "template", "spec", "mapping", "textTemplate")
		}, "set exactly one of spec.mapping.textColumn or spec.mapping.textTemplate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := loadSample(t, scheduleS3Daily)
			u.SetName("v-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"))
			if len(u.GetName()) > 40 {
				u.SetName(u.GetName()[:40])
			}
			tc.mutate(u)
			err := cluster.Client.Create(ctx, u)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				_ = cluster.Client.Delete(ctx, u)
				return
			}
			if err == nil {
				_ = cluster.Client.Delete(ctx, u)
				t.Fatalf("accepted, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// A schedule's template only shapes future runs: unlike a CsvIngestion's spec, its source,
// mapping, target and model may be edited.
func TestScheduleTemplateIsEditable(t *testing.T) {
	ctx := context.Background()
	u := loadSample(t, scheduleS3Daily)
	u.SetName("editable")
	if err := cluster.Client.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	defer cluster.Client.Delete(ctx, u)
	got := &v1alpha1.CsvIngestionSchedule{}
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(u), got); err != nil {
		t.Fatal(err)
	}
	got.Spec.Template.Spec.Source.S3.Key = `exports/other-{{ .Window.End.Format "2006-01-02" }}.csv`
	got.Spec.Template.Spec.Mapping.TextColumn = "body"
	got.Spec.Template.Spec.Target.Pinecone.Index = "other"
	got.Spec.Template.Spec.Embedding.Model = "text-embedding-3-large"
	got.Spec.Template.Spec.Chunking.RowsPerChunk = 500
	if err := cluster.Client.Update(ctx, got); err != nil {
		t.Fatalf("template edit rejected: %v", err)
	}
}

func setField(u *unstructured.Unstructured, v any, path ...string) {
	if err := unstructured.SetNestedField(u.Object, v, path...); err != nil {
		panic(err)
	}
}
