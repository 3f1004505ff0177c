"""The ledger of a live `watch`: its firing alerts in `<state_dir>/alerts.json`, for
`report` and `reap`, which otherwise see only what /proc shows now.

The containers an exited `docker run` client left running are known only from the
history `watch` saw (the client's exec, the engine's create event); this file is how
that knowledge reaches the other commands.  It names processes and their argv, so it
is written 0600 in a directory made 0700, atomically (a temporary file in the same
directory renamed over it): a reader sees the old ledger or the new one, never half.

A reader trusts a ledger only while its writer lives: the same boot (the kernel's
boot id) and the writer's pid still the process that started at the recorded time.
One `watch` keeps a state directory at a time: it holds an flock on `alerts.lock`,
which the kernel releases however the watcher ends.

The ledger decides what `reap` ends with root's power, so it is believed only when
no other user could have written it: the state directory and its files must belong
to this process's user (or root) and be writable by no group or other user, and
none of them may be a symbolic link (opened with O_NOFOLLOW, the files relative to
the directory's fd).  Anything else is refused with `UntrustedLedger`.

Beside it, `containers.json` keeps what must outlive the `watch` that wrote it (its
links of running containers to their clients and charges, detect/containers.py): a
restart (an upgrade, a crash) reads it back.  Written the same way, kept when `watch`
stops, valid within the boot it was written in, versioned (`format`: an older one is
read, a newer one refused with a message saying so) and at most MAX_STATE_BYTES.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from spawnwatch.adapters import procfs
from spawnwatch.adapters.files import TooLarge, read_capped

LEDGER_FILE = "alerts.json"
LOCK_FILE = "alerts.lock"
STATE_FILE = "containers.json"
FORMAT = 1
STATE_FORMAT = 1
MAX_STATE_BYTES = 4 << 20  # 4,096 links (the container book's bound) of ~600 bytes, and room
BOOT_ID = "/proc/sys/kernel/random/boot_id"


class LedgerError(Exception):
    """A ledger that cannot be read or is not one; the message names the file."""


class UntrustedLedger(LedgerError, PermissionError):
    """A state directory or ledger file that another user could have written or swapped."""


def boot_id() -> str:
    with open(BOOT_ID) as f:
        return f.read().strip()


@dataclass(frozen=True, slots=True)
class Writer:
    """The `watch` that keeps a ledger."""

    pid: int
    start: float  # seconds since boot, as /proc/<pid>/stat says
    host: str
    boot_id: str
    boot_time: float  # wall-clock time of the boot, which dates the alerts' seconds since boot

    @classmethod
    def running(cls, pid: int, host: str, boot_time: float) -> "Writer":
        """The live process `pid` (a `watch`'s ready record names it, its host and boot)."""
        return cls(pid=pid, start=procfs.start_time(pid) or 0.0, host=host, boot_id=boot_id(), boot_time=boot_time)

    def as_record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def staleness(writer: Writer) -> str | None:
    """Why a ledger by `writer` is not kept up to date now (None: its watch runs)."""
    if writer.boot_id != boot_id():
        return f"written before this host's last boot, by {writer.host}"
    if not procfs.same_process(writer.pid, writer.start):
        return f"its `watch` (pid {writer.pid}) has ended"
    return None


@dataclass(frozen=True, slots=True)
class LedgerFile:
    path: str
    writer: Writer
    updated_at: float  # wall-clock time of the last change
    alerts: tuple[dict[str, Any], ...]  # the firing alerts' records, each with the ledger's own fields
    stale: str | None  # why it cannot be trusted now; None when its writer keeps it

    @property
    def state_dir(self) -> str:
        return os.path.dirname(self.path)


def ledger_path(state_dir: str) -> str:
    return os.path.join(state_dir, LEDGER_FILE)


def read(state_dir: str) -> LedgerFile | None:
    """The ledger in `state_dir`, None when there is none; UntrustedLedger when another
    user could have written it."""
    path = ledger_path(state_dir)
    raw = _read_kept(state_dir, LEDGER_FILE)  # no cap: nothing bounds how many alerts fire at once
    if raw is None:
        return None
    try:
        document = json.loads(raw)
        if document["format"] != FORMAT:
            raise LedgerError(f"{path}: ledger format {document['format']!r}, this spawnwatch reads {FORMAT}")
        writer = Writer(**document["writer"])
        alerts = tuple(document["alerts"])
        if not all(isinstance(a, dict) for a in alerts):
            raise TypeError("alerts must be objects")
        return LedgerFile(path, writer, float(document["updated_at"]), alerts, staleness(writer))
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerError(f"{path}: not a ledger: {exc!r}") from exc


def read_state(state_dir: str) -> list[dict[str, Any]]:
    """The links kept in `state_dir` by a `watch` of this boot ([] when none, or from an
    earlier boot: its pids and times mean nothing now).  LedgerError (UntrustedLedger)
    when the file cannot be read, is not one, is too large or is of a newer format."""
    path = os.path.join(state_dir, STATE_FILE)
    text = _read_kept(state_dir, STATE_FILE, MAX_STATE_BYTES)
    if text is None:
        return []
    try:
        document = json.loads(text)
        version = document["format"]
        if type(version) is not int or version < 1:
            raise ValueError(f"format {version!r}")
        if version > STATE_FORMAT:
            raise LedgerError(f"{path}: written by a newer spawnwatch (state format {version}; this one reads up "
                              f"to {STATE_FORMAT}): run that version, or remove the file to start afresh")
        if document["boot_id"] != boot_id():
            return []
        links = document["links"]
        if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
            raise TypeError("links must be a list of objects")
        return links
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerError(f"{path}: not spawnwatch's state: {exc!r}") from exc


def _read_kept(state_dir: str, name: str, cap: int | None = None) -> bytes | None:
    """The whole of the state directory's file `name`, None when there is none; UntrustedLedger
    when another user could have written it, LedgerError when it cannot be read or holds
    more than `cap` bytes."""
    path = os.path.join(state_dir, name)
    try:
        directory = _open_state_dir(state_dir)
        try:
            fd = _open_in(directory, state_dir, name, os.O_RDONLY | os.O_NONBLOCK)
        finally:
            os.close(directory)
        if cap is not None:
            return read_capped(fd, cap)
        with open(fd, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except UntrustedLedger:
        raise
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read: {exc.strerror}") from exc
    except TooLarge:
        raise LedgerError(f"{path}: larger than {cap} bytes: not written by spawnwatch") from None


def write_state(state_dir: str, links: list[dict[str, Any]]) -> None:
    """Replace the kept links atomically (mode 0600), fsynced: they must survive a crash."""
    document = {"kind": "state", "format": STATE_FORMAT, "boot_id": boot_id(), "written_at": time.time(),
                "links": links}
    _replace(state_dir, STATE_FILE, document, durable=True)


def claim(state_dir: str) -> int | None:
    """Make `state_dir` (0700) and lock it for this process: the lock's fd, held until
    `release`; None when another live process holds it.  UntrustedLedger when the
    directory or its lock could be another user's."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    directory = _open_state_dir(state_dir)
    try:
        fd = _open_in(directory, state_dir, LOCK_FILE, os.O_RDWR | os.O_CREAT)
    finally:
        os.close(directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _open_state_dir(state_dir: str) -> int:
    """An fd on `state_dir`, never through a symbolic link, checked as `_check_owner` says."""
    state_dir = os.path.normpath(state_dir)  # a trailing slash would follow a link
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UntrustedLedger(f"{state_dir}: a symbolic link or not a directory; a state directory "
                                  "must be a real one: not trusted") from exc
        raise
    try:
        _check_owner(state_dir, "state directory", os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_in(directory: int, state_dir: str, name: str, flags: int) -> int:
    """An fd on the regular file `name` of the state directory, never through a link."""
    path = os.path.join(state_dir, name)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedLedger(f"{path}: a symbolic link: not trusted") from exc
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UntrustedLedger(f"{path}: not a regular file: not trusted")
        _check_owner(path, "file", status)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owner(path: str, what: str, status: os.stat_result) -> None:
    """UntrustedLedger unless this process's user (or root) owns it and no one else may write it."""
    if status.st_uid not in (os.geteuid(), 0):
        raise UntrustedLedger(f"{path}: the {what} belongs to uid {status.st_uid}, not to uid {os.geteuid()} "
                              "(spawnwatch's user) or root: another user could have written it: not trusted")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedLedger(f"{path}: the {what} is writable by its group or by others "
                              f"(mode {stat.S_IMODE(status.st_mode):04o}): not trusted")


def write(state_dir: str, writer: Writer, alerts: list[dict[str, Any]]) -> None:
    """Replace the ledger atomically (mode 0600).  Not fsynced: after a crash the ledger
    is stale whatever it holds."""
    document = {"kind": "ledger", "format": FORMAT, "writer": writer.as_record(), "updated_at": time.time(),
                "alerts": alerts}
    _replace(state_dir, LEDGER_FILE, document, durable=False)


def _replace(state_dir: str, name: str, document: dict[str, Any], durable: bool) -> None:
    """Write `document` to a temporary file (0600) in `state_dir` and rename it over `name`."""
    fd, temporary = tempfile.mkstemp(dir=state_dir, prefix=f".{name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, separators=(",", ":"))
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, os.path.join(state_dir, name))
    except BaseException:
        os.unlink(temporary)
        raise


def release(state_dir: str, lock_fd: int) -> None:
    """The ledger removed (its alerts are watched no more) and the lock let go."""
    try:
        os.unlink(ledger_path(state_dir))
    except FileNotFoundError:
        pass
    finally:
        os.close(lock_fd)
