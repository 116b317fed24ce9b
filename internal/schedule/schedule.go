// Package schedule holds the pure decisions of a CsvIngestionSchedule: parsing the cron
// expression in its time zone, which scheduled time (if any) is due now and how many were missed,
// the run's window in calendar days (window.go), the run's name, and rendering the template's
// windowed fields with a bounded renderer (render.go). The controller
// only reads the cluster and acts on what these functions return.
package schedule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones without relying on the image's /usr/share/zoneinfo

	"github.com/robfig/cron/v3"
)

// Parse reads a five-field cron expression or descriptor (@daily, @every 1h, ...) in the named
// IANA time zone (empty: UTC). CRON_TZ/TZ prefixes are rejected: the zone is a field of its own.
func Parse(expr, timeZone string) (cron.Schedule, *time.Location, error) {
	if strings.Contains(expr, "TZ=") {
		return nil, nil, errors.New("CRON_TZ or TZ in the schedule is not supported; use spec.timeZone")
	}
	loc := time.UTC
	if strings.EqualFold(timeZone, "Local") {
		// (time.LoadLocation reads it as the manager's own zone; a CronJob refuses it too)
		return nil, nil, fmt.Errorf("time zone %q: name an IANA time zone such as Europe/Berlin", timeZone)
	}
	if timeZone != "" {
		l, err := time.LoadLocation(timeZone)
		if err != nil {
			return nil, nil, fmt.Errorf("unknown time zone %q: %w", timeZone, err)
		}
		loc = l
	}
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid schedule %q: %w", expr, err)
	}
	// Runs are named by their scheduled minute: two in one minute would share a name, and the
	// second would be taken for the first.
	if d, ok := s.(cron.ConstantDelaySchedule); ok && d.Delay < MinInterval {
		return nil, nil, fmt.Errorf("invalid schedule %q: @every must be at least %v (runs are named by their minute)", expr, MinInterval)
	}
	return s, loc, nil
}

// MinInterval is the shortest @every a schedule may use.
const MinInterval = time.Minute

// TooManyMissed is the number of missed times above which a schedule reports it (as a CronJob
// does): usually a clock jump or an operator that was down for long.
const TooManyMissed = 100

// Due is the outcome of looking at the schedule at one instant.
type Due struct {
	// Time is the most recent scheduled time in (earliest, now] that should run now; zero when
	// nothing is due.
	Time time.Time
	// Missed counts the scheduled times in (earliest, now], including Time; more than one means
	// runs were missed and only the latest is started (no burst of catch-up runs).
	Missed int
	// TooLate is set when the most recent scheduled time is older than the starting deadline:
	// it is not started.
	TooLate bool
	// Next is the first scheduled time after now.
	Next time.Time
}

// MostRecent decides what is due at now. last is the scheduled time of the last run handled
// (created or skipped), or the schedule's creation time when none was. deadline, when > 0, is
// startingDeadlineSeconds: a time older than now-deadline is not started.
func MostRecent(s cron.Schedule, loc *time.Location, last, now time.Time, deadline time.Duration) Due {
	var d Due
	now = now.In(loc)
	t := s.Next(last.In(loc))
	if t.IsZero() { // the schedule never fires (e.g. 30 February)
		return d
	}
	// Walk the times after last; after a long outage jump close to now rather than iterate over
	// years of minutes. The jump starts twice the largest gap seen before now, so it never lands
	// after the most recent time (cron gaps vary, e.g. months).
	var maxGap time.Duration
	for !t.After(now) {
		d.Time = t
		d.Missed++
		n := s.Next(t)
		if n.IsZero() {
			break
		}
		if g := n.Sub(t); g > maxGap {
			maxGap = g
		}
		if d.Missed == TooManyMissed*10 && n.Add(2*maxGap).Before(now) {
			// Count the rest approximately from the gaps, and resume walking near now.
			from := now.Add(-2 * maxGap)
			skipped := int(from.Sub(n) / maxGap)
			d.Missed += skipped
			n = s.Next(from)
		}
		t = n
	}
	d.Next = t
	if d.Time.IsZero() {
		d.Missed = 0
		return d
	}
	if deadline > 0 && d.Time.Before(now.Add(-deadline)) {
		d.TooLate = true
	}
	return d
}

// RunName is the run's name: the schedule's name and the scheduled time in Unix minutes, as a
// CronJob names its Jobs. The same scheduled time always gives the same name, so a run is never
// created twice (AlreadyExists) even after a restart.
func RunName(schedule string, t time.Time) string {
	return schedule + "-" + strconv.FormatInt(t.Unix()/60, 10)
}
