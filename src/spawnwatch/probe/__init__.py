"""The kernel side's user half: compile and attach bpf/, drain the ring buffer
on a timer, decode records into spawnwatch events.

    with Probe() as probe:
        events = probe.poll(timeout=0.1)
        probe.stats()   # {"events": {"fork": n, ...}, "lost": n}
"""

from __future__ import annotations

import ctypes
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable

from spawnwatch.events import Event, Exec, Fork
from spawnwatch.probe import layout, preflight

# Debian's bcc sees only the system site-packages; the path below works from the
# source tree (editable installs) and SPAWNWATCH_BPF_DIR overrides it.
BPF_DIR = Path(os.environ.get("SPAWNWATCH_BPF_DIR", Path(__file__).resolve().parents[3] / "bpf"))
MAIN_SOURCE = "spawnwatch.bpf.c"
_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$')


class ProbeError(RuntimeError):
    """Tracing cannot start; the message is one line and says how to fix it."""


def program_text(bpf_dir: Path = BPF_DIR) -> str:
    """The one text bcc compiles: local includes expanded in place.

    bcc generates the `args` struct of a TRACEPOINT_PROBE only for probes it
    sees in the main text, so the per-hook files cannot stay separate includes."""

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ProbeError(f"include cycle in {bpf_dir}: {' -> '.join(seen + (name,))}")
        lines = []
        for line in (bpf_dir / name).read_text().splitlines():
            match = _LOCAL_INCLUDE.match(line)
            lines.append(expand(match.group(1), seen + (name,)) if match else line)
        return "\n".join(lines)

    try:
        return expand(MAIN_SOURCE, ())
    except FileNotFoundError as exc:
        raise ProbeError(f"BPF sources not found: {exc.filename} (set SPAWNWATCH_BPF_DIR)") from exc


def feature_flags() -> list[str]:
    """-D flags for tracepoint fields that differ between kernel versions."""
    flags = []
    if "group_dead" in preflight.tracepoint_fields("sched", "sched_process_exit"):
        flags.append("-DSW_EXIT_HAS_GROUP_DEAD")
    if "anon_rss" in preflight.tracepoint_fields("oom", "mark_victim"):
        flags.append("-DSW_OOM_HAS_RSS")
    return flags


ParentOf = Callable[[int], "int | None"]
ArgvOf = Callable[[int], "tuple[str, ...] | None"]


class Probe:
    """The loaded BPF programs and their ring buffer.

    `parent_of` and `argv_of` fill in, from /proc, what the kernel side could
    not know: the parent of a CLONE_PARENT fork whose grandparent forked before
    we attached, and the argv of an exec that began before we attached."""

    def __init__(self, parent_of: ParentOf | None = None, argv_of: ArgvOf | None = None) -> None:
        self._parent_of = parent_of
        self._argv_of = argv_of
        self._bpf = None
        self._records: list[bytes] = []
        self._counts: Counter[str] = Counter()
        self._decode_errors = 0

    def __enter__(self) -> "Probe":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        failure = preflight.first_failure()
        if failure is not None:
            raise ProbeError(f"{failure.name}: {failure.detail}; fix: {failure.fix}")
        from bcc import BPF

        try:
            self._bpf = BPF(text=program_text(), cflags=feature_flags() + ["-Wno-macro-redefined"])
        except Exception as exc:  # bcc raises bare Exception; its details went to stderr
            raise ProbeError(f"could not load the BPF programs: {str(exc).splitlines()[0]}") from exc
        # The callback only copies bytes: decoding happens in batches in poll(),
        # so the time spent inside bcc's ctypes trampoline stays minimal.
        records = self._records
        string_at = ctypes.string_at

        def on_record(_ctx: object, data: int, size: int) -> int:
            records.append(string_at(data, size))
            return 0

        self._callback = on_record  # bcc keeps only a weak reference
        self._bpf["sw_events"].open_ring_buffer(on_record)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def poll(self, timeout: float = 0.05) -> list[Event]:
        """Wait up to `timeout` s (an OOM kill wakes us early), drain, decode."""
        assert self._bpf is not None, "Probe.open() first"
        self._bpf.ring_buffer_poll(max(1, int(timeout * 1000)))
        self._bpf.ring_buffer_consume()
        return self._take()

    def drain(self) -> list[Event]:
        """Everything already in the ring, without waiting (used at shutdown)."""
        assert self._bpf is not None
        self._bpf.ring_buffer_consume()
        return self._take()

    def _take(self) -> list[Event]:
        records, self._records[:] = list(self._records), []
        events = []
        for raw in records:
            try:
                event, flags = layout.decode(raw)
            except layout.DecodeError:
                self._decode_errors += 1
                continue
            events.append(self._complete(event, flags))
            self._counts[event.kind.value] += 1
        return events

    def _complete(self, event: Event, flags: int) -> Event:
        if isinstance(event, Fork) and flags & layout.FLAG_PPID_UNKNOWN and self._parent_of:
            return Fork(event.ts, event.pid, self._parent_of(event.ppid) or 0, event.comm, event.cgroup_id)
        if isinstance(event, Exec):
            # Execs are rare next to forks, so a /proc look-up here is affordable.
            ppid = event.ppid or (self._parent_of(event.pid) if self._parent_of else 0) or 0
            argv, truncated = event.argv, event.argv_truncated
            if flags & layout.FLAG_ARGV_MISSING and self._argv_of:
                argv = self._argv_of(event.pid) or argv
                truncated = not argv
            if (ppid, argv) != (event.ppid, event.argv):
                return Exec(event.ts, event.pid, ppid, event.comm, event.cgroup_id, argv, event.filename, truncated)
        return event

    def lost(self) -> int:
        """Events the kernel side could not reserve (ring full), plus undecodable records."""
        if self._bpf is None:
            return self._decode_errors
        table = self._bpf["sw_lost_stats"]
        return sum(sum(per_cpu) for per_cpu in table.values()) + self._decode_errors

    def stats(self) -> dict:
        return {"events": dict(self._counts), "lost": self.lost()}

    def struct_sizes(self) -> dict[str, int]:
        """Sizes bcc computed for the C structs (the layout test compares them with layout.py)."""
        assert self._bpf is not None
        leaves = {
            "sw_exec_event": self._bpf["sw_execs"].Leaf,
            "sw_dead_process": self._bpf["sw_dead"].Leaf,
        }
        return {name: ctypes.sizeof(leaf) for name, leaf in leaves.items()}
