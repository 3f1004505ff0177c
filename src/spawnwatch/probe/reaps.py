"""Reaps the kernel side will not tell, settled from /proc."""

from __future__ import annotations

import heapq
from typing import Callable

from spawnwatch.bounded import BoundedMap
from spawnwatch.events import Reap
from spawnwatch.clock import same_start
from spawnwatch.probe.births import HOLD_S

ZombieStart = Callable[[int], "float | None"]  # a pid's start time while it is a zombie, else None

MAX_AWAITED_EXITS = 65536


class SkippedReaps:
    """Reaps the kernel side will not tell, settled from /proc: the probe's one
    reader of "is this exit reaped yet".  The kernel cannot tell a reap when it
    skips a run of sched_process_free (see program.EMITTING_PROGRAMS: about one in a
    thousand in a fork storm, and it cannot say whose run it skipped), nor once
    another exiting pid took the process's dead slot (pids share a slot modulo its
    size; that exit's record names the evicted pid).  Left alone, either reads as a
    parent that does not reap.

    So every exit told is awaited: HOLD_S after it (an evicted one at once),
    /proc is asked, and one that is no zombie any more, or whose pid a
    process started at another time holds, gets its Reap, well within the zombie
    rule's minimum age.  The start compared is the fork the probe saw; for a
    process it did not see fork (older than the session, or forgotten beyond
    MAX_KNOWN_PROCESSES) it is the start of the zombie the first look finds.  A
    later event of the pid ends the wait: its reap, or a new life of the pid,
    which a late Reap of the old one would otherwise end in the table.  A
    real zombie is looked up again when its age has doubled (at most
    LONGEST_WAIT_S), so a host full of them costs few reads; the looks wait in a
    heap by due time, so a poll with none due costs nothing.  Bounded: beyond the
    limit the oldest exits are given up, counted."""

    SHORTEST_WAIT_S = HOLD_S
    LONGEST_WAIT_S = 30.0

    def __init__(self, zombie_start: ZombieStart, limit: int = MAX_AWAITED_EXITS) -> None:
        self._zombie_start = zombie_start
        # pid -> (exited, start or None, next look), oldest exit first
        self._exits: BoundedMap[int, tuple[float, float | None, float]] = BoundedMap(limit)
        self._looks: list[tuple[float, int]] = []  # heap of (next look, pid); stale once the entry says otherwise
        self.settled = 0

    @property
    def given_up(self) -> int:
        """The exits evicted past the limit: their reaps never looked for."""
        return self._exits.evicted

    def exited(self, pid: int, ts: float, start: float | None) -> None:
        """`pid`, forked at `start` when known, exited at `ts`."""
        self._await(pid, ts, start, ts + HOLD_S)

    def evicted(self, pid: int, now: float) -> None:
        """`pid`'s dead slot was taken: the kernel will not tell its reap, so look at once."""
        exited, start, _look = self._exits.get(pid) or (now, None, now)  # its exit lost, or given up
        self._await(pid, exited, start, now)

    def told(self, pid: int) -> None:
        """Another event of `pid` came: its reap, or a new life of the pid."""
        self._exits.pop(pid, None)

    def _await(self, pid: int, exited: float, start: float | None, look: float) -> None:
        exits = self._exits
        exits.put(pid, (exited, start, look))
        heapq.heappush(self._looks, (look, pid))
        if len(self._looks) > 2 * len(exits) + 1024:  # stale looks: rebuilt, amortised over as many pushes
            self._looks = [(look, pid) for pid, (_exited, _start, look) in exits.items()]
            heapq.heapify(self._looks)

    def check(self, now: float) -> list[Reap]:
        """Reaps of the exits due a look that /proc shows gone or reused."""
        looks, exits = self._looks, self._exits
        reaps = []
        while looks and looks[0][0] <= now:
            look, pid = heapq.heappop(looks)
            entry = exits.get(pid)
            if entry is None or entry[2] != look:
                continue  # told, given up, or due at another time since
            exited, start, _look = entry
            found = self._zombie_start(pid)
            if found is None or (start is not None and not same_start(found, start)):
                del exits[pid]
                reaps.append(Reap(ts=now, pid=pid, ppid=0, comm="", cgroup_id=0))
                continue
            look = now + min(self.LONGEST_WAIT_S, max(self.SHORTEST_WAIT_S, now - exited))
            exits[pid] = (exited, found, look)
            heapq.heappush(looks, (look, pid))
        self.settled += len(reaps)
        return reaps
