"""`watch`'s consumer: the pipeline on live events, its alerts to the sinks.

The recording gets the ready record, the snapshot, every event, every alert and a
`tick` at each evaluation, so a replay evaluates exactly where the live session did;
it is flushed after each evaluation's alerts, so a read meanwhile finds every record
up to the last evaluation.
Each evaluation also sends a `progress` record (the session's counters, the table's
bookkeeping and the pids limits the groups live under) for the sinks that show running
totals (Prometheus).  After each batch the pids sampler reads the pids controller of the
groups' cgroups when due; the samples that changed are fed and recorded like events."""

from __future__ import annotations

from typing import Callable

from spawnwatch import records
from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import followed_address
from spawnwatch.adapters.pids import PidsSampler
from spawnwatch.alerts import Alert
from spawnwatch.config import Config
from spawnwatch.events import Event, Observation, Resync, Snapshot
from spawnwatch.pipeline import Pipeline
from spawnwatch.runner import LiveRun, stats_line
from spawnwatch.sinks import Origin, Record, Sink


def _memory(pids: list[int]) -> tuple[int, int | None]:
    measured = procfs.memory_of(pids, with_uss=True)
    return measured.rss_bytes, measured.uss_bytes


class Detection:
    wants_snapshot = True
    wants_every_process = False  # detection counts a storm's short lives, it need not see each

    def __init__(self, config: Config, sink: Sink, extra_stats: Callable[[], Record] | None = None,
                 log: Callable[[str], None] = lambda message: None) -> None:
        self.config = config
        self.sink = sink
        self.extra_stats = extra_stats  # counters of the sinks themselves (notifications)
        self.log = log
        self.pipeline: Pipeline | None = None
        self.run: LiveRun | None = None
        self.origin: Origin | None = None

    def begin(self, run: LiveRun, snapshot: Snapshot | None) -> None:
        self.run = run
        self.pipeline = Pipeline(self.config, memory_of=_memory, container_memory=run.resolver.memory_of,
                                 resolve_container=run.resolver, reparent_hint=procfs.parent_pid,
                                 local_engine=followed_address())
        self.sampler = PidsSampler(self.config.detect.pids, run.resolver)
        self.origin = Origin(run.ready["host"], run.ready["boot_time"])
        # for the rules: the containers running now (their create and start), then every create/start/die/destroy
        run.resolver.queue_lifecycle(run.ready["boot_time"])
        self._out(run.ready)
        run.record_item(snapshot)
        self.log(f"watching {len(snapshot.processes)} processes (Ctrl-C to stop)")
        self._deliver(self.pipeline.feed(snapshot), 0)

    def items(self, batch: list[Event | Resync | Observation]) -> None:
        pipeline, feed, record = self.pipeline, self.pipeline.feed, self.run.record_item
        recording = self.run.recorder is not None
        for item in batch:
            # Recorded before the alerts it raises: a replay feeds it, then evaluates at the tick.
            if recording:
                record(item)
            before = pipeline.evaluations
            alerts = feed(item)
            if alerts or pipeline.evaluations != before:
                self._deliver(alerts, before)

    def batch_done(self, now: float) -> None:
        self.items(self.run.resolver.lifecycle())  # the engine's container events, since the last poll
        self.items(self.sampler.poll(self.pipeline.detector.cgroups, now))  # the pids limits that changed
        before = self.pipeline.evaluations
        self._deliver(self.pipeline.advance(now), before)

    def end(self, stats: Record) -> None:
        stats = self._with_extra(stats)
        self._out(stats)
        self.log(summary(stats, self.pipeline))

    def session_stats(self) -> Record:
        return self._with_extra(self.run.stats())

    def _with_extra(self, stats: Record) -> Record:
        if self.extra_stats is not None:
            stats.update(self.extra_stats())
        return stats

    def _deliver(self, alerts: list[Alert], evaluations_before: int) -> None:
        evaluated = self.pipeline.evaluations != evaluations_before
        if evaluated:
            self.run.record(records.tick(self.pipeline.now))  # replay evaluates exactly here
            self.sink.send(records.progress(self.session_stats(), self.pipeline.counts(), self.sampler.limits()))
        for alert in alerts:
            self._out(self.origin.stamp(alert.to_record(), alert.ts))
        if evaluated:
            self.run.flush_recording()  # whole up to each evaluation: readable while watch runs, and after a crash

    def _out(self, record: Record) -> None:
        self.run.record(record)
        self.sink.send(record)


def summary(stats: Record, pipeline: Pipeline) -> str:
    """The end-of-session line for humans (stderr): trace's, then the table and the alerts."""
    table = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in pipeline.counts().items())
    if "notifications" in stats:
        table += "; notifications " + ", ".join(f"{k} {v}" for k, v in stats["notifications"].items())
    firing = len(pipeline.alerts.active)
    return f"{stats_line(stats)}; {table}; {firing} alert{'s' if firing != 1 else ''} still firing"
