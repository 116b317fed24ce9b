package schedule

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// dstData is testdata/dst_windows.json, computed by testdata/dst_windows.py with Python's
// zoneinfo: an independent computation of the scheduled times and windows around DST.
type dstData struct {
	Configs map[string]struct {
		LookbackSeconds *int64 `json:"lookbackSeconds"`
		DurationSeconds int64  `json:"durationSeconds"`
	} `json:"configs"`
	Cases []struct {
		Zone, Schedule, From, To string
		Runs                     []struct {
			Scheduled string `json:"scheduled"`
			Windows   map[string]struct {
				Start, End, StartDate, EndDate string
			} `json:"windows"`
		} `json:"runs"`
	} `json:"cases"`
}

// Around spring-forward and fall-back in America/New_York and Europe/Berlin, for runs at
// midnight and at 02:30: the scheduled times are robfig/cron's own (the library CronJob uses),
// and they and every window match the Python computation.
func TestWindowsAcrossDST(t *testing.T) {
	b, err := os.ReadFile("testdata/dst_windows.json")
	if err != nil {
		t.Fatal(err)
	}
	var data dstData
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	if len(data.Cases) != 8 {
		t.Fatalf("%d cases in the testdata, want 2 zones x 2 transitions x 2 schedules", len(data.Cases))
	}
	for _, c := range data.Cases {
		t.Run(c.Zone+" "+c.Schedule+" "+c.From, func(t *testing.T) {
			s, loc, err := Parse(c.Schedule, c.Zone)
			if err != nil {
				t.Fatal(err)
			}
			from, _ := time.ParseInLocation("2006-01-02", c.From, loc)
			to, _ := time.ParseInLocation("2006-01-02", c.To, loc)
			to = AddDays(to, 1)
			var got []time.Time
			for at := s.Next(from.Add(-time.Second)); at.Before(to); at = s.Next(at) {
				got = append(got, at)
			}
			if len(got) != len(c.Runs) {
				t.Fatalf("robfig/cron schedules %d runs (%v), Python %d", len(got), got, len(c.Runs))
			}
			for i, run := range c.Runs {
				want, err := time.Parse(time.RFC3339, run.Scheduled)
				if err != nil {
					t.Fatal(err)
				}
				at := got[i].In(loc)
				if !at.Equal(want) {
					t.Fatalf("run %d at %v, Python %v", i, at, want)
				}
				for name, w := range run.Windows {
					cfg := data.Configs[name]
					length := time.Duration(cfg.DurationSeconds) * time.Second
					lookback := length
					if cfg.LookbackSeconds != nil {
						lookback = time.Duration(*cfg.LookbackSeconds) * time.Second
					}
					win := WindowFor(at, length, lookback)
					if win.Start.Format(time.RFC3339) != w.Start || win.End.Format(time.RFC3339) != w.End ||
						win.StartDate != w.StartDate || win.EndDate != w.EndDate {
						t.Errorf("run %s, %s: window %s..%s (%s..%s), want %s..%s (%s..%s)", run.Scheduled, name,
							win.Start.Format(time.RFC3339), win.End.Format(time.RFC3339), win.StartDate, win.EndDate,
							w.Start, w.End, w.StartDate, w.EndDate)
					}
				}
			}
		})
	}
}

// The case: @daily in America/New_York, the run of 2026-03-09 reads 2026-03-08 (the
// 23-hour day), not 2026-03-07.
func TestDailyWindowIsTheCalendarDay(t *testing.T) {
	s, loc, err := Parse("@daily", "America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	at := s.Next(time.Date(2026, 3, 8, 12, 0, 0, 0, loc)).In(loc)
	w := WindowFor(at, Day, Day)
	if w.StartDate != "2026-03-08" || w.End.Sub(w.Start) != 23*time.Hour {
		t.Fatalf("run %v: window %v..%v (%s)", at, w.Start, w.End, w.StartDate)
	}
}
