"""One JSON object per line: the `--json` contract."""

from __future__ import annotations

import json
from typing import TextIO

from spawnwatch.sinks import Record


class JsonLines:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def send(self, record: Record) -> None:
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass
