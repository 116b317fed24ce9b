package schedule

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		expr, tz, err string
	}{
		{expr: "0 1 * * *"},
		{expr: "*/5 * * * *", tz: "Europe/Berlin"},
		{expr: "@daily"},
		{expr: "@every 90s"},
		{expr: "@every 1m"},
		{expr: "@every 30s", err: "@every must be at least 1m"},
		{expr: "@every 59s", err: "@every must be at least 1m"},
		{expr: "0 1 * *", err: "invalid schedule"},
		{expr: "61 * * * *", err: "invalid schedule"},
		{expr: "CRON_TZ=UTC 0 1 * * *", err: "use spec.timeZone"},
		{expr: "0 1 * * *", tz: "Mars/Olympus", err: "unknown time zone"},
		{expr: "0 1 * * *", tz: "Local", err: "name an IANA time zone"},
		{expr: "0 1 * * *", tz: "Australia/Lord_Howe"},
	} {
		_, loc, err := Parse(tc.expr, tc.tz)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q, %q) = %v, want error with %q", tc.expr, tc.tz, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q, %q): %v", tc.expr, tc.tz, err)
			continue
		}
		if tc.tz != "" && loc.String() != tc.tz {
			t.Errorf("location %s, want %s", loc, tc.tz)
		}
	}
}

func TestMostRecent(t *testing.T) {
	for _, tc := range []struct {
		name, expr, tz, last, now string
		deadline                  time.Duration
		want                      string // most recent due time; "" when none
		missed                    int
		tooLate                   bool
		next                      string
	}{
		{name: "nothing due yet", expr: "*/1 * * * *", last: "2026-01-01T10:00:00Z", now: "2026-01-01T10:00:59Z",
			next: "2026-01-01T10:01:00Z"},
		{name: "exactly at the time", expr: "*/1 * * * *", last: "2026-01-01T10:00:00Z", now: "2026-01-01T10:01:00Z",
			want: "2026-01-01T10:01:00Z", missed: 1, next: "2026-01-01T10:02:00Z"},
		{name: "created mid-minute", expr: "* * * * *", last: "2026-01-01T10:00:30Z", now: "2026-01-01T10:01:05Z",
			want: "2026-01-01T10:01:00Z", missed: 1, next: "2026-01-01T10:02:00Z"},
		{name: "outage across two times: one run, the latest", expr: "* * * * *", last: "2026-01-01T10:00:00Z", now: "2026-01-01T10:02:30Z",
			want: "2026-01-01T10:02:00Z", missed: 2, next: "2026-01-01T10:03:00Z"},
		{name: "daily, a day down", expr: "0 1 * * *", last: "2026-01-01T01:00:00Z", now: "2026-01-03T02:00:00Z",
			want: "2026-01-03T01:00:00Z", missed: 2, next: "2026-01-04T01:00:00Z"},
		{name: "deadline met", expr: "0 1 * * *", last: "2026-01-01T01:00:00Z", now: "2026-01-02T01:00:30Z", deadline: time.Minute,
			want: "2026-01-02T01:00:00Z", missed: 1, next: "2026-01-03T01:00:00Z"},
		{name: "deadline passed", expr: "0 1 * * *", last: "2026-01-01T01:00:00Z", now: "2026-01-02T01:05:00Z", deadline: time.Minute,
			want: "2026-01-02T01:00:00Z", missed: 1, tooLate: true, next: "2026-01-03T01:00:00Z"},
		{name: "time zone", expr: "0 1 * * *", tz: "America/New_York", last: "2026-01-01T00:00:00Z", now: "2026-01-01T07:00:00Z",
			want: "2026-01-01T06:00:00Z", missed: 1, next: "2026-01-02T06:00:00Z"},
		{name: "a year of minutes down is not iterated minute by minute", expr: "* * * * *", last: "2025-01-01T00:00:00Z", now: "2026-01-01T00:00:30Z",
			want: "2026-01-01T00:00:00Z", missed: 525600, next: "2026-01-01T00:01:00Z"},
		{name: "monthly after years", expr: "0 0 1 * *", last: "2020-01-01T00:00:00Z", now: "2026-03-15T00:00:00Z",
			want: "2026-03-01T00:00:00Z", missed: 74, next: "2026-04-01T00:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, loc, err := Parse(tc.expr, tc.tz)
			if err != nil {
				t.Fatal(err)
			}
			d := MostRecent(s, loc, mustTime(t, tc.last), mustTime(t, tc.now), tc.deadline)
			if tc.want == "" {
				if !d.Time.IsZero() || d.Missed != 0 {
					t.Fatalf("due %v (%d missed), want nothing", d.Time, d.Missed)
				}
			} else if !d.Time.Equal(mustTime(t, tc.want)) {
				t.Fatalf("due %v, want %s", d.Time, tc.want)
			}
			// Past the exact walk the count is estimated from the gaps: allow 1 %.
			if diff := d.Missed - tc.missed; diff*100 > tc.missed || -diff*100 > tc.missed {
				t.Errorf("missed %d, want %d", d.Missed, tc.missed)
			}
			if d.TooLate != tc.tooLate {
				t.Errorf("tooLate %v, want %v", d.TooLate, tc.tooLate)
			}
			if !d.Next.Equal(mustTime(t, tc.next)) {
				t.Errorf("next %v, want %s", d.Next, tc.next)
			}
		})
	}
}

