"""Recordings: the same records as `--json` output, stored as a msgpack stream
(or read back from JSON lines), so a recorded session replays through exactly
the code a live one runs.

A recording holds every command line of the host: it is written mode 0600,
and an existing file is narrowed to 0600 before anything is written to it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterator

import msgpack


class RecordingError(ValueError):
    pass


PRIVATE = 0o600


class RecordingWriter:
    def __init__(self, path: str | Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & ~PRIVATE:  # not a pipe or a tty that we would chmod
                os.fchmod(fd, PRIVATE)
        except OSError:
            os.close(fd)
            raise
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._packer = msgpack.Packer()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(self._packer.pack(record))

    def flush(self) -> None:
        """Hand what was written to the file: a reader, or what is left after a crash, has every record so far."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a msgpack recording, or of a JSON-lines file (`trace --json` output).
    Anything else (not a map, undecodable, cut short) is a RecordingError naming where."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(1)
        f.seek(0)
        if head in (b"{", b""):
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError as exc:  # also bytes that are not UTF-8
                        raise RecordingError(f"{path}:{number}: not JSON: {exc}") from exc
                    yield _record(record, f"{path}:{number}")
            return
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            for record in unpacker:
                yield record if type(record) is dict else _record(record, str(path))
        except (msgpack.UnpackException, ValueError, TypeError) as exc:  # TypeError: a map key that cannot be one
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"{path}: corrupt recording: {exc}") from exc
        if unpacker.tell() != path.stat().st_size:
            raise RecordingError(f"{path}: cut short after {unpacker.tell()} bytes: its last record is incomplete")


def _record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordingError(f"{where}: not a spawnwatch recording (found {type(record).__name__}, not a map)")
    return record
