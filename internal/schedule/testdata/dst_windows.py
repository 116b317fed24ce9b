#!/usr/bin/env python3
"""Expected DST windows for internal/schedule's TestWindowsAcrossDST, computed independently of
the Go code with Python's zoneinfo (PEP 495, fold=0 for a wall-clock time that is skipped or
repeated). Regenerate with:

    python3 internal/schedule/testdata/dst_windows.py > internal/schedule/testdata/dst_windows.json

For each zone, schedule (daily at a wall-clock time) and local date around a transition it lists
the run(s) of that date the way cron reads a wall-clock time (a time skipped by spring-forward
has no run; a repeated one has two, one per occurrence) and, for each window configuration, the
window: Start = T - lookback and End = T - lookback + duration, the whole days of each moving the
date at the same wall-clock time, the rest elapsed time.
"""
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

UTC = timezone.utc
DAY = 86400

# (lookback, duration) in seconds; None lookback = duration.
CONFIGS = {
    "default-1d": (None, DAY),
    "metabase-24h-48h": (DAY, 2 * DAY),
    "lookback-0s": (0, DAY),
    "36h-12h": (DAY + 12 * 3600, 12 * 3600),
    "1h": (None, 3600),
}

CASES = [  # zone, first local date, last local date (around a transition)
    ("America/New_York", "2026-03-06", "2026-03-11"),
    ("America/New_York", "2026-10-30", "2026-11-04"),
    ("Europe/Berlin", "2026-03-27", "2026-04-01"),
    ("Europe/Berlin", "2026-10-23", "2026-10-28"),
]

SCHEDULES = {"0 0 * * *": (0, 0), "30 2 * * *": (2, 30)}


def wall(naive, loc):
    """The instant of a wall-clock time, fold=0: a skipped time with the offset before the
    transition, a repeated one its first occurrence."""
    return naive.replace(tzinfo=loc, fold=0).astimezone(UTC)


def occurrences(naive, loc):
    """The instants whose wall clock in loc is naive (0, 1 or 2)."""
    out = []
    for fold in (0, 1):
        i = naive.replace(tzinfo=loc, fold=fold).astimezone(UTC)
        if i.astimezone(loc).replace(tzinfo=None) == naive and i not in out:
            out.append(i)
    return sorted(out)


def window(t_utc, lookback, duration, loc):
    if lookback is None:
        lookback = duration
    ld, lr = divmod(lookback, DAY)
    dd, dr = divmod(duration, DAY)
    local = t_utc.astimezone(loc).replace(tzinfo=None)

    def days(n):  # n calendar days from T; no days: T itself (a repeated time stays the one it is)
        return wall(local + timedelta(days=n), loc) if n else t_utc
    start = days(-ld) - timedelta(seconds=lr)
    end = days(dd - ld) + timedelta(seconds=dr - lr)
    return start, end


def fmt(i, loc):
    return i.astimezone(loc).isoformat()


out = []
for zone, first, last in CASES:
    loc = ZoneInfo(zone)
    d = datetime.fromisoformat(first)
    end = datetime.fromisoformat(last)
    for expr, (hh, mm) in SCHEDULES.items():
        runs = []
        day = d
        while day <= end:
            for t in occurrences(day.replace(hour=hh, minute=mm), loc):
                w = {}
                for name, (lb, du) in CONFIGS.items():
                    s, e = window(t, lb, du, loc)
                    w[name] = {"start": fmt(s, loc), "end": fmt(e, loc),
                               "startDate": s.astimezone(loc).strftime("%Y-%m-%d"),
                               "endDate": e.astimezone(loc).strftime("%Y-%m-%d")}
                runs.append({"scheduled": fmt(t, loc), "windows": w})
            day += timedelta(days=1)
        out.append({"zone": zone, "schedule": expr, "from": first, "to": last, "runs": runs})

# One run per line, so a change shows as the runs it changes.
print('{"configs": ' + json.dumps({k: {"lookbackSeconds": v[0], "durationSeconds": v[1]} for k, v in CONFIGS.items()}) + ',')
print(' "cases": [')
for i, c in enumerate(out):
    head = {k: c[k] for k in ("zone", "schedule", "from", "to")}
    print('  ' + json.dumps(head)[:-1] + ', "runs": [')
    for j, r in enumerate(c["runs"]):
        print('   ' + json.dumps(r) + (',' if j < len(c["runs"]) - 1 else ''))
    print('  ]}' + (',' if i < len(out) - 1 else ''))
print(' ]}')
