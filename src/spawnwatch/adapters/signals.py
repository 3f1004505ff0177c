"""Signalling processes by identity, never by a pid that may have been reused.

A `Handle` pins one process with a pidfd (Linux >= 5.3): it is opened only when the
pid still is the process that started at the expected time, and from then on a
signal sent through it can only reach that process, and `exited()` is true once it
has died (zombie or reaped), whoever its parent is.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import sys
import time
from typing import Iterable

from spawnwatch.adapters.procfs import same_process


class Handle:
    __slots__ = ("pid", "start", "_fd")

    def __init__(self, pid: int, start: float, fd: int) -> None:
        self.pid = pid
        self.start = start
        self._fd = fd

    @classmethod
    def open(cls, pid: int, start: float) -> "Handle | None":
        """A handle on the process `pid` that started at `start`; None when it is gone
        or the pid now belongs to another process."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        # Checked after opening: the fd now pins whichever process holds the pid, so
        # if it is still ours here, it is ours for good.
        if not same_process(pid, start):
            os.close(fd)
            return None
        return cls(pid, start, fd)

    def send(self, sig: signal.Signals) -> bool:
        """Send `sig`; False when the process has already died."""
        try:
            signal.pidfd_send_signal(self._fd, sig)
            return True
        except ProcessLookupError:
            return False

    def exited(self) -> bool:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def wait_exited(handles: Iterable[Handle], timeout: float) -> list[Handle]:
    """Wait up to `timeout` seconds for every handle's process to exit; the ones still alive."""
    pending = {h._fd: h for h in handles if not h.exited()}
    deadline = time.monotonic() + timeout
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(left * 1000):
            poller.unregister(fd)
            pending.pop(fd, None)
    return list(pending.values())


def allow_open_files(count: int) -> None:
    """Raise the soft open-files limit (up to the hard one) so `count` more fds fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256  # headroom for what the process already holds
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


def open_files_left() -> int:
    """How many more files this process may open now: its soft limit less those open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return soft - (len(os.listdir("/proc/self/fd")) - 1)  # less the listing's own fd
