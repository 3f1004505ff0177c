"""The records of a session beside its events: each kind declared once, and built here
when more than one place makes it.

    ready     the first: who watches, where, and when its host booted (dates the events'
              seconds since boot)
    alert     an alert, firing or resolved (alerts.Alert.to_record)
    tick      in a recording: the live session evaluated here, so a replay evaluates there too
    progress  at each evaluation, the running totals, for the sinks that serve them (not --json)
    stats     the last: the session's counters
"""

from __future__ import annotations

from typing import Any

READY = "ready"
ALERT = "alert"
TICK = "tick"
PROGRESS = "progress"
STATS = "stats"

Record = dict[str, Any]
# The format of a recording this version writes (in its ready record), and the newest it
# reads: 2, events as arrays (recording.py says what each format holds).
FORMAT = 2


def ready(pid: int, host: str, boot_time: float) -> Record:
    return {"kind": READY, "format": FORMAT, "pid": pid, "host": host, "boot_time": boot_time}


def tick(ts: float) -> Record:
    return {"kind": TICK, "ts": ts}


def progress(counters: Record, table: Record, pids_limits: Any) -> Record:
    return {**counters, "kind": PROGRESS, "table": table, "pids_limits": pids_limits}


def stats(counters: Record) -> Record:
    return {"kind": STATS, **counters}
