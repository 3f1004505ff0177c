"""Replay: the live pipeline on a recording, evaluated at the recorded ticks (or on the
events' clock when it has none), for `watch --replay` and `top --replay` alike.

Its alerts name the containers the live session's did.  A recording is read up to
three times, never held whole (one of a storm holds millions of records): its head for
the ready record, then once to replay it, and once more, at its first alert, for the
containers the recorded alerts named.  It is input like any other: a bad one raises
RecordError or RecordingError, never a traceback of its own."""

from __future__ import annotations

import os
from collections import Counter
from typing import Iterable, Iterator

from spawnwatch import records
from spawnwatch.adapters.engine import followed_address
from spawnwatch.alerts import Alert
from spawnwatch.config import Config
from spawnwatch.events import ARRAY_READERS, RECORD_READERS, Exec, RecordError, count_value, from_record, time_value
from spawnwatch.pipeline import Pipeline
from spawnwatch.recording import read_records
from spawnwatch.redact import Redactor
from spawnwatch.sinks import Origin, Record


class Replay:
    """One pass over a recording: `steps()` feeds it to the pipeline, `stats()` after it."""

    def __init__(self, config: Config, path: str) -> None:
        self.path = path
        ticked, ready = survey(read_records(path))
        try:
            self.origin = recorded_origin(ready)
        except RecordError as exc:
            raise RecordError(f"{path}: ready record: {exc}") from exc
        self._named: dict[int, Record] | None = None
        self.pipeline = Pipeline(config, auto_advance=not ticked, local_engine=followed_address(),
                                 resolve_container=self._recorded_container)
        self.redact = Redactor(config.redact)  # the recording may be an old one, or made with --show-secrets
        self.counts: Counter[type] = Counter()
        self.recorded_stats: Record = {"lost": 0}

    def ready(self) -> Record:
        """The replay's first record: this process, dated as the recorded session."""
        return records.ready(os.getpid(), self.origin.host, self.origin.boot_time)

    def steps(self) -> Iterator[list[Alert]]:
        """The alerts of each evaluation, in the recording's order (an evaluation may raise none)."""
        pipeline, redact, counts = self.pipeline, self.redact, self.counts
        feed, readers, array_readers = pipeline.feed, RECORD_READERS, ARRAY_READERS
        evaluations = pipeline.evaluations
        for number, record in enumerate(read_records(self.path), 1):
            # Subscripts, not get(): nearly every record has a kind that names its reader.
            # An event is an array in a format 2 recording, a map in a format 1 one.
            try:
                read = array_readers[record[0]] if type(record) is list else readers[record["kind"]]
            except (KeyError, TypeError, IndexError):  # no kind, another kind, or a kind that is no key
                read = None
            try:
                if read is not None:  # an event or observation: nearly every record
                    item = read(record)
                    item_type = type(item)
                    if item_type is Exec:
                        item = redact.event(item)
                    counts[item_type] += 1  # by class: hashing an enum member runs Python code
                    alerts = feed(item)
                elif type(record) is list:  # an empty array, one without a code, or of a kind unknown here
                    from_record(record)  # the RecordError that says which, or None: skipped like a map of an unknown kind
                    continue
                elif (kind := record.get("kind")) == records.TICK:
                    alerts = pipeline.evaluate(time_value(record.get("ts"), "tick: 'ts'"))
                elif kind == records.STATS:
                    self.recorded_stats = recorded_counters(record)  # what the live session could not see
                    continue
                else:
                    snapshot = from_record(record)
                    if snapshot is None:
                        continue
                    alerts = feed(redact.event(snapshot))
            except RecordError as exc:
                raise RecordError(f"{self.path}: record {number}: {exc}") from exc
            # Told per evaluation, not per record (a generator's step each was 1% of a replayed event).
            if pipeline.evaluations != evaluations:
                evaluations = pipeline.evaluations
                yield alerts

    def _recorded_container(self, cgroup_id: int, spawner_pid: int) -> Record | None:
        # Read at the first alert, not before: a recording that raises none (a trace's, of
        # a storm's every process) is read once less: a quarter of its replay's CPU.
        if self._named is None:
            self._named = recorded_containers(read_records(self.path))
        return self._named.get(spawner_pid)

    def stats(self) -> Record:
        """The stats record of the replay: the live session's losses, this pass's event counts."""
        return records.stats({**self.recorded_stats, "events": {cls.kind.value: n for cls, n in self.counts.items()}})


