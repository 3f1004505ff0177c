"""When a process started, as the kernel counts it: one clock, one tolerance.

/proc gives start times in clock ticks (USER_HZ); a BPF event's timestamp has
nanoseconds.  Both mean seconds since boot, so a pid's start from either side
names one process when they agree within SAME_START_S."""

from __future__ import annotations

import os

# Read once, as psutil reads its CLOCK_TICKS: glibc answers from the auxiliary vector, no system call.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# A fork event's time comes after the start /proc shows, which the kernel rounds down to a tick.
SAME_START_S = 2.0 / CLOCK_TICKS


def start_tick(start: float) -> int:
    """`start` (seconds since boot) at /proc's precision: half of a process's identity."""
    return round(start * CLOCK_TICKS)


def tick_start(tick: int) -> float:
    """A `start_tick` back in seconds since boot."""
    return tick / CLOCK_TICKS


def same_start(start: float, other: float) -> bool:
    """True when two start times of one pid, from /proc or from BPF, are one process's."""
    return abs(start - other) <= SAME_START_S
