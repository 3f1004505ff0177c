"""Where records go: stdout as JSON lines or for humans, Prometheus, a webhook.

A sink takes the records `watch` produces (alert dicts from `Alert.to_record()`,
and the final stats dict) through `send(record)` and is closed once.  None may
block the caller: a slow receiver gets a bounded queue of its own.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Protocol

from spawnwatch.filters import container_matches
from spawnwatch.records import ALERT

Record = dict[str, Any]


class Sink(Protocol):
    def send(self, record: Record) -> None: ...
    def close(self) -> None: ...


class Fanout:
    """Every record to every sink, in order."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def send(self, record: Record) -> None:
        for sink in self.sinks:
            sink.send(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def ledger_first(shown: Sink, ledger: Sink | None) -> Sink:
    """`shown` (the output, metrics, notifiers) behind the ledger, which takes every record
    first: whoever hears of an alert may run `reap` at once, and `reap` acts only on what
    the ledger holds."""
    return shown if ledger is None else Fanout([ledger, shown])


class OnlyContainer:
    """Passes alerts of one container (by name or id prefix), and every record
    that is not an alert (ready, stats)."""

    def __init__(self, sink: Sink, wanted: str) -> None:
        self.sink = sink
        self.wanted = wanted

    def send(self, record: Record) -> None:
        if record.get("kind") != ALERT or container_matches(record.get("container"), self.wanted):
            self.sink.send(record)

    def close(self) -> None:
        self.sink.close()


def rfc3339(unix_time: float) -> str:
    """UTC, to the millisecond: 2026-11-29T23:20:29.123Z."""
    moment = datetime.fromtimestamp(unix_time, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Origin:
    """Where and when alerts were raised: the host, and the wall-clock time of its boot,
    which dates an alert from its seconds since boot."""

    def __init__(self, host: str, boot_time: float) -> None:
        self.host = host
        self.boot_time = boot_time

    def stamp(self, record: Record, ts: float) -> Record:
        """`record` with `time` (RFC 3339, UTC) and `host`, as lines from many hosts need."""
        return {**record, "time": rfc3339(self.boot_time + ts), "host": self.host}
