"""Podman's container lifecycle, from the events file its commands append to.

Podman has no daemon: every `podman` command writes its own events, to journald or, with
`events_logger = "file"` (the default without systemd), as one JSON object per line to
`/run/libpod/events/events.log` (rootful).  That file is read here rather than asking
`podman system service` for `/events`: it needs no service running, nothing to start or
keep alive, and it is there for every event whichever command wrote it.  Podman rotates it
by rewriting it with its newer half; a file replaced or shrunk is read again (at most
MAX_BACKLOG of it), and the events no newer than the last one read are skipped.

The file is written by root, but what it says (names, images, labels) is whatever a local
user gave `podman run`: every line is bounded (MAX_LINE), any line that is not one of
the lifecycle events parsed below is skipped, never raised, and the file is opened without
following a link.  The follower runs under supervise.py.

Its events are ContainerEvents of engine PODMAN (detect/containers.py matches them to
podman clients only).  Once told the session's boot time (`queue_lifecycle`), the
containers still running by the file's last MAX_BACKLOG bytes come first, as their create
and start, dated by the file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
from collections import Counter, deque
from typing import Any, Iterator

from spawnwatch.adapters.engine import wall_time, container_labels
from spawnwatch.bounded import BoundedMap
from spawnwatch.events import ContainerEvent
from spawnwatch.signature import PODMAN_ENGINE
from spawnwatch.supervise import PODMAN_EVENTS, Supervised

log = logging.getLogger(__name__)

EVENTS_FILE = "/run/libpod/events/events.log"  # rootful podman's, with the file events logger
MAX_LINE = 64 * 1024  # a longer line is skipped whole: no event of ours needs more
MAX_BACKLOG = 1024 * 1024  # read at the start for the containers running then (podman rotates at 1 MiB)
MAX_RUNNING = 4096  # containers tracked while reading the backlog
READ_CHUNK = 64 * 1024
POLL_S = 0.25  # how often the file is checked for new lines: a stat of a tmpfs file
LIFECYCLE_CAPACITY = 65536

# Podman's statuses, as the Docker engine's actions the book knows.
ACTIONS = {"create": "create", "start": "start", "died": "die", "remove": "destroy"}


def podman_event(record: Any, boot_time: float) -> ContainerEvent | None:
    """One decoded line of Podman's events file as a lifecycle event, dated in seconds since
    boot; None for other statuses, other types and anything malformed."""
    if not isinstance(record, dict) or record.get("Type") != "container":
        return None
    status = record.get("Status")
    action = ACTIONS.get(status) if isinstance(status, str) else None
    container_id, name, image = record.get("ID"), record.get("Name", ""), record.get("Image", "")
    when = wall_time(record.get("Time")) if isinstance(record.get("Time"), str) else None
    if action is None or not isinstance(container_id, str) or not container_id or when is None:
        return None
    if not isinstance(name, str) or not isinstance(image, str):
        return None
    exit_code = record.get("ContainerExitCode")
    attributes = record.get("Attributes")
    labels = container_labels(attributes) if action in ("create", "start") and isinstance(attributes, dict) else ()
    return ContainerEvent(
        ts=max(when - boot_time, 0.0), action=action, id=container_id, name=name, image=image,
        exit_code=exit_code if type(exit_code) is int and exit_code >= 0 else 0, labels=labels, engine=PODMAN_ENGINE)


def decoded(line: bytes) -> Any:
    """A line's JSON value; None when it is none (or nested too deep to decode)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError included
        return None


def still_running(events: list[ContainerEvent], running: BoundedMap[str, list[ContainerEvent]]) -> list[ContainerEvent]:
    """The create and start of each container that `events` (in file order) leave running.
    `running` holds them meanwhile (empty again after): the oldest past its limit are its evictions."""
    for event in events:
        if event.action == "create":
            running.put(event.id, [event])
        elif event.action == "start" and event.id in running:
            running[event.id] = [running[event.id][0], event]
        elif event.action in ("die", "destroy"):
            running.pop(event.id, None)
    left_running = [event for pair in running.values() if len(pair) == 2 for event in pair]
    running.clear()
    return left_running


