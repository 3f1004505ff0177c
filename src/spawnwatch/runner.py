"""The one live loop: the probe attached (then, for a consumer that wants it, the /proc
snapshot: no process can fall between the two), the ring drained on a timer until a
duration, SIGINT or SIGTERM ends it, every item handed to the command's consumer and
recorded when the consumer keeps it.  `trace`, `watch`, `top` and `report --trace` run it."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from spawnwatch import records
from spawnwatch.adapters import procfs
from spawnwatch.adapters.podman_events import PodmanEvents
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.config import Config
from spawnwatch.events import Event, Observation, Resync, Snapshot
from spawnwatch.probe import SWEEP_INTERVAL_S, Probe
from spawnwatch.recording import RecordingWriter
from spawnwatch.redact import Redactor
from spawnwatch.supervise import internal_errors

# Seconds between ring drains.  A wakeup alone costs this VM 0.4-1 ms of CPU, more than
# decoding a hundred records, so the ring is drained as seldom as the held forks are swept
# (0.25 s): a fork storm fills 0.8 MB of the 16 MiB ring meanwhile, and alerts are judged
# every second anyway.
POLL_INTERVAL = SWEEP_INTERVAL_S


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
               dead_slots: int | None = None, compact_lives: bool = False) -> Probe:
    """A probe that completes what the kernel could not know from /proc, argv redacted
    (by the default config's rules unless given others); see Probe for `compact_lives`."""
    return Probe(
        parent_of=procfs.parent_pid, argv_of=procfs.argv, redact=redact, zombie_start=procfs.zombie_start,
        ring_buffer_kb=ring_buffer_kb, dead_slots=dead_slots, compact_lives=compact_lives,
        environ_of=procfs.engine_environ,
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
    return records.ready(os.getpid(), socket.gethostname(), time.time() - procfs.boottime_now())


def stats_record(probe: Probe) -> dict:
    """The session's counters; `internal_errors`: failures of background work, by component
    (each logged once, and the work started again)."""
    return records.stats({**probe.stats(), "internal_errors": internal_errors()})


def stats_line(stats: dict) -> str:
    """The end-of-session summary for humans (on stderr, so --json stdout stays clean)."""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stats["events"].items())) or "no events"
    return f"-- {counts}; {faults(stats)}"


def faults(stats: dict) -> str:
    """What the session could not see, for humans: losses by kind, bad records, reaps the kernel
    did not tell (recordings older than these counters have `lost` only)."""
    lost = ", ".join(f"{k} {v}" for k, v in stats.get("lost_by_kind", {}).items() if v)
    missed = ", ".join(f"{k} {v}" for k, v in stats.get("missed_by_kind", {}).items() if v)
    failed = ", ".join(f"{k} {v}" for k, v in stats.get("internal_errors", {}).items() if v)
    return (
        f"lost {stats['lost']}{f' ({lost})' if lost else ''},"
        f"{f' skipped by the kernel ({missed}),' if missed else ''} resyncs {stats.get('resyncs', 0)},"
        f" decode errors {stats.get('decode_errors', 0)},"
        f" dead-slot collisions {stats.get('dead_slot_collisions', 0)},"
        f" reaps settled from /proc {stats.get('reaps_settled_from_proc', 0)}"
        f" (given up {stats.get('reaps_given_up', 0)})"
        f"{f', internal errors ({failed}, restarted)' if failed else ''}"
    )


@dataclass
class LiveRun:
    """What a consumer is given of the session it runs in."""

    probe: Probe
    resolver: ContainerResolver  # the program's one cache of cgroup -> container
    ready: dict  # the first record: who watches, where, since when
    recorder: RecordingWriter | None
    podman: PodmanEvents = field(default_factory=PodmanEvents)  # Podman's container lifecycle (no daemon)

    def record(self, record: dict) -> None:
        if self.recorder is not None:
            self.recorder.write(record)

    def flush_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def record_item(self, item: Event | Resync | Observation | Snapshot) -> None:
        """An event (or snapshot) into the recording; its record is built only when there is one."""
        if self.recorder is not None:
            self.recorder.write_item(item)

    def stats(self) -> dict:
        stats = {**stats_record(self.probe), **self.resolver.counts, **self.podman.counts}
        stats["evicted_by_table"] = {**stats["evicted_by_table"], **self.resolver.evicted_by_table(),
                                     **self.podman.evicted_by_table(), "redacted_argvs": self.probe.redact.evicted,
                                     "unchanged_words": self.probe.redact.words_evicted}
        return stats


class Consumer(Protocol):
    """What a command does with the live stream."""

    wants_snapshot: bool  # seed from /proc before the first event
    wants_every_process: bool  # each short life by pid, not counted per spawner and second (Probe's compact_lives)

    def begin(self, run: LiveRun, snapshot: Snapshot | None) -> None: ...

    def items(self, batch: list[Event | Resync]) -> None:
        """Take one poll's items, in order (recording each through the run, if it belongs
        to the recording).  A batch, not an item at a time: a storm brings thousands a poll."""

    def batch_done(self, now: float) -> None:
        """After every poll, busy or not (`now`: seconds since boot)."""

    def end(self, stats: dict) -> None: ...


def run_live(config: Config, consumer: Consumer, duration: float | None, record: str | None = None,
             ring_buffer_kb: int | None = None) -> None:
    """Run `consumer` on live events until the duration passes or SIGINT/SIGTERM (ProbeError when
    the probe cannot attach)."""
    stop = Stop(duration)
    redact = Redactor(config.redact)
    with ExitStack() as stack:
        recorder = stack.enter_context(RecordingWriter(record)) if record else None
        # The probe before the engines: a host that cannot trace is told so, and only so.
        probe = stack.enter_context(open_probe(redact, ring_buffer_kb, compact_lives=not consumer.wants_every_process))
        return_freed_heap()
        resolver = stack.enter_context(ContainerResolver(host_root=config.runtimes.host_root,
                                                            containerd_state=config.runtimes.containerd_state))
        podman = stack.enter_context(PodmanEvents())
        stack.enter_context(stop.on_signals())
        run = LiveRun(probe, resolver, ready_record(), recorder, podman)
        consumer.begin(run, procfs.snapshot(redact) if consumer.wants_snapshot else None)
        settle_collector()
        for batch in live_batches(probe, stop):
            consumer.items(batch)
            consumer.batch_done(procfs.boottime_now())
        consumer.end(run.stats())


def return_freed_heap() -> None:
    """Give the C heap that bcc's LLVM compile freed back to the system: glibc keeps it
    (about 26 MiB of the watcher's resident memory otherwise); a no-op without glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


# Allocations between young-generation collections.  The process table holds up to
# 65,536 long-lived records that point at each other (parents, children), so at
# Python's default (700) a fork storm pays for a collection every few hundred events
# and a full one every few seconds; garbage cycles (evicted processes) wait a little
# longer instead.
YOUNG_COLLECTION_EVERY = 50_000


def settle_collector() -> None:
    """What the session allocated before its first event (modules, bcc, the snapshot's table)
    lives as long as it does: keep it out of every collection to come."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)