func TestWindowFor(t *testing.T) {
	at := mustTime(t, "2025-01-11T01:00:00Z")
	for _, tc := range []struct {
		name             string
		length, lookback time.Duration
		start, end       string
	}{
		{"default day ending at the run", 24 * time.Hour, 24 * time.Hour, "2025-01-10T01:00:00Z", "2025-01-11T01:00:00Z"},
		{"legacy Metabase: yesterday + 2 days", 48 * time.Hour, 24 * time.Hour, "2025-01-10T01:00:00Z", "2025-01-12T01:00:00Z"},
		{"hour", time.Hour, time.Hour, "2025-01-11T00:00:00Z", "2025-01-11T01:00:00Z"},
		{"lookback 0: the window starts at the run", 24 * time.Hour, 0, "2025-01-11T01:00:00Z", "2025-01-12T01:00:00Z"},
	} {
		w := WindowFor(at, tc.length, tc.lookback)
		if !w.Start.Equal(mustTime(t, tc.start)) || !w.End.Equal(mustTime(t, tc.end)) {
			t.Errorf("%s: window %v..%v, want %s..%s", tc.name, w.Start, w.End, tc.start, tc.end)
		}
	}
}

func TestRunName(t *testing.T) {
	at := mustTime(t, "2026-01-01T10:02:00Z") // date -ud 2026-01-01T10:02:00Z +%s, / 60
	if got, want := RunName("q239-daily", at), "q239-daily-29454362"; got != want {
		t.Fatalf("RunName = %s, want %s", got, want)
	}
	if RunName("q", at) == RunName("q", at.Add(time.Minute)) {
		t.Fatal("two scheduled minutes share a name")
	}
	// The longest schedule name the CRD admits keeps the run's name within a Job-name budget.
	if n := len(RunName(strings.Repeat("a", 40), mustTime(t, "2200-01-01T00:00:00Z"))); n > 50 {
		t.Fatalf("run name of %d characters", n)
	}
}

