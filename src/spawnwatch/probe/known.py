"""What user space knows of each live or zombie pid, so the kernel side need not."""

from __future__ import annotations

from typing import Callable

from spawnwatch.bounded import BoundedMap

from spawnwatch.events import Brief, Event, ExecBrief, ExecTally, Fork, Oom, Reap, Tally, replaced
from spawnwatch.probe import layout

ParentOf = Callable[[int], "int | None"]

MAX_KNOWN_PROCESSES = 65536


class KnownProcesses:
    """What user space knows of each live or zombie pid (parent, comm, cgroup),
    so the kernel side need not keep it: a hash-map update there costs more
    than the whole event.  Bounded; the oldest entries go first."""

    def __init__(self, parent_of: ParentOf | None, limit: int = MAX_KNOWN_PROCESSES) -> None:
        self._parent_of = parent_of or (lambda pid: None)
        # pid -> (ppid, comm, cgroup, fork time)
        self._entries: BoundedMap[int, tuple[int, str, int, float | None]] = BoundedMap(limit)

    @property
    def evicted(self) -> int:
        return self._entries.evicted

    def parent(self, pid: int) -> int:
        entry = self._entries.get(pid)
        return entry[0] if entry else (self._parent_of(pid) or 0)

    def start(self, pid: int) -> float | None:
        """When the process holding `pid` forked, if its fork was seen."""
        entry = self._entries.get(pid)
        return entry[3] if entry else None

    def remember(self, pid: int, ppid: int, comm: str, cgroup_id: int, start: float | None) -> None:
        self._entries.put(pid, (ppid, comm, cgroup_id, start))

    def complete(self, event: Event, flags: int) -> Event:
        """`event` with the parent (and for reaps, comm and cgroup) filled in."""
        pid, kind = event.pid, type(event)
        if kind is Brief or kind is Fork or kind is Tally or kind is ExecBrief or kind is ExecTally:
            ppid = self.parent(event.ppid) if flags & layout.FLAG_CLONE_PARENT else event.ppid
            if kind is Fork:
                self.remember(pid, ppid, event.comm, event.cgroup_id, event.ts)
            elif kind is Brief or kind is ExecBrief:
                self._entries.pop(pid, None)  # reaped already: nothing will ask about it
            return replaced(event, ppid=ppid) if ppid != event.ppid else event
        if kind is Reap:
            ppid, comm, cgroup_id, _start = self._entries.pop(pid, None) or (self._parent_of(pid) or 0, "", 0, None)
            return replaced(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        known = self._entries.get(pid)
        ppid = known[0] if known else self.parent(pid)
        if kind is Oom:
            # mark_victim runs in whichever task hit the limit: trust what we knew of the victim.
            comm = event.comm or (known[1] if known else "")
            cgroup_id = known[2] if known else event.cgroup_id
            return replaced(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        self.remember(pid, ppid, event.comm, event.cgroup_id, known[3] if known else None)
        return replaced(event, ppid=ppid)
