"""A live tracing session: the probe drained on a timer until a duration, SIGINT
or SIGTERM ends it.  Commands that consume live events (`trace`, `watch`) share
this loop; what they do with the events is theirs."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from spawnwatch.adapters import procfs
from spawnwatch.config import Config
from spawnwatch.events import Event, Resync, to_record
from spawnwatch.filters import CommFilter, SubtreeFilter, container_matches
from spawnwatch.probe import Probe, ProbeError
from spawnwatch.recording import RecordingWriter
from spawnwatch.redact import Redactor
from spawnwatch.render import EVENT_HEADER, EventLines
from spawnwatch.sinks.jsonl import write_json_line

POLL_INTERVAL = 0.05  # seconds between ring drains: ~3 MB of a fork storm


class Stop:
    """Set by SIGINT/SIGTERM or when the deadline passes."""

    def __init__(self, duration: float | None) -> None:
        self.duration = duration
        self.deadline: float | None = None
        self.signalled = False

    def start_clock(self) -> None:
        """The duration counts from when tracing is ready, not from start-up."""
        if self.duration is not None and self.deadline is None:
            self.deadline = time.monotonic() + self.duration

    def __bool__(self) -> bool:
        return self.signalled or (self.deadline is not None and time.monotonic() >= self.deadline)

    def remaining(self, default: float) -> float:
        if self.deadline is None:
            return default
        return max(0.0, min(default, self.deadline - time.monotonic()))

    @contextmanager
    def on_signals(self) -> Iterator["Stop"]:
        def handler(_signum: int, _frame: object) -> None:
            self.signalled = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def open_probe(redact: Redactor | None = None, ring_buffer_kb: int | None = None,
               dead_slots: int | None = None) -> Probe:
    """A probe that completes what the kernel could not know from /proc, argv redacted
    (by the default config's rules unless given others)."""
    return Probe(
        parent_of=procfs.parent_pid, argv_of=procfs.argv, redact=redact, zombie_start=procfs.zombie_start,
        ring_buffer_kb=ring_buffer_kb, dead_slots=dead_slots,
    )


def live_batches(probe: Probe, stop: Stop) -> Iterator[list[Event | Resync]]:
    """One batch per poll until `stop` (empty when nothing happened), the last
    one drained.  After the kernel lost events a batch ends with a Resync: the
    ring drained, then /proc read, so every event before it is older."""
    stop.start_clock()
    while True:
        stopping = bool(stop)
        batch: list[Event | Resync] = probe.drain() if stopping else probe.poll(stop.remaining(POLL_INTERVAL))
        if probe.resync_due(last=stopping):
            batch += probe.drain()
            snapshot = procfs.snapshot(probe.redact)
            batch.append(Resync(ts=snapshot.ts, processes=snapshot.processes))
        yield batch
        if stopping:
            return


def ready_record() -> dict:
    """The first line: who is watching, where, and the wall-clock time of boot that turns
    the events' seconds since boot into dates (recorded, so a replay dates alerts alike)."""
    return {"kind": "ready", "pid": os.getpid(), "host": socket.gethostname(),
            "boot_time": time.time() - procfs.boottime_now()}


def stats_record(probe: Probe) -> dict:
    return {"kind": "stats", **probe.stats()}


def stats_line(stats: dict) -> str:
    """The end-of-session summary for humans (on stderr, so --json stdout stays clean)."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stats["events"].items())) or "no events"
    return f"-- {counts}; {faults(stats)}"


def faults(stats: dict) -> str:
    """What the session could not see, for humans: losses by kind, bad records, settled dead slots
    (recordings older than these counters have `lost` only)."""
    lost = ", ".join(f"{k} {v}" for k, v in stats.get("lost_by_kind", {}).items() if v)
    return (
        f"lost {stats['lost']}{f' ({lost})' if lost else ''}, resyncs {stats.get('resyncs', 0)},"
        f" decode errors {stats.get('decode_errors', 0)},"
        f" dead-slot collisions {stats.get('dead_slot_collisions', 0)}"
        f" (settled {stats.get('dead_slot_settled', 0)}, given up {stats.get('dead_slot_given_up', 0)})"
    )


def write_json(record: dict) -> None:
    write_json_line(record, sys.stdout)


class ContainerMemo:
    """The container of each cgroup id, asked of the resolver once it knows:
    `trace` sees tens of thousands of events a second, nearly all from a
    handful of cgroups.  A cgroup id names one cgroup for its lifetime, so
    settled answers are kept (bounded); unsettled ones are asked again soon."""

    RETRY_UNSETTLED_AFTER = 0.1
    LIMIT = 8192

    def __init__(self, lookup: Callable[[int, int | None], tuple[bool, Any]]) -> None:
        self._lookup = lookup
        self._known: OrderedDict[int, tuple[dict | None, float]] = OrderedDict()

    def __call__(self, event: Event) -> dict | None:
        entry = self._known.get(event.cgroup_id)
        now = time.monotonic()
        if entry is None or now > entry[1]:
            settled, info = self._lookup(event.cgroup_id, event.pid) if event.cgroup_id else (True, None)
            container = info.as_contract() if info is not None else None
            entry = (container, float("inf") if settled else now + self.RETRY_UNSETTLED_AFTER)
            self._known[event.cgroup_id] = entry
            if len(self._known) > self.LIMIT:
                self._known.popitem(last=False)
        return entry[0]


def run_trace(
    config: Config,
    duration: float | None,
    pid: int | None,
    comm: str | None,
    container: str | None,
    record: str | None,
    as_json: bool,
    ring_buffer_kb: int | None = None,
) -> None:
    from spawnwatch.adapters.resolver import ContainerResolver

    filters: list[Callable[[Event], bool]] = []
    if pid is not None:
        filters.append(SubtreeFilter(pid, procfs.descendants(pid)))
    if comm is not None:
        filters.append(CommFilter(comm))
    lines = EventLines()
    recorder = RecordingWriter(record) if record else None
    stop = Stop(duration)
    try:
        with stop.on_signals(), ContainerResolver() as resolver, \
                open_probe(Redactor(config.redact), ring_buffer_kb) as probe:
            container_of = ContainerMemo(resolver.lookup)
            if as_json:
                write_json(ready_record())
            else:
                print(EVENT_HEADER)
            sys.stdout.flush()
            for batch in live_batches(probe, stop):
                for event in batch:
                    if isinstance(event, Resync):  # for the recording's replay; too big for the stream
                        if recorder:
                            recorder.write(to_record(event))
                        continue
                    if not all(f(event) for f in filters):
                        continue
                    where = container_of(event)
                    if container is not None and not container_matches(where, container):
                        continue
                    if recorder:
                        recorder.write(to_record(event))
                    if as_json:
                        write_json({**to_record(event), "container": where})
                    else:
                        print(lines.line(event, where["name"] if where else "-"))
                sys.stdout.flush()
            stats = stats_record(probe)
            if as_json:
                write_json(stats)
            print(stats_line(stats), file=sys.stderr)
    finally:
        if recorder:
            recorder.close()
