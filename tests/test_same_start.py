"""One definition of "the same process": the process table and the /proc readers agree."""

from __future__ import annotations

import os

from spawnwatch.adapters import procfs
from spawnwatch.clock import CLOCK_TICKS
from spawnwatch.config import load
from spawnwatch.events import ProcessInfo, Snapshot
from spawnwatch.lineage import Lineage
from spawnwatch.signature import Signer


def seen(pid: int, start: float) -> Snapshot:
    return Snapshot(ts=start + 1.0, processes=(ProcessInfo(pid=pid, ppid=1, start=start, comm="python", argv=("python",),
                                                           cgroup_id=1, zombie=False),))


def test_the_process_table_and_proc_readers_agree_on_which_start_is_the_same_process():
    pid = os.getpid()
    start = procfs.start_time(pid)
    for ticks_later in (0.0, 1.0, 1.8, 2.5, -1.8):  # a fork event's time comes a little after /proc's start
        recorded_start = start + ticks_later / CLOCK_TICKS
        table = Lineage(Signer(load().signature))
        table.seed(seen(pid, recorded_start))
        table.resync(seen(pid, start))
        kept_by_the_table = table.counts["resync_closed"] == 0
        assert procfs.same_process(pid, recorded_start) == kept_by_the_table, f"{ticks_later} ticks apart"
