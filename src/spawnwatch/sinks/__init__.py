"""Where records go: stdout as JSON lines or for humans, Prometheus, a webhook.

A sink takes the records `watch` produces (alert dicts from `Alert.to_record()`,
and the final stats dict) through `send(record)` and is closed once.  None may
block the caller: a slow receiver gets a bounded queue of its own.
"""

from __future__ import annotations

from typing import Any, Protocol

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
