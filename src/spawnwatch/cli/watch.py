"""`spawnwatch watch`: continuous leak detection, live or on a recording."""

from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import ExitStack
from typing import Any

import click

from spawnwatch.cli.common import CannotTrace, duration_option, json_option, log, one_line_errors, ring_buffer_option
from spawnwatch.config import Config, ConfigError, load
from spawnwatch.events import Snapshot, from_record, to_record
from spawnwatch.pipeline import Pipeline
from spawnwatch.recording import RecordingError, RecordingWriter, read_records
from spawnwatch.session import faults
from spawnwatch.sinks import Fanout, OnlyContainer, Record, Sink
from spawnwatch.sinks.human import Human
from spawnwatch.sinks.jsonl import JsonLines

TICK = "tick"  # a recording's record of when the live session evaluated


def config_option(f):
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="TOML file overriding the default thresholds and signature rules (see data/default-config.toml).",
    )(f)


def load_config(path: str | None) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc


@click.command("watch")
@duration_option
@config_option
@click.option("--record", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also save the snapshot, every event and every alert to FILE (msgpack) for --replay.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Run detection on a recording (from --record or `trace --record`) instead of the kernel; no root needed.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus metrics on 127.0.0.1:PORT (labels: rule, signature, container).")
@click.option("--container", metavar="NAME", help="Only alerts about this container (name or id prefix).")
@click.option("--webhook", metavar="URL",
              help="POST every alert to URL (Alertmanager's format when URL ends in /api/v2/alerts).")
@ring_buffer_option
@json_option
@one_line_errors
def command(duration: float | None, config_path: str | None, record: str | None, replay: str | None,
            metrics_port: int | None, container: str | None, webhook: str | None, ring_buffer_kb: int | None,
            as_json: bool) -> None:
    """Catch processes that keep spawning identical children and never clean them up.

    Children are grouped by spawner and signature (argv normalised: `npx -y
    @21st-dev/magic` and `npm exec @21st-dev/magic@latest` are one group).
    Rules: accumulating (identical live children keep growing), orphaned
    (descendants of killed children left running, charged to the process that
    spawned the children; `orphans` counts every leaked process, e.g. both the
    `sh -c` and the node server of a killed `npm exec`), zombie (exited
    children never reaped), spawn_rate (sustained spawns per minute), oom.

    Starts from a /proc snapshot, so a leak that is already there is reported
    within seconds.  Each alert is sent `firing` once, re-sent with new counts
    at most every 30 s, and `resolved` when its condition clears.

    With --json the first line is {"kind": "ready", "pid": ...}, then one alert
    object per line, then {"kind": "stats", ...} last, as for `trace`.

    \b
    Examples:
      sudo spawnwatch watch
      sudo spawnwatch watch --json --duration 60 --record leak.msgpack
      spawnwatch watch --replay leak.msgpack --json
      sudo spawnwatch watch --metrics-port 9464 --webhook http://127.0.0.1:9093/api/v2/alerts
      sudo spawnwatch watch --container metamcp
    """
    if replay and (record or duration is not None or ring_buffer_kb is not None):
        raise click.UsageError(
            "--replay reads a finished recording: --record, --duration and --ring-buffer-kb do not apply"
        )
    if webhook and not webhook.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--webhook")
    config = load_config(config_path)
    with ExitStack() as stack:
        sinks: list[Sink] = [JsonLines(sys.stdout) if as_json else Human(sys.stdout, color=sys.stdout.isatty())]
        metrics = None
        if metrics_port is not None:
            from spawnwatch.sinks.prometheus import Metrics

            metrics = Metrics(metrics_port)
            sinks.append(metrics)
            log(f"metrics on http://127.0.0.1:{metrics.port}/metrics")
        if webhook:
            from spawnwatch.sinks.webhook import Webhook

            sinks.append(Webhook(webhook, on_error=log))
        sink: Sink = Fanout(sinks)
        if container is not None:
            sink = OnlyContainer(sink, container)
        stack.callback(sink.close)
        if replay:
            watch_recording(config, replay, sink)
        else:
            watch_live(config, sink, duration, record, stack, metrics, ring_buffer_kb)


def watch_recording(config: Config, path: str, sink: Sink) -> None:
    """The live pipeline on recorded events, evaluated at the recorded ticks (or on the events' clock)."""
    try:
        records = list(read_records(path))
    except RecordingError as exc:
        raise click.ClickException(str(exc)) from exc
    ticked = any(record.get("kind") == TICK for record in records)
    pipeline = Pipeline(config, auto_advance=not ticked)
    counts: Counter[str] = Counter()
    recorded_stats: Record = {"lost": 0}
    sink.send({"kind": "ready", "pid": os.getpid()})
    for record in records:
        kind = record.get("kind")
        if kind == TICK:
            alerts = pipeline.evaluate(float(record["ts"]))
        elif kind == "stats":
            recorded_stats = record  # what the live session could not see: its losses, resyncs, ...
            continue
        else:
            item = from_record(record)
            if item is None:
                continue
            if not isinstance(item, Snapshot):
                counts[item.kind.value] += 1
            alerts = pipeline.feed(item)
        for alert in alerts:
            sink.send(alert.to_record())
    stats = {**recorded_stats, "kind": "stats", "events": dict(counts)}
    sink.send(stats)
    log(summary(stats, pipeline))


def watch_live(config: Config, sink: Sink, duration: float | None, record: str | None, stack: ExitStack,
               metrics: Any = None, ring_buffer_kb: int | None = None) -> None:
    from spawnwatch.adapters import procfs
    from spawnwatch.adapters.containers import ContainerResolver
    from spawnwatch.probe import ProbeError
    from spawnwatch.session import Stop, live_batches, open_probe, ready_record, stats_record

    def memory(pids: list[int]) -> tuple[int, int | None]:
        measured = procfs.memory_of(pids, with_uss=True)
        return measured.rss_bytes, measured.uss_bytes

    resolver = stack.enter_context(ContainerResolver())
    pipeline = Pipeline(config, memory_of=memory, resolve_container=resolver, reparent_hint=procfs.parent_pid)
    recorder = stack.enter_context(RecordingWriter(record)) if record else None

    def out(item: Record) -> None:
        if recorder is not None:
            recorder.write(item)
        sink.send(item)

    def deliver(alerts: list[Any], evaluations_before: int) -> None:
        if pipeline.evaluations != evaluations_before:
            if recorder is not None:
                recorder.write({"kind": TICK, "ts": pipeline.now})  # replay evaluates exactly here
            if metrics is not None:
                metrics.progress(probe.stats(), pipeline.counts())
        for alert in alerts:
            out(alert.to_record())

    stop = Stop(duration)
    try:
        probe = stack.enter_context(open_probe(ring_buffer_kb))
    except ProbeError as exc:
        raise CannotTrace(str(exc)) from exc
    with stop.on_signals():
        # Attached first, then the snapshot: no process can fall between the two.
        snapshot = procfs.snapshot()
        out(ready_record())
        stop.start_clock()
        if recorder is not None:
            recorder.write(to_record(snapshot))
        log(f"watching {len(snapshot.processes)} processes (Ctrl-C to stop)")
        deliver(pipeline.feed(snapshot), 0)
        for batch in live_batches(probe, stop):
            for item in batch:  # events, and a Resync after the kernel lost some
                if recorder is not None:
                    recorder.write(to_record(item))
                before = pipeline.evaluations
                deliver(pipeline.feed(item), before)
            before = pipeline.evaluations
            deliver(pipeline.advance(procfs.boottime_now()), before)
        stats = stats_record(probe)
    out(stats)
    log(summary(stats, pipeline))


def summary(stats: Record, pipeline: Pipeline) -> str:
    """The end-of-session line for humans (stderr)."""
    events = ", ".join(f"{k} {v}" for k, v in sorted(stats["events"].items())) or "no events"
    table = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in pipeline.counts().items())
    firing = len(pipeline.alerts.active)
    return f"-- {events}; {faults(stats)}; {table}; {firing} alert{'s' if firing != 1 else ''} still firing"
