"""Kernel records made in user space: the decoder's (and the probe's batch path's) input without BPF."""

from __future__ import annotations

from spawnwatch.events import Brief, Event, Exec, ExecBrief, Exit, Oom, Tally
from spawnwatch.probe.layout import (
    ARGV_BYTES, BRIEF_TAIL, COMM_LEN, EXEC_TAIL, EXIT_TAIL, FILENAME_LEN, FLAG_ARGV_TRUNCATED, HEADER, OOM_TAIL,
    STRUCT_SIZES, TALLY_TAIL, TYPE_KINDS, EvictedPid, Occupancy,
)

TYPE_OF_KIND = {kind: number for number, kind in TYPE_KINDS.items()}


def encode(event: Event, flags: int = 0, aside: EvictedPid | Occupancy = 0) -> bytes:
    """The record the kernel would send for `event`; `aside`, an exit's evicted pid, a tally's occupancy or
    an exec's (or exec brief's) command line's hash."""
    comm = event.comm.encode()[: COMM_LEN - 1]

    def header(size: int, extra_flags: int = 0, ts: float = event.ts) -> bytes:
        return HEADER.pack(TYPE_OF_KIND[event.kind], size, event.pid, round(ts * 1e9), event.cgroup_id,
                           event.ppid, flags | extra_flags, comm)

    if isinstance(event, (Exec, ExecBrief)):
        blob = b"".join(a.encode() + b"\0" for a in event.argv)[:ARGV_BYTES]
        size = HEADER.size + EXEC_TAIL.size + len(blob)
        truncated = FLAG_ARGV_TRUNCATED if event.argv_truncated else 0
        filename = event.filename.encode()[: FILENAME_LEN - 1]
        if isinstance(event, Exec):
            return (header(size, truncated) + EXEC_TAIL.pack(len(event.argv), len(blob), 0, 0, 0, aside, 0, 0, filename)
                    + blob)
        times = (round(event.ts * 1e9), round(event.exited_at * 1e9), round(event.reaped_at * 1e9))
        return (header(size, truncated, event.execed_at)
                + EXEC_TAIL.pack(len(event.argv), len(blob), *times, aside, event.pid, 0, filename) + blob)
    if isinstance(event, Exit):
        return header(STRUCT_SIZES["sw_exit_event"]) + EXIT_TAIL.pack(aside, 0)
    if isinstance(event, Tally):
        slot, gen, argv_hash = aside if aside else (0, 0, 0)
        return header(STRUCT_SIZES["sw_tally_event"]) + TALLY_TAIL.pack(
            slot, gen, event.count, 0, round(event.exited_at * 1e9), round(event.reaped_at * 1e9), argv_hash)
    if isinstance(event, Brief):
        return header(STRUCT_SIZES["sw_brief_event"]) + BRIEF_TAIL.pack(
            round(event.exited_at * 1e9), round(event.reaped_at * 1e9))
    if isinstance(event, Oom):
        return header(STRUCT_SIZES["sw_oom_event"]) + OOM_TAIL.pack(event.rss_bytes // 1024, 0, 0, 0)
    return header(HEADER.size)
