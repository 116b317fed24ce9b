package schedule

import "time"

// Day is the calendar unit of a window: the whole-day part of a lookback or duration moves the
// date in the schedule's time zone and keeps the wall-clock time, so a daily window is one
// calendar day even when that day has 23 or 25 hours.
const Day = 24 * time.Hour

// DateLayout is the layout of Window.StartDate and Window.EndDate.
const DateLayout = "2006-01-02"

// Window is the span of time one run covers, in the schedule's time zone.
type Window struct {
	Start, End time.Time
	// StartDate and EndDate are Start and End as YYYY-MM-DD in the schedule's time zone.
	StartDate, EndDate string
}

// WindowFor is the window of the run scheduled at t (in the schedule's time zone):
// Start = t - lookback and End = t - lookback + length, where the whole days of lookback and
// length are calendar days (the date moves, the wall-clock time stays) and their remainders are
// elapsed time: Start = AddDays(t, -lookbackDays) - lookbackRest and
// End = AddDays(t, lengthDays-lookbackDays) + lengthRest - lookbackRest. Both ends are computed
// from t, so with lookback = length the window ends exactly at t.
func WindowFor(t time.Time, length, lookback time.Duration) Window {
	ld, lr := split(lookback)
	dd, dr := split(length)
	start := AddDays(t, -ld).Add(-lr)
	end := AddDays(t, dd-ld).Add(dr - lr)
	return Window{Start: start, End: end, StartDate: start.Format(DateLayout), EndDate: end.Format(DateLayout)}
}

// split is d in whole days and the rest.
func split(d time.Duration) (int, time.Duration) {
	days := d / Day
	return int(days), d - days*Day
}

// AddDays moves t by n calendar days in its location, keeping the wall-clock time. A wall-clock
// time that does not exist that day (skipped by a spring-forward transition) is read with the
// offset in effect before the transition, so it lands as far after the transition as it was
// after its start (02:30 in a 02:00→03:00 gap is 03:30); one that occurs twice (fall back) is
// the first of the two. This is Python's zoneinfo with fold=0 (PEP 495); time.Date leaves the
// choice unspecified and differs between zones, so it is not used for it.
func AddDays(t time.Time, n int) time.Time {
	loc := t.Location()
	y, m, d := t.Date()
	hh, mm, ss := t.Clock()
	if n == 0 {
		return t
	}
	return wallTime(y, m, d+n, hh, mm, ss, t.Nanosecond(), loc)
}

// wallTime is the instant of a wall-clock time in loc, resolved as AddDays describes.
func wallTime(y int, mo time.Month, d, hh, mm, ss, ns int, loc *time.Location) time.Time {
	// The wall clock read as UTC; the real instant is this minus the zone's offset then.
	naive := time.Date(y, mo, d, hh, mm, ss, ns, time.UTC)
	// Transitions are months apart: the offsets two days either side are the only candidates.
	_, before := naive.Add(-48 * time.Hour).In(loc).Zone()
	_, after := naive.Add(48 * time.Hour).In(loc).Zone()
	var best time.Time
	for _, off := range []int{before, after} {
		c := naive.Add(-time.Duration(off) * time.Second).In(loc)
		if !sameWall(c, naive) {
			continue
		}
		if best.IsZero() || c.Before(best) {
			best = c
		}
	}
	if best.IsZero() {
		// In a gap: the offset before the transition.
		best = naive.Add(-time.Duration(before) * time.Second).In(loc)
	}
	return best
}

func sameWall(t, naive time.Time) bool {
	y, m, d := t.Date()
	ny, nm, nd := naive.Date()
	return y == ny && m == nm && d == nd && t.Hour() == naive.Hour() && t.Minute() == naive.Minute() &&
		t.Second() == naive.Second()
}