func TestRenderSpec(t *testing.T) {
	at := mustTime(t, "2025-01-11T01:00:00Z")
	d := Data{Window: WindowFor(at, 48*time.Hour, 24*time.Hour), ScheduledTime: at, ScheduleName: "q239"}
	if d.Window.StartDate != "2025-01-10" || d.Window.EndDate != "2025-01-12" {
		t.Fatalf("window dates %s..%s", d.Window.StartDate, d.Window.EndDate)
	}
	tpl := v1alpha1.CsvIngestionSpec{Source: v1alpha1.SourceSpec{
		S3: &v1alpha1.S3Source{Bucket: "b", Key: `exports/239-{{ .Window.Start.Format "2006-01-02" }}.csv`}}}
	got, err := RenderSpec(tpl, d)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source.S3.Key != "exports/239-2025-01-10.csv" {
		t.Fatalf("key %q", got.Source.S3.Key)
	}
	if tpl.Source.S3.Key == got.Source.S3.Key {
		t.Fatal("the template was modified in place")
	}

	mb := v1alpha1.CsvIngestionSpec{Source: v1alpha1.SourceSpec{Metabase: &v1alpha1.MetabaseSource{Parameters: map[string]string{
		"Start_Date": `{{ .Window.Start.Format "2006-01-02" }}`, "End_Date": `{{ .Window.End.Format "2006-01-02" }}`, "Org": "42"}}}}
	got, err = RenderSpec(mb, d)
	if err != nil {
		t.Fatal(err)
	}
	p := got.Source.Metabase.Parameters
	if p["Start_Date"] != "2025-01-10" || p["End_Date"] != "2025-01-12" || p["Org"] != "42" {
		t.Fatalf("parameters %v", p)
	}

	for _, bad := range []struct{ key, err string }{
		{`x-{{ .Window.Begin }}`, "spec.template.spec.source.s3.key: field .Window.Begin is not allowed"},
		{`x-{{ .Window.Start.Format "2006" `, "unclosed action"},
		{`{{ "" }}`, "spec.template.spec.source.s3.key: renders to an empty key"},
		{`{{ nope }}`, `function "nope" not defined`},
	} {
		tpl.Source.S3.Key = bad.key
		if _, err := RenderSpec(tpl, d); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("key %q: error %v, want %q", bad.key, err, bad.err)
		}
	}
}

// The functions and fields a template may use render as documented.
func TestRenderAllowed(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 9, 0, 0, 0, 0, ny)
	d := Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "q239"}
	for _, tc := range []struct{ tpl, want string }{
		{`{{ .Window.StartDate }}_{{ .Window.EndDate }}`, "2026-03-08_2026-03-09"},
		{`{{ .Window.Start.Format "2006-01-02T15:04Z07:00" }}`, "2026-03-08T00:00-05:00"},
		{`{{ .Window.Start.UTC.Format "15" }}`, "05"},
		{`{{ addDays -1 .Window.Start | date "2006-01-02" }}`, "2026-03-07"},
		{`{{ (addHours 3 .ScheduledTime).Format "15:04" }}`, "03:00"},
		{`{{ addMinutes 90 .ScheduledTime | utc | date "15:04" }}`, "05:30"},
		{`{{ .ScheduleName }}-{{ .ScheduledTime.Year }}{{/* a comment */}}`, "q239-2026"},
		{`plain/key.csv`, "plain/key.csv"},
	} {
		got, err := Render("f", tc.tpl, 100, d)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.tpl, got, err, tc.want)
		}
	}
}

