"""`watch`'s consumer: the pipeline on live events, its alerts to the sinks.

The recording gets the ready record, the snapshot, every event, every alert and a
`tick` at each evaluation, so a replay evaluates exactly where the live session did;
it is flushed after each evaluation's alerts, so a read meanwhile finds every record
up to the last evaluation.
Each evaluation also sends a `progress` record (the session's counters, the table's
bookkeeping and the pids limits the groups live under) for the sinks that show running
totals (Prometheus).  After each batch the pids sampler reads the pids controller of the
groups' cgroups when due; the samples that changed are fed and recorded like events.

With a state directory, the links of running containers to the clients that asked for
them are written there whenever they change, and read back at the start (after the
snapshot): each container the engine no longer runs is dropped, so is each link whose
spawner is not the very process (pid and start) any more.  A replay knows none of this:
its recording begins with this session's snapshot."""

from __future__ import annotations

from typing import Callable

from spawnwatch import records
from spawnwatch.adapters import ledger, procfs, sockets
from spawnwatch.adapters.engine import followed_address
from spawnwatch.adapters.pids import PidsSampler
from spawnwatch.alerts import Alert
from spawnwatch.config import Config
from spawnwatch.detect.containers import Link
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
                 log: Callable[[str], None] = lambda message: None, state_dir: str | None = None) -> None:
        self.config = config
        self.state_dir = state_dir  # where the links are kept (this process holds its lock); None: nowhere
        self._kept_links: list[Link] | None = None  # as last written
        self._last_error: str | None = None
        self.sink = sink
        self.extra_stats = extra_stats  # counters of the sinks themselves (notifications, evicted_by_table)
        self.log = log
        self.pipeline: Pipeline | None = None
        self.run: LiveRun | None = None
        self.origin: Origin | None = None

    def begin(self, run: LiveRun, snapshot: Snapshot | None) -> None:
        self.run = run
        self.pipeline = Pipeline(self.config, memory_of=_memory, container_memory=run.resolver.memory_of,
                                 resolve_container=run.resolver, reparent_hint=procfs.parent_pid,
                                 local_engine=followed_address(), sockets_of=sockets.held_sockets)
        self.sampler = PidsSampler(self.config.detect.pids, run.resolver)
        self.origin = Origin(run.ready["host"], run.ready["boot_time"])
        # for the rules: the containers running now (their create and start), then every create/start/die/destroy
        run.resolver.queue_lifecycle(run.ready["boot_time"])
        run.podman.queue_lifecycle(run.ready["boot_time"])
        self._out(run.ready)
        run.record_item(snapshot)
        self.log(f"watching {len(snapshot.processes)} processes (Ctrl-C to stop)")
        alerts = self.pipeline.feed(snapshot)
        if self.state_dir:
            self._restore(snapshot.ts)  # before the first evaluation keeps the links anew
        self._deliver(alerts, 0)

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
        self.items(self.run.podman.lifecycle())  # Podman's
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
        extra = self.extra_stats() if self.extra_stats is not None else {}
        evicted = {**stats.get("evicted_by_table", {}), "pids_cgroups": self.sampler.evicted,
                   **self.pipeline.evicted_by_table(), **extra.get("evicted_by_table", {})}
        stats.update(extra)
        stats["evicted_by_table"] = evicted
        return stats

    def _restore(self, now: float) -> None:
        try:
            records = ledger.read_state(self.state_dir)
        except ledger.LedgerError as exc:
            # Left as it is (a newer spawnwatch's may be wanted back): none kept this session.
            self.log(f"the state of the last `watch` is not used, nor overwritten: {exc}")
            self.state_dir = None
            return
        links = []
        for record in records:
            try:
                links.append(Link.from_record(record))
            except (KeyError, TypeError, ValueError) as exc:
                self.log(f"a container link of the last `watch` is not one, left out: {exc!r:.200}")
        running = [link for link in links if self._runs(link.container_id)]
        restored = self.pipeline.detector.containers.restore(running, now, self.pipeline.lineage.get,
                                                             self.pipeline.detector.book)
        if links:
            self.log(f"{restored} of the {len(links)} containers the last `watch` linked to their clients taken back"
                     f" ({len(links) - len(running)} no longer run)")

    def _runs(self, container_id: str) -> bool:
        info = self.run.resolver.container(container_id)
        return info is not None and bool(info.running)

    def _keep_links(self) -> None:
        links = self.pipeline.detector.containers.links()
        if links == self._kept_links:
            return
        try:
            ledger.write_state(self.state_dir, [link.as_record() for link in links])
            self._kept_links, self._last_error = links, None
        except OSError as exc:
            message = f"cannot keep the container links in {self.state_dir}: {exc.strerror or exc}"
            if message != self._last_error:  # once per kind of failure, not once per evaluation
                self.log(message)
            self._last_error = message

    def _deliver(self, alerts: list[Alert], evaluations_before: int) -> None:
        evaluated = self.pipeline.evaluations != evaluations_before
        if evaluated and self.state_dir:
            self._keep_links()
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
