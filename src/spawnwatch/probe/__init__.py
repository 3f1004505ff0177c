"""The kernel side's user half: compile and attach bpf/, drain the ring buffer
on a timer, decode records into spawnwatch events.

    with Probe() as probe:
        events = probe.poll(timeout=0.1)
        probe.stats()   # {"events": {"fork": n, ...}, "lost": n, "lost_by_kind": {...}, ...}

The kernel side holds each fork back until the process does something else, and
tells a process forked, exited and reaped with nothing in between in one Brief,
or, when asked (`compact_lives`), counts such processes per spawner and second
in a Tally; a poll also sweeps the held forks (births.py) for
those held too long, and the tallies (tallies.py) no record told, every
SWEEP_INTERVAL_S.
"""

from spawnwatch.probe.known import KnownProcesses
from spawnwatch.probe.program import PAGE_SIZE, ProbeError, program_text, ring_buffer_pages, table_flags
from spawnwatch.probe.reaps import SkippedReaps
from spawnwatch.probe.tracer import SWEEP_INTERVAL_S, Probe

__all__ = [
    "PAGE_SIZE", "SWEEP_INTERVAL_S", "KnownProcesses", "Probe", "ProbeError", "SkippedReaps", "program_text",
    "ring_buffer_pages", "table_flags",
]