// Anything but reading fields and calling the allowed functions is refused before it runs, with
// a message naming the field; output and template length are capped.
func TestRenderRefuses(t *testing.T) {
	at := mustTime(t, "2025-01-16T01:00:00Z") // the window starts on a Wednesday
	d := Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "q239"}
	for _, tc := range []struct{ name, tpl, want string }{
		{"the bomb of the issue", `{{range 3}}{{printf "%0999999d" 0}}{{end}}`, "{{range}} is not allowed"},
		{"a bigger bomb", `{{range 100000000}}{{range 1000}}{{printf "%0999999d" 0}}{{end}}{{end}}`, "{{range}} is not allowed"},
		{"printf width", `{{printf "%0999999d" 0}}`, `function "printf" is not allowed`},
		{"printf in a pipeline", `{{ .ScheduleName | printf "%0999999s" }}`, `function "printf" is not allowed`},
		{"define and template", `{{define "a"}}{{.}}{{.}}{{end}}{{template "a" .}}`, "not allowed"},
		{"block", `{{block "b" .}}x{{end}}`, "not allowed"},
		{"with", `{{with .Window}}{{.Start}}{{end}}`, "{{with}} is not allowed"},
		{"if", `{{if .ScheduleName}}x{{end}}`, "{{if}} is not allowed"},
		{"variables", `{{$x := .ScheduleName}}{{$x}}`, "variables"},
		{"dot", `{{ . }}`, "{{ . }} is not allowed"},
		{"a method outside the allow-list", `{{ .Window.Start.Local }}`, "method .Local"},
		{"a method of a string", `{{ .ScheduleName.Len }}`, "method .Len"},
		{"index", `{{ index .ScheduleName 0 }}`, `function "index" is not allowed`},
		{"call", `{{ call .ScheduleName }}`, `function "call" is not allowed`},
		{"a function as a value", `{{ date utc }}`, "as an argument"},
		{"output over the cap", `{{ .Window.Start.Format "` + strings.Repeat("Monday ", 140) + `" }}`, "output too long: over 1024 characters"},
		{"template over the cap", strings.Repeat("x", 1025), "template of 1025 characters, at most 1024"},
		{"addDays overflow", `{{ addDays 99999999 .ScheduledTime }}`, "at most 36600 days"},
	} {
		_, err := Render("spec.template.spec.source.s3.key", tc.tpl, MaxKeyLength, d)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "spec.template.spec.source.s3.key: ") {
			t.Errorf("%s: %v, want an error naming the field with %q", tc.name, err, tc.want)
		}
		var te *TemplateError
		if !errors.As(err, &te) {
			t.Errorf("%s: %T is not a *TemplateError", tc.name, err)
		}
	}
}

// A Metabase parameter is named in the error, and its cap is the CRD's.
func TestRenderSpecNamesTheParameter(t *testing.T) {
	at := mustTime(t, "2025-01-11T01:00:00Z")
	d := Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "q239"}
	mb := v1alpha1.CsvIngestionSpec{Source: v1alpha1.SourceSpec{Metabase: &v1alpha1.MetabaseSource{Parameters: map[string]string{
		"Start_Date": `{{ .Window.StartDate }}`, "Bomb": `{{range 3}}{{printf "%0999999d" 0}}{{end}}`}}}}
	_, err := RenderSpec(mb, d)
	if err == nil || !strings.HasPrefix(err.Error(), "spec.template.spec.source.metabase.parameters.Bomb: {{range}} is not allowed") {
		t.Fatalf("error %v", err)
	}
}

// Every sample schedule's templates pass the bounded renderer.
func TestSampleSchedulesRender(t *testing.T) {
	paths, err := filepath.Glob("../../config/samples/*csvingestionschedule*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no sample schedules (%v)", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var s v1alpha1.CsvIngestionSchedule
		if err := yaml.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		at := mustTime(t, "2026-03-09T01:00:00Z")
		if _, err := RenderSpec(s.Spec.Template.Spec, Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: s.Name}); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// Lengths are characters, as the CRD counts them (MaxLength, size()), not bytes: a key or
// parameter the API server accepts is not refused by the renderer.
func TestRenderCountsCharacters(t *testing.T) {
	at := mustTime(t, "2026-03-09T01:00:00Z")
	d := Data{Window: WindowFor(at, Day, Day), ScheduledTime: at, ScheduleName: "q239"}
	wide := strings.Repeat("é", 1000) // 2,000 bytes
	for _, tc := range []struct{ tpl, want, err string }{
		{wide, wide, ""},
		{wide + `{{.ScheduleName}}`, wide + "q239", ""},
		{`{{ .Window.Start.Format "` + strings.Repeat("é", 990) + `" }}`, strings.Repeat("é", 990), ""},
		{strings.Repeat("é", 1025), "", "template of 1025 characters, at most 1024"},
		{strings.Repeat("é", 1020) + `{{.ScheduleName}}`, "", "template of 1037 characters"},
		{strings.Repeat(`{{.Window.Start}}`, 60), "", "output too long: over 1024 characters"},
	} {
		got, err := Render(FieldParameters+".p", tc.tpl, MaxParameterLength, d)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%.40q...: %v, want %q", tc.tpl, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%.40q...: %.40q, %v", tc.tpl, got, err)
		}
	}
}
