"""Recordings: the same records as `--json` output, stored as a msgpack stream
(or read back from JSON lines), so a recorded session replays through exactly
the code a live one runs.  In a msgpack recording of format 2, an event's or
observation's record is an array rather than its `--json` map (`events.to_array`):
its kind's code, then its fields in their declaration order.  Unpacking a map
decodes every key again, record after record: the array is read in a quarter of
the instructions, and is what a replay spends less on.

A recording holds every command line of the host, and root writes it: it is
written mode 0600, never through a symlink, never into something else than a
regular file of this user that has no other name (an existing one is narrowed
to 0600 and emptied only once it is known to be that).

A recording read back is hostile input like any other (anyone could have
written it): a record is at most MAX_RECORD_BYTES, nested no deeper than the
parsers allow (msgpack's stack, Python's recursion limit for JSON), and
anything else is a RecordingError, never a crash.

A recording says its format in its first record, the ready one (`"format": N`).  Records
only gain fields within a format; a change an older reader would misread is a new N, and
a reader refuses a recording newer than it knows rather than replay it wrong.  The
recordings from before formats were numbered have none: they are format 1.

    format 1  every record a map (JSON lines are always read as this, whatever they say)
    format 2  an event or observation an array, [code, field, field, ...] (events.ARRAY_CODES);
              the other records (ready, tick, stats, alerts, snapshots) maps; a map of an
              event still read as in format 1

An array gains fields as a map gains keys: only at its end.  A reader fills the trailing
fields an array lacks with their defaults (as a map's missing keys) and ignores the items
past the fields it knows (as a map's unknown keys); a field without a default that an
array lacks is an error, as its missing key is.  An array of a kind code the reader does
not know is skipped, as a map of an unknown kind is.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import IO, Any, Iterator

import msgpack

from spawnwatch.events import Event, Observation, Snapshot, to_array, to_record
from spawnwatch.records import FORMAT, READY


class RecordingError(ValueError):
    pass


PRIVATE = 0o600
# A snapshot of a busy host is the largest record a session writes (a few MiB); a record
# past these is refused before it is held whole, which bounds what one costs in memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024
MAX_ARRAY_ITEMS = 1 << 20
MAX_MAP_ITEMS = 1 << 16


class RecordingWriter:
    def __init__(self, path: str | Path) -> None:
        """RecordingError when `path` is a symlink, not a regular file, another user's, or has other names."""
        # O_NONBLOCK: opening a FIFO nobody reads fails at once instead of hanging (and is refused below);
        # no O_TRUNC: nothing is emptied before it is known to be ours.
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, PRIVATE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RecordingError(f"{path}: is a symlink: a recording is never written through one") from exc
            if exc.errno == errno.ENXIO:
                raise RecordingError(f"{path}: is a FIFO or socket, not a regular file") from exc
            raise RecordingError(f"{path}: cannot write: {exc.strerror}") from exc
        try:
            _check_own_regular_file(path, os.fstat(fd))
            os.ftruncate(fd, 0)
            os.fchmod(fd, PRIVATE)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._packer = msgpack.Packer()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(self._packer.pack(record))

    def write_item(self, item: Event | Observation | Snapshot) -> None:
        """An event or observation as format 2's array, a snapshot as its map."""
        self._file.write(self._packer.pack(to_record(item) if isinstance(item, Snapshot) else to_array(item)))

    def flush(self) -> None:
        """Hand what was written to the file: a reader, or what is left after a crash, has every record so far."""
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_own_regular_file(path: str | Path, found: os.stat_result) -> None:
    if not stat.S_ISREG(found.st_mode):
        raise RecordingError(f"{path}: not a regular file: a recording is only written to one")
    if found.st_uid != os.geteuid():
        raise RecordingError(f"{path}: belongs to uid {found.st_uid}, not to this user (uid {os.geteuid()}):"
                             f" remove it or record elsewhere")
    if found.st_nlink > 1:
        raise RecordingError(f"{path}: has {found.st_nlink - 1} other hard link(s): writing would change them too")


def read_records(path: str | Path) -> Iterator[dict[str, Any] | list[Any]]:
    """Records of a msgpack recording, or of a JSON-lines file (`trace --json` output): maps,
    and in a msgpack recording of format 2 the arrays of its events (events.from_record reads
    both).  Anything else (another type, undecodable, cut short, too large, nested too deep)
    is a RecordingError naming where."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(1)
        f.seek(0)
        if head in (b"{", b""):
            records = _json_lines(f, path)
            for first in records:
                check_format(first, path)
                yield first
                break
            yield from records
        else:
            yield from _msgpack_records(f, path)


def check_format(record: dict[str, Any], path: Path) -> int:
    """The format of a recording whose first record is `record` (1 when that is no ready record);
    RecordingError when it is a format this version cannot read."""
    if record.get("kind") != READY:
        return 1
    found = record.get("format", 1)
    if type(found) is not int or found < 1:
        raise RecordingError(f"{path}: ready record: 'format' must be a positive integer")
    if found > FORMAT:
        raise RecordingError(f"{path}: recording format {found} is newer than this spawnwatch reads "
                             f"(format {FORMAT} and older): replay it with the spawnwatch that recorded it, "
                             f"or a newer one")
    return found


def _msgpack_records(f: IO[bytes], path: Path) -> Iterator[dict[str, Any] | list[Any]]:
    unpacker = msgpack.Unpacker(
        f, raw=False, strict_map_key=False, max_buffer_size=MAX_RECORD_BYTES,
        max_array_len=MAX_ARRAY_ITEMS, max_map_len=MAX_MAP_ITEMS,
    )
    try:
        shapes: tuple[type, ...] = (dict,)
        for first in unpacker:
            # The first record is a map (the ready record, or an old trace's snapshot) in every format.
            if check_format(_record(first, str(path)), path) >= 2:
                shapes = (dict, list)
            yield first
            break
        for record in unpacker:
            if type(record) not in shapes:
                raise RecordingError(f"{path}: not a spawnwatch recording (found {type(record).__name__},"
                                     f" not {' or '.join('a map' if shape is dict else 'an array' for shape in shapes)})")
            yield record
    except msgpack.StackError as exc:
        raise RecordingError(f"{path}: corrupt recording: a record nested too deep") from exc
    except (msgpack.UnpackException, ValueError, TypeError) as exc:  # TypeError: a map key that cannot be one
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{path}: corrupt recording: {exc or type(exc).__name__}") from exc
    if unpacker.tell() != path.stat().st_size:
        raise RecordingError(f"{path}: cut short after {unpacker.tell()} bytes: its last record is incomplete")


def _json_lines(f: IO[bytes], path: Path) -> Iterator[dict[str, Any]]:
    number = 0
    while line := f.readline(MAX_RECORD_BYTES + 1):
        number += 1
        if len(line) > MAX_RECORD_BYTES:
            raise RecordingError(f"{path}:{number}: a record longer than {MAX_RECORD_BYTES} bytes")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except RecursionError as exc:  # the parser stops at Python's recursion limit, before the C stack
            raise RecordingError(f"{path}:{number}: a record nested too deep") from exc
        except ValueError as exc:  # also bytes that are not UTF-8, and integers too long to read
            raise RecordingError(f"{path}:{number}: not JSON: {exc}") from exc
        yield _record(record, f"{path}:{number}")


def _record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise RecordingError(f"{where}: not a spawnwatch recording (found {type(record).__name__}, not a map)")
    return record
