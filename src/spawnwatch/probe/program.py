"""The program bcc compiles: bpf/'s text with its local includes expanded, the
-D flags that size its tables and pick kernel-version features, and the
programs in it that emit each kind of event."""

from __future__ import annotations

import os
import re
from pathlib import Path

from spawnwatch.events import Kind
from spawnwatch.probe import preflight
from spawnwatch.probe.births import HOLD_S
from spawnwatch.probe.layout import COMM_LEN
from spawnwatch.signature import ENGINE_CLIENTS

_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$')


class ProbeError(RuntimeError):
    """Tracing cannot start; the message is one line and says how to fix it."""


def program_text(bpf_dir: Path | None = None) -> str:
    """The one text bcc compiles: local includes expanded in place.

    bcc generates the `args` struct of a TRACEPOINT_PROBE only for probes it
    sees in the main text, so the per-hook files cannot stay separate includes."""
    bpf_dir = bpf_dir or preflight.bpf_dir()

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ProbeError(f"include cycle in {bpf_dir}: {' -> '.join(seen + (name,))}")
        lines = []
        for line in (bpf_dir / name).read_text().splitlines():
            match = _LOCAL_INCLUDE.match(line)
            lines.append(expand(match.group(1), seen + (name,)) if match else line)
        return "\n".join(lines)

    try:
        return expand(preflight.BPF_MAIN_SOURCE, ())
    except FileNotFoundError as exc:
        raise ProbeError(f"BPF sources not found: {exc.filename} (set SPAWNWATCH_BPF_DIR)") from exc


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def ring_buffer_pages(kb: int) -> int:
    """Pages of a ring buffer of `kb` KiB: the kernel wants a power of two of pages."""
    pages, rest = divmod(kb * 1024, PAGE_SIZE)
    if pages < 1 or rest or pages & (pages - 1):
        raise ProbeError(
            f"a ring buffer of {kb} KiB is not a power of two of {PAGE_SIZE // 1024} KiB pages;"
            f" fix: use {PAGE_SIZE // 1024}, {2 * PAGE_SIZE // 1024}, ..., e.g. 16384 (the default)"
        )
    return pages


def table_flags(ring_buffer_kb: int | None, dead_slots: int | None, birth_slots: int | None = None) -> list[str]:
    """-D flags overriding the kernel-side tables' default sizes."""
    flags = []
    if ring_buffer_kb is not None:
        flags.append(f"-DSW_RINGBUF_PAGES={ring_buffer_pages(ring_buffer_kb)}")
    if dead_slots is not None:
        if dead_slots < 1:
            raise ProbeError(f"{dead_slots} dead slots: fix: at least 1")
        flags.append(f"-DSW_DEAD_SLOTS={dead_slots}")
    if birth_slots is not None:
        if birth_slots < 1:
            raise ProbeError(f"{birth_slots} birth slots: fix: at least 1")
        flags.append(f"-DSW_BIRTH_SLOTS={birth_slots}")
    return flags


def compact_flags() -> list[str]:
    """-D flags that make the kernel side tell short lives compactly, as `watch` wants
    them: counted per spawner and second (tallies.h), an exec'd one whole in one record
    (its exec held with its fork, births.h), but a container engine's client's."""
    from bcc.utils import get_possible_cpus

    argv_hash_key = int.from_bytes(os.urandom(8), "little")  # bpf/spawnwatch.h's SW_ARGV_HASH_KEY
    return ["-DSW_TALLY_BRIEFS", "-DSW_HOLD_EXECS", f"-DSW_ARGV_HASH_KEY={argv_hash_key}ULL",
            f"-DSW_ENGINE_CLIENT(comm)=({engine_client_test('comm')})",
            f"-DSW_NR_CPUS={max(get_possible_cpus()) + 1}", f"-DSW_HOLD_NS={int(HOLD_S * 1e9)}"]


def engine_client_test(comm: str) -> str:
    """A C test that the comm at `comm` (16 bytes as two u64, NUL-padded as the kernel copies
    it) is a container engine's client's: its exec is never held (bpf/exec.bpf.c)."""
    words = []
    for name in sorted(ENGINE_CLIENTS):
        padded = name.encode()[: COMM_LEN - 1].ljust(COMM_LEN, b"\0")
        low, high = int.from_bytes(padded[:8], "little"), int.from_bytes(padded[8:], "little")
        words.append(f"(({comm})[0] == {low:#x}ULL && ({comm})[1] == {high:#x}ULL)")
    return " || ".join(words) or "0"


def feature_flags() -> list[str]:
    """-D flags for tracepoint fields that differ between kernel versions."""
    flags = []
    if "group_dead" in preflight.tracepoint_fields("sched", "sched_process_exit"):
        flags.append("-DSW_EXIT_HAS_GROUP_DEAD")
    if "anon_rss" in preflight.tracepoint_fields("oom", "mark_victim"):
        flags.append("-DSW_OOM_HAS_RSS")
    return flags


# The program that emits each kind of event.  The kernel skips a tracepoint's
# programs, counting a recursion miss, when it fires while a BPF tracing program
# runs on that CPU (or a task preempted inside a bpf() map call holds it):
# sched_process_free, run from an RCU callback on the way out of an interrupt,
# misses ~1 reap in 1,000 in a fork storm that way, and the reap never comes:
# SkippedReaps finds those pids in /proc.  Counted apart from `lost`: a resync per
# miss would cost more.  A missed sys_enter_execve only costs its exec's argv, read
# from /proc instead.
# Each program counts as the kind of its main record.  sched_process_free sends
# Briefs too, but a skipped run loses a reap either way: the held process it
# would have told whole stays in its slot, the sweep announces its fork and exit,
# and SkippedReaps its reap.  task_newtask's records are the held forks it flushes.
EMITTING_PROGRAMS = {
    b"tracepoint__task__task_newtask": Kind.FORK,
    b"tracepoint__sched__sched_process_exec": Kind.EXEC,
    b"tracepoint__sched__sched_process_exit": Kind.EXIT,
    b"tracepoint__sched__sched_process_free": Kind.REAP,
    b"tracepoint__oom__mark_victim": Kind.OOM,
}
_RECURSION_MISSES = re.compile(rb"^recursion_misses:\s*(\d+)$", re.MULTILINE)


def recursion_misses(prog_fd: int) -> int:
    """Runs of a loaded BPF program the kernel skipped (0 on kernels that do not say)."""
    with open(f"/proc/self/fdinfo/{prog_fd}", "rb") as fdinfo:
        match = _RECURSION_MISSES.search(fdinfo.read())
    return int(match.group(1)) if match else 0
