"""`trace`'s human view: one line per event, under EVENT_HEADER."""

from __future__ import annotations

from spawnwatch.bounded import BoundedMap
from spawnwatch.events import Brief, Event, Exec, ExecBrief, ExecTally, Exit, Oom, Reap, Tally
from spawnwatch.text import command_line, human_bytes, human_duration, printable

EVENT_HEADER = f"{'TIME(s)':>14} {'EVENT':<5} {'PID':>7} {'PPID':>7} {'CONTAINER':<16} {'COMM':<16} DETAIL"
MAX_REMEMBERED_EXITS = 65536
MAX_ARGV_SHOWN = 4096  # what the kernel side keeps: an argv read from /proc instead is shown no longer


class EventLines:
    """One line per event.  Remembers exit times (bounded) to show, on reap,
    how long the process stayed a zombie."""

    def __init__(self, limit: int = MAX_REMEMBERED_EXITS) -> None:
        self._exits: BoundedMap[int, float] = BoundedMap(limit)

    @property
    def evicted(self) -> int:
        """Exit times let go past the limit: their reaps show no zombie time."""
        return self._exits.evicted

    def line(self, event: Event, container: str = "-") -> str:
        """`container` names the event's container ("-": the host)."""
        detail = ""
        if isinstance(event, Exec):
            detail = command_line(event.argv, event.comm, MAX_ARGV_SHOWN) + (
                " [argv truncated]" if event.argv_truncated else "")
        elif isinstance(event, Exit):
            self._exits.put(event.pid, event.ts)
        elif isinstance(event, Reap):
            exited = self._exits.pop(event.pid, None)
            if exited is not None:
                detail = f"zombie for {human_duration(event.ts - exited)}"
        elif isinstance(event, ExecTally):
            detail = (f"{event.count} short lives forked in this second that ran "
                      + command_line(event.argv, event.comm, MAX_ARGV_SHOWN)
                      + f", the last reaped at {event.reaped_at:.6f}")
        elif isinstance(event, Tally):
            detail = f"{event.count} short lives forked in this second, the last reaped at {event.reaped_at:.6f}"
        elif isinstance(event, ExecBrief):
            detail = (command_line(event.argv, event.comm, MAX_ARGV_SHOWN)
                      + (" [argv truncated]" if event.argv_truncated else "")
                      + f"; exited {human_duration(event.exited_at - event.ts)} after its fork,"
                      f" zombie for {human_duration(event.reaped_at - event.exited_at)}")
        elif isinstance(event, Brief):
            detail = (f"exited {human_duration(event.exited_at - event.ts)} after its fork,"
                      f" zombie for {human_duration(event.reaped_at - event.exited_at)}")
        elif isinstance(event, Oom):
            detail = f"OOM-killed, rss {human_bytes(event.rss_bytes)}"
        return (
            f"{event.ts:14.6f} {event.kind.value:<5} {event.pid:>7} {event.ppid or '?':>7} "
            f"{printable(container, 16):<16} {printable(event.comm):<16} {detail}"
        ).rstrip()
