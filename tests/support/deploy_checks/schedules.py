"""Schedules: every nightly path runs at the same UTC time."""

from __future__ import annotations

import re
import zoneinfo

from deploy_checks.commands import crontab_entries, crontab_env
from deploy_checks.files import Infra


def _fixed_time(schedule: str) -> tuple[int, int] | None:
    fields = schedule.split()
    if len(fields) != 5 or not all(f.isdigit() for f in fields[:2]) or fields[2:] != ["*", "*", "*"]:
        return None
    return int(fields[1]), int(fields[0])


def nightly_times(infra: Infra) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """UTC (hour, minute) of every nightly schedule in infra/, and why one has none."""
    times, problems = {}, []
    for rel, doc in infra.docs("RayCronJob", "CronJob"):
        spec = doc.get("spec") or {}
        label = f"infra/{rel} ({doc['kind']})"
        zone = spec.get("timeZone")
        try:
            ok = zone in ("Etc/UTC", "UTC") and zoneinfo.ZoneInfo(zone) is not None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{label}: timeZone {zone!r}: the schedule must be read in UTC (timeZone: Etc/UTC)")
        at = _fixed_time(str(spec.get("schedule", "")))
        if at is None:
            problems.append(f"{label}: schedule {spec.get('schedule')!r} is not once a day at a fixed time")
        else:
            times[label] = at
    entries = crontab_entries(infra.crontab)
    if len(entries) != 1:
        problems.append(f"infra/crontab: expected one active line, found {len(entries)}")
    for schedule, command in entries:
        if crontab_env(infra.crontab).get("CRON_TZ") in ("UTC", "Etc/UTC"):
            at = _fixed_time(schedule)
        else:  # cron reads the VM's local time: the command must check the UTC clock itself
            guard = re.search(r'\[\s*"?\$\(date -u \+\\?%H\\?%M\)"?\s*=\s*"?(\d\d)(\d\d)"?\s*\]\s*&&', command)
            at = (int(guard.group(1)), int(guard.group(2))) if guard and schedule.split() == ["*"] * 5 else None
            if at is None:
                problems.append(
                    "infra/crontab: the schedule is read in the VM's local time zone: set CRON_TZ=UTC, or run every "
                    'minute and start only when [ "$(date -u +\\%H\\%M)" = "HHMM" ]'
                )
        if at is not None:
            times["infra/crontab"] = at
    return times, problems
