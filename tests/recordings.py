"""Recordings written by hand in either format: the same session as format 1 (every record
a map, as `watch --record` wrote before format 2) and as format 2 (events as arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from spawnwatch.events import RECORD_READERS, Event, Observation, Snapshot, from_record, to_record
from spawnwatch.recording import RecordingWriter, read_records
from spawnwatch.records import READY


def write_format1(path: Path, ready: dict[str, Any], items: Iterable[Event | Observation | Snapshot | dict]) -> Path:
    """`items` after `ready` (its "format" left out, as format 1's were), each event as its map;
    a dict is written as it is."""
    with RecordingWriter(path) as writer:
        writer.write({key: value for key, value in ready.items() if key != "format"})
        for item in items:
            writer.write(item if isinstance(item, dict) else to_record(item))
    return path


def write_format2(path: Path, ready: dict[str, Any], items: Iterable[Event | Observation | Snapshot | dict]) -> Path:
    """`items` after `ready` (as format 2), each event as its array; a dict is written as it is."""
    with RecordingWriter(path) as writer:
        writer.write({**ready, "format": 2})
        for item in items:
            if isinstance(item, dict):
                writer.write(item)
            else:
                writer.write_item(item)
    return path


def rewritten(source: Path, target: Path, format: int) -> Path:
    """The recording `source` in `format`, through the project's reader and writer: its events
    as maps (1) or arrays (2), every other record as it is."""
    records = iter(read_records(source))
    ready = next(records)
    assert ready["kind"] == READY, f"{source} begins with no ready record"
    items = (from_record(record) if type(record) is list or record["kind"] in RECORD_READERS else record
             for record in records)
    return (write_format1 if format == 1 else write_format2)(target, ready, items)