class EventsFile:
    """Podman's events file read forward line by line, bounded, reopened when rotated."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._skipping = False  # in the middle of a line longer than MAX_LINE

    def open(self, backlog: int) -> bool:
        """Open the file at `backlog` bytes before its end (the line cut there skipped);
        False while it is missing or is not a regular file (a link is never followed)."""
        self.close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.EACCES):
                raise
            return False
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return False
        self._fd, self._identity = fd, (info.st_dev, info.st_ino)
        self._offset = max(info.st_size - backlog, 0)
        self._partial, self._skipping = b"", self._offset > 0  # the first line read may be cut: skipped
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def rotated(self) -> bool:
        """Was the file replaced or truncated since it was opened?"""
        try:
            info = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self._identity or info.st_size < self._offset

    def lines(self) -> Iterator[bytes]:
        """The whole lines appended since the last call."""
        while self._fd is not None:
            chunk = os.pread(self._fd, READ_CHUNK, self._offset)
            if not chunk:
                return
            self._offset += len(chunk)
            *whole, rest = chunk.split(b"\n")
            for piece in whole:
                line, self._partial = self._partial + piece, b""
                if self._skipping:
                    self._skipping = False
                elif len(line) <= MAX_LINE:
                    yield line
            self._partial += rest
            if len(self._partial) > MAX_LINE:
                self._partial, self._skipping = b"", True


class PodmanEvents:
    """Podman's container lifecycle, followed in a supervised thread from its events file:
    the same `queue_lifecycle` / `lifecycle` as the resolver's for Docker's engine."""

    def __init__(self, path: str = EVENTS_FILE, poll_s: float = POLL_S,
                 lifecycle_capacity: int = LIFECYCLE_CAPACITY) -> None:
        self._file = EventsFile(path)
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._boot_time: float | None = None
        self._lifecycle: deque[ContainerEvent] = deque()
        self._capacity = lifecycle_capacity
        self._follower: Supervised | None = None
        self.following = threading.Event()  # set once the file is open and its backlog read
        self.counts: Counter[str] = Counter()  # podman_events_dropped: the consumer fell behind
        self._backlog_running: BoundedMap[str, list[ContainerEvent]] = BoundedMap(MAX_RUNNING)

    def __enter__(self) -> "PodmanEvents":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def queue_lifecycle(self, boot_time: float) -> None:
        """Follow the file from now on, after the create and start of the containers it
        leaves running, dated with the session's `boot_time` (wall-clock time of boot)."""
        self._boot_time = boot_time
        if self._follower is None:
            self._stop.clear()
            self._follower = Supervised(PODMAN_EVENTS, self._follow, self._stop)
            self._follower.start()

    def evicted_by_table(self) -> dict[str, int]:
        """Containers the backlog's running ones let go past MAX_RUNNING: their create and start never come."""
        return {"podman_backlog_containers": self._backlog_running.evicted}

    def lifecycle(self) -> list[ContainerEvent]:
        """The lifecycle events queued since the last call, oldest first."""
        with self._lock:
            events = list(self._lifecycle)
            self._lifecycle.clear()
        return events

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=5)
            self._follower = None

    def _follow(self) -> None:
        try:
            while not self._file.open(MAX_BACKLOG):
                if self._stop.wait(self._poll_s):
                    return
            events = self._events()
            self._queue(still_running(events, self._backlog_running))
            newest = max((event.ts for event in events), default=0.0)
            self.following.set()
            while not self._stop.wait(self._poll_s):
                if self._file.rotated():
                    while not self._file.open(MAX_BACKLOG):
                        if self._stop.wait(self._poll_s):
                            return
                    events = [event for event in self._events() if event.ts > newest]  # read before the rotation
                else:
                    events = self._events()
                newest = max((event.ts for event in events), default=newest)
                self._queue(events)
        finally:
            self.following.clear()
            self._file.close()

    def _events(self) -> list[ContainerEvent]:
        events = (podman_event(decoded(line), self._boot_time) for line in self._file.lines())
        return [event for event in events if event is not None]

    def _queue(self, events: list[ContainerEvent]) -> None:
        with self._lock:
            self._lifecycle.extend(events)
            while len(self._lifecycle) > self._capacity:
                self._lifecycle.popleft()
                self.counts["podman_events_dropped"] += 1
