"""One JSON object per line: the `--json` contract."""

from __future__ import annotations

import json
from typing import TextIO

from spawnwatch.records import PROGRESS
from spawnwatch.sinks import Record


def write_json_line(record: Record, stream: TextIO) -> None:
    """The one place a record becomes a `--json` line."""
    stream.write(json.dumps(record, separators=(",", ":")) + "\n")


class JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, record: Record) -> None:
        if record.get("kind") == PROGRESS:
            return  # running totals, for sinks that serve them (metrics): not part of the --json stream
        write_json_line(record, self.stream)
        self.stream.flush()

    def close(self) -> None:
        pass
