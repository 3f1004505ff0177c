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
from collections import Counter, OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable

from spawnwatch.config import default_redactor
from spawnwatch.events import Event, Exec, Fork, Oom, Reap
from spawnwatch.probe import layout, preflight
from spawnwatch.redact import Redactor

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

MAX_KNOWN_PROCESSES = 65536


class KnownProcesses:
    """What user space knows of each live or zombie pid (parent, comm, cgroup),
    so the kernel side need not keep it: a hash-map update there costs more
    than the whole event.  Bounded; the oldest entries go first."""

    def __init__(self, parent_of: ParentOf | None, limit: int = MAX_KNOWN_PROCESSES) -> None:
        self._parent_of = parent_of or (lambda pid: None)
        self._entries: OrderedDict[int, tuple[int, str, int]] = OrderedDict()
        self._limit = limit

    def parent(self, pid: int) -> int:
        entry = self._entries.get(pid)
        return entry[0] if entry else (self._parent_of(pid) or 0)

    def remember(self, pid: int, ppid: int, comm: str, cgroup_id: int) -> None:
        self._entries[pid] = (ppid, comm, cgroup_id)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def complete(self, event: Event, flags: int) -> Event:
        """`event` with the parent (and for reaps, comm and cgroup) filled in."""
        pid = event.pid
        if isinstance(event, Fork):
            ppid = self.parent(event.ppid) if flags & layout.FLAG_CLONE_PARENT else event.ppid
            self.remember(pid, ppid, event.comm, event.cgroup_id)
            return replace(event, ppid=ppid) if ppid != event.ppid else event
        if isinstance(event, Reap):
            ppid, comm, cgroup_id = self._entries.pop(pid, None) or (self._parent_of(pid) or 0, "", 0)
            return replace(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        known = self._entries.get(pid)
        ppid = known[0] if known else self.parent(pid)
        if isinstance(event, Oom):
            # mark_victim runs in whichever task hit the limit: trust what we knew of the victim.
            comm = event.comm or (known[1] if known else "")
            cgroup_id = known[2] if known else event.cgroup_id
            return replace(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        self.remember(pid, ppid, event.comm, event.cgroup_id)
        return replace(event, ppid=ppid)


class Probe:
    """The loaded BPF programs and their ring buffer.

    `parent_of` and `argv_of` answer from /proc what neither the kernel side
    nor the events seen so far can: the parent of a process that started
    before we attached, the argv of an exec that began before we attached.
    Every exec's argv, from either, leaves through `redact` (by default the
    default config's rules)."""

    def __init__(
        self, parent_of: ParentOf | None = None, argv_of: ArgvOf | None = None, redact: Redactor | None = None
    ) -> None:
        self._argv_of = argv_of
        self._redact = redact if redact is not None else default_redactor()
        self._known = KnownProcesses(parent_of)
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
            raise ProbeError(failure.problem())
        from bcc import BPF

        try:
            self._bpf = BPF(text=program_text().encode(), cflags=feature_flags() + ["-Wno-macro-redefined"])
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
        self._bpf[b"sw_events"].open_ring_buffer(on_record)

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def poll(self, timeout: float = 0.05) -> list[Event]:
        """Wait up to `timeout` s (an OOM kill wakes us early), drain, decode."""
        assert self._bpf is not None, "Probe.open() first"
        self._bpf.ring_buffer_poll(max(1, int(timeout * 1000)))
        self._bpf.ring_buffer_consume()
        return self.decode_batch(self._take_records())

    def drain(self) -> list[Event]:
        """Everything already in the ring, without waiting (used at shutdown)."""
        assert self._bpf is not None
        self._bpf.ring_buffer_consume()
        return self.decode_batch(self._take_records())

    def _take_records(self) -> list[bytes]:
        records = self._records[:]
        del self._records[:]
        return records

    def decode_batch(self, records: list[bytes]) -> list[Event]:
        events = []
        for raw in records:
            try:
                event, flags = layout.decode(raw)
            except layout.DecodeError:
                self._decode_errors += 1
                continue
            if isinstance(event, Exec):
                found = self._argv_of(event.pid) if flags & layout.FLAG_ARGV_MISSING and self._argv_of else None
                event = replace(event, argv=self._redact(found or event.argv),
                                argv_truncated=event.argv_truncated and not found)
            events.append(self._known.complete(event, flags))
            self._counts[event.kind.value] += 1
        return events

    def lost(self) -> int:
        """Events the kernel side could not reserve (ring full), plus undecodable records."""
        if self._bpf is None:
            return self._decode_errors
        table = self._bpf[b"sw_lost_stats"]
        return sum(sum(per_cpu) for per_cpu in table.values()) + self._decode_errors

    def stats(self) -> dict:
        return {"events": dict(self._counts), "lost": self.lost()}

    def struct_sizes(self) -> dict[str, int]:
        """Sizes bcc computed for the C structs (the layout test compares them with layout.py)."""
        assert self._bpf is not None
        exec_event = self._bpf[b"sw_exec_slots"].Leaf
        header = dict(exec_event._fields_)["hdr"]
        return {"sw_exec_event": ctypes.sizeof(exec_event), "sw_header": ctypes.sizeof(header)}
