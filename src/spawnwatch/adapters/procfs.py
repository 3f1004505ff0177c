"""Processes and memory from /proc, via psutil, as spawnwatch dataclasses."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import psutil

from spawnwatch.adapters.cgroups import cgroup2_mount, inode, read_proc_cgroups
from spawnwatch.clock import CLOCK_TICKS, same_start
from spawnwatch.config import default_redactor
from spawnwatch.events import ProcessInfo, Snapshot
from spawnwatch.redact import Redactor
from spawnwatch.signature import ENGINE_CLIENTS, ENGINE_VARIABLES

ENVIRON_LIMIT = 256 * 1024  # bytes of an environment read; a larger one is taken as unread
ENVIRON_VALUE_LIMIT = 4096  # characters kept of a variable
# What is read of a /proc/<pid>/cmdline: the kernel side's SW_ARGV_BYTES, so an exec's argv costs
# the same from either.  Any user sets argv (up to ARG_MAX, 2 MiB and more): without a cap, one
# snapshot or resync would read and redact all of it for every process.
CMDLINE_BYTES = 4096


def boottime_now() -> float:
    """Seconds since boot on CLOCK_BOOTTIME, the clock of BPF event timestamps."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _stat_after_comm(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: fields resume after the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def start_time(pid: int) -> float | None:
    """Start of `pid` in seconds since boot (field 22 of /proc/<pid>/stat), None when gone."""
    rest = _stat_after_comm(pid)
    return int(rest[19]) / CLOCK_TICKS if rest else None


def zombie_start(pid: int) -> float | None:
    """Start of `pid` while it is a zombie; None when it is gone or running (a reused pid)."""
    rest = _stat_after_comm(pid)
    return int(rest[19]) / CLOCK_TICKS if rest and rest[0] == b"Z" else None


def engine_environ(pid: int) -> tuple[str, ...] | None:
    """The variables of `pid`'s environment that name a container engine (ENGINE_VARIABLES),
    as NAME=value; None when /proc would not tell (gone, no access), or shows none at all
    (an exited process's reads empty), or more than ENVIRON_LIMIT bytes.  Read once, at the
    exec of an engine client: the only reader of /proc/<pid>/environ."""
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(ENVIRON_LIMIT + 1)
    except OSError:
        return None
    if not data or len(data) > ENVIRON_LIMIT:
        return None
    prefixes = tuple(f"{name}=".encode() for name in ENGINE_VARIABLES)
    return tuple(entry.decode("utf-8", "replace")[:ENVIRON_VALUE_LIMIT]
                 for entry in data.split(b"\0") if entry.startswith(prefixes))


def process_info(proc: psutil.Process, mount: str | None, redact: Redactor) -> ProcessInfo | None:
    try:
        with proc.oneshot():
            pid = proc.pid
            cgroups = read_proc_cgroups(pid)
            status = proc.status()
            argv = read_cmdline(pid) if status != psutil.STATUS_ZOMBIE else ()
            environ = engine_environ(pid) if proc.name() in ENGINE_CLIENTS and argv else ()
            return ProcessInfo(
                pid=pid,
                ppid=proc.ppid(),
                start=start_time(pid) or 0.0,
                comm=proc.name(),
                argv=redact(argv) if argv else (),
                cgroup_id=(inode(mount, cgroups.v2_path) if cgroups else None) or 0,
                zombie=status == psutil.STATUS_ZOMBIE,
                cgroup_path=cgroups.display_path if cgroups else "",
                environ=redact(environ) if environ else (),
                environ_unread=environ is None,
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None


def read_cmdline(pid: int) -> tuple[str, ...]:
    """The first CMDLINE_BYTES of `pid`'s argv, split as psutil does (a title rewritten in place
    may hold spaces for NULs), undecodable bytes replaced as the probe's are; raises OSError."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        data = f.read(CMDLINE_BYTES)
    text = data.decode("utf-8", "replace")
    if not text:
        return ()
    separator = "\0" if "\0" in text else " "
    words = text.removesuffix(separator).split(separator)
    if separator == "\0" and len(words) == 1 and " " in text:
        words = words[0].split(" ")  # one word with spaces and its NUL: a rewritten title
    return tuple(words)


def snapshot(redact: Redactor | None = None) -> Snapshot:
    """Every process now, for seeding the lineage before events start flowing; argv
    through `redact` (by default the default config's rules)."""
    mount = cgroup2_mount()
    ts = boottime_now()
    redact = redact if redact is not None else default_redactor()
    infos = (process_info(p, mount, redact) for p in psutil.process_iter())
    return Snapshot(ts=ts, processes=tuple(i for i in infos if i is not None))


@dataclass(frozen=True, slots=True)
class Memory:
    rss_bytes: int
    uss_bytes: int | None  # None when smaps is not readable


def memory_of(pids: Iterable[int], with_uss: bool = False) -> Memory:
    """Summed RSS (and USS when asked and readable) of the live processes among `pids`."""
    rss = 0
    uss: int | None = 0 if with_uss else None
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if with_uss and uss is not None:
                try:
                    info = proc.memory_full_info()
                    rss += info.rss
                    uss += info.uss
                    continue
                except psutil.AccessDenied:
                    uss = None
            rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return Memory(rss_bytes=rss, uss_bytes=uss)


def same_process(pid: int, start: float) -> bool:
    """True when `pid` still is the process that started at `start` (guards against pid reuse)."""
    now = start_time(pid)
    return now is not None and same_start(now, start)


def descendants(pid: int) -> Iterator[int]:
    try:
        for child in psutil.Process(pid).children(recursive=True):
            yield child.pid
    except psutil.NoSuchProcess:
        return


def parent_pid(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def argv(pid: int) -> tuple[str, ...] | None:
    """As the process has it, secrets included: the probe redacts what it reads here."""
    try:
        return read_cmdline(pid) or None
    except OSError:
        return None
