"""The one event schema shared by live, recorded and replayed streams.

Every layer above the probe sees only these types.  `to_record` / `from_record`
give the JSON-lines contract of `trace --json` (and the msgpack recordings use
the very same dicts), so a recording replays exactly like the live stream.

Times are seconds since boot (CLOCK_BOOTTIME), the clock of both the BPF side
(bpf_ktime_get_boot_ns) and /proc/<pid>/stat start times.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Iterator


class Kind(str, enum.Enum):
    FORK = "fork"
    EXEC = "exec"
    EXIT = "exit"
    REAP = "reap"
    OOM = "oom"


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    pid: int
    ppid: int
    comm: str
    cgroup_id: int

    kind = None  # set by each subclass; a class attribute, not a field


@dataclass(frozen=True, slots=True)
class Fork(Event):
    """A new process (never a thread).  `ppid` is the parent the kernel gave it."""

    kind = Kind.FORK


@dataclass(frozen=True, slots=True)
class Exec(Event):
    argv: tuple[str, ...] = ()
    filename: str = ""
    argv_truncated: bool = False

    kind = Kind.EXEC


@dataclass(frozen=True, slots=True)
class Exit(Event):
    """The whole thread group is dead; the process is a zombie until its Reap."""

    kind = Kind.EXIT


@dataclass(frozen=True, slots=True)
class Reap(Event):
    """The parent (or init/subreaper) collected the exit status: the pid is free."""

    kind = Kind.REAP


@dataclass(frozen=True, slots=True)
class Oom(Event):
    rss_bytes: int = 0

    kind = Kind.OOM


EVENT_TYPES: dict[Kind, type[Event]] = {cls.kind: cls for cls in (Fork, Exec, Exit, Reap, Oom)}


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as seen in /proc when a session starts (the seed of the lineage)."""

    pid: int
    ppid: int
    start: float  # seconds since boot
    comm: str
    argv: tuple[str, ...]
    cgroup_id: int = 0
    zombie: bool = False
    cgroup_path: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """All processes at one instant; recordings start with one so replay == live."""

    ts: float
    processes: tuple[ProcessInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Resync(Snapshot):
    """All processes at one instant after the kernel lost events: the process
    table is made to agree with it (recorded, so replay does the same)."""


def to_record(item: Event | Snapshot) -> dict[str, Any]:
    """The JSON/msgpack dict of an event, `kind` first."""
    if isinstance(item, Snapshot):
        return {
            "kind": "resync" if isinstance(item, Resync) else "snapshot",
            "ts": item.ts,
            "processes": [
                {**asdict(p), "argv": list(p.argv)} for p in item.processes
            ],
        }
    record: dict[str, Any] = {"kind": item.kind.value}
    for f in fields(item):
        value = getattr(item, f.name)
        record[f.name] = list(value) if isinstance(value, tuple) else value
    return record


def from_record(record: dict[str, Any]) -> Event | Snapshot | None:
    """Inverse of `to_record`; None for lines that are not events or snapshots (ready, stats, alerts)."""
    kind = record.get("kind")
    if kind in ("snapshot", "resync"):
        return (Resync if kind == "resync" else Snapshot)(
            ts=float(record["ts"]),
            processes=tuple(
                ProcessInfo(**{**p, "argv": tuple(p.get("argv", ()))})
                for p in record.get("processes", ())
            ),
        )
    try:
        cls = EVENT_TYPES[Kind(kind)]
    except ValueError:
        return None
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in record.items() if k in names}
    if "argv" in values:
        values["argv"] = tuple(values["argv"])
    return cls(**values)


def replay(records: Iterable[dict[str, Any]]) -> Iterator[Event | Snapshot]:
    """Events (and snapshots) of a recorded stream, skipping bookkeeping lines."""
    for record in records:
        item = from_record(record)
        if item is not None:
            yield item