# Spawners whose container a replay remembers; a session raises alerts for a few groups.
RECORDED_CONTAINERS_KEPT = 4096
CONTRACT_FIELDS = ("id", "name", "image", "runtime", "pod", "namespace", "pod_uid")


def recorded_containers(stream: Iterable[Record | list]) -> dict[int, Record]:
    """The container each recorded alert named, by its spawner's pid (the key the alerts
    ask by): a replay has neither engine nor runtime state to ask.  Only the contract's
    string fields are kept; a recording made before runtimes were named says no runtime,
    and only Docker's containers were named then."""
    named: dict[int, Record] = {}
    for record in stream:
        if type(record) is not dict:  # an event (format 2): no alert
            continue
        container, spawner = record.get("container"), record.get("spawner")
        if record.get("kind") != records.ALERT or not isinstance(container, dict) or not isinstance(spawner, dict):
            continue
        pid = spawner.get("pid")
        if not isinstance(pid, int) or pid in named or len(named) >= RECORDED_CONTAINERS_KEPT:
            continue
        kept = {key: value for key in CONTRACT_FIELDS
                if isinstance(value := container.get(key), str) or (value is None and key in container)}
        if isinstance(kept.get("id"), str) and isinstance(kept.get("name"), str):
            named[pid] = {"runtime": "docker", "image": None, **kept}
    return named


def survey(stream: Iterable[Record | list]) -> tuple[bool, Record | None]:
    """Whether a recording has evaluation ticks (a `watch --record` one), and its first ready
    record that dates it; stops reading once both are known."""
    ticked, ready = False, None
    for record in stream:
        if type(record) is not dict:  # an event (format 2)
            continue
        kind = record.get("kind")
        if kind == records.TICK:
            ticked = True
        elif kind == records.READY and ready is None and "boot_time" in record:
            ready = record
            if record.get("ticks") is False:  # a trace's: none will come
                break
        if ticked and ready is not None:
            break
    return ticked, ready


def recorded_origin(ready: Record | None) -> Origin:
    """Where the recorded session ran and when its host booted, from its ready record, so
    a replay dates alerts as the live session did; a recording without one (`trace
    --record` before it wrote one) is dated by this host."""
    from spawnwatch.runner import ready_record

    ready = ready or ready_record()
    host = ready.get("host")
    if not isinstance(host, str):
        raise RecordError(f"'host' must be a string, not {type(host).__name__}")
    return Origin(host, time_value(ready["boot_time"], "'boot_time'"))


# The counters of a live session's stats record that a replay reports as they were.
# Others (such as the per-cause reap counts of older recordings) are left out.
RECORDED_COUNTS = ("decode_errors", "dead_slot_collisions", "reaps_settled_from_proc", "reaps_given_up", "resyncs",
                   "container_events_dropped")
RECORDED_BY_KIND = ("lost_by_kind", "missed_by_kind", "notifications", "evicted_by_table")


def recorded_counters(record: Record) -> Record:
    """The live session's losses, resyncs, ... from its stats record, each checked: a
    recording is input like any other (RecordError for a bad one)."""
    counters: Record = {"lost": count_value(record.get("lost", 0), "stats: 'lost'")}
    for name in RECORDED_COUNTS:
        if name in record:
            counters[name] = count_value(record[name], f"stats: '{name}'")
    for name in RECORDED_BY_KIND:
        if name in record:
            table = record[name]
            if not isinstance(table, dict):
                raise RecordError(f"stats: '{name}' must be a map, not {type(table).__name__}")
            counters[name] = {str(k): count_value(v, f"stats: '{name}.{k}'") for k, v in table.items()}
    return counters
