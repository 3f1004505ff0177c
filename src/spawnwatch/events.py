"""The one event schema shared by live, recorded and replayed streams.

Every layer above the probe sees only these types.  `to_record` / `from_record`
give the JSON-lines contract of `trace --json`; a msgpack recording (format 2)
holds the same values, an event's or observation's as an array (`to_array`, read
back by `from_record` too), so a recording replays exactly like the live stream.

Times are seconds since boot (CLOCK_BOOTTIME), the clock of both the BPF side
(bpf_ktime_get_boot_ns) and /proc/<pid>/stat start times; a container engine's
events are converted to it with the session's boot time.

Events and observations are values: once built, nothing changes them (`replaced`
makes a changed copy).  They are not frozen dataclasses all the same: a storm
builds millions, and a frozen one's every field is set through object.__setattr__
(or a slot's descriptor), twice the cost of a plain slots class's __init__.
"""

from __future__ import annotations

import enum
from itertools import islice
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator


class Kind(str, enum.Enum):
    FORK = "fork"
    EXEC = "exec"
    EXIT = "exit"
    REAP = "reap"
    OOM = "oom"
    BRIEF = "brief"
    TALLY = "tally"
    EXEC_BRIEF = "exec_brief"
    EXEC_TALLY = "exec_tally"
    PIDS = "pids"
    CONTAINER = "container"


@dataclass(slots=True)
class Event:
    ts: float
    pid: int
    ppid: int
    comm: str
    cgroup_id: int

    kind = None  # set by each subclass; a class attribute, not a field


@dataclass(slots=True)
class Fork(Event):
    """A new process (never a thread).  `ppid` is the parent the kernel gave it."""

    kind = Kind.FORK


@dataclass(slots=True)
class Exec(Event):
    argv: tuple[str, ...] = ()
    filename: str = ""
    argv_truncated: bool = False
    # Of a container engine's client only: the variables of its environment that name the
    # engine it talks to (DOCKER_HOST=..., DOCKER_CONTEXT=...), read from /proc at its exec;
    # environ_unread when /proc would not tell.
    environ: tuple[str, ...] = ()
    environ_unread: bool = False

    kind = Kind.EXEC


@dataclass(slots=True)
class Exit(Event):
    """The whole thread group is dead; the process is a zombie until its Reap."""

    kind = Kind.EXIT


@dataclass(slots=True)
class Reap(Event):
    """The parent (or init/subreaper) collected the exit status: the pid is free."""

    kind = Kind.REAP


@dataclass(slots=True)
class Oom(Event):
    rss_bytes: int = 0

    kind = Kind.OOM


@dataclass(slots=True)
class ContainerEvent:
    """A container's lifecycle as its engine reports it (create, start, die, destroy); no
    process, so no pid.  Carries no env; its labels (bounded) tell which client could have
    asked for it (the client's --label must be among them).  A container
    already running when a live session began is recorded as the create and start its
    engine sent before the session, dated by the engine's Created and State.StartedAt
    (so `ts` may be earlier than the snapshot they follow)."""

    ts: float
    action: str
    id: str
    name: str = ""
    image: str = ""  # as the client gave it
    compose_project: str = ""  # its com.docker.compose.project label
    exit_code: int = 0  # of a die
    detached: bool = False  # a start with no client attached to its stdio (`docker run -d`), as inspect tells
    labels: tuple[str, ...] = ()  # of a create or start: its labels as NAME=value (none: not told)
    engine: str = ""  # "podman" for Podman's; "" for the Docker engine followed (and older recordings)

    kind = Kind.CONTAINER


@dataclass(slots=True)
class Brief(Event):
    """A process that was forked, exited and was reaped without an exec or a child
    of its own in between, in one record: the kernel holds a fork until the process
    does something else, and most processes of a fork storm do nothing else.  `ts`
    is its fork and `ppid` the parent the kernel gave it, as in Fork.  A process
    already known by then (its fork came on its own) takes this as its exit and reap."""

    exited_at: float = 0.0
    reaped_at: float = 0.0

    kind = Kind.BRIEF
    count = 1  # the processes it tells, as a Tally's count: a class attribute, not a field


@dataclass(slots=True)
class Tally(Event):
    """`count` processes a Brief would tell one by one, children of `ppid` forked in
    the second of `ts` (the first of them), the last exited at `exited_at` and reaped
    at `reaped_at`: the kernel counts a storm's children rather than telling each.
    No one process, so `pid` is 0."""

    exited_at: float = 0.0
    reaped_at: float = 0.0
    count: int = 1

    kind = Kind.TALLY


@dataclass(slots=True)
class ExecBrief(Brief):
    """A Brief whose process exec'd once in between: forked (`ts`), exec'd `argv`
    (`execed_at`; `comm` is the exec's), exited and reaped, in one record, where the
    kernel would otherwise send four.  Most children of an exec storm, and the ones a
    leak is made of before they start to stay."""

    execed_at: float = 0.0
    argv: tuple[str, ...] = ()
    filename: str = ""
    argv_truncated: bool = False

    kind = Kind.EXEC_BRIEF


@dataclass(slots=True)
class ExecTally(Tally):
    """`count` processes an ExecBrief would tell one by one, children of `ppid` forked
    in the second of `ts` that each exec'd `argv` (`comm`, the exec's), exited and were
    reaped: a Tally of a leak's or an exec storm's identical children."""

    argv: tuple[str, ...] = ()
    filename: str = ""
    argv_truncated: bool = False

    kind = Kind.EXEC_TALLY


EVENT_TYPES: dict[Kind, type[Event]] = {
    cls.kind: cls for cls in (Fork, Exec, Exit, Reap, Oom, Brief, Tally, ExecBrief, ExecTally)
}


@dataclass(slots=True)
class PidsSample:
    """The pids controller on a cgroup that groups are in, read when a value changed:
    its tasks (threads count) against the limit that applies to it, and the forks that
    limit refused.  Not a process event: the sampler reads it beside the kernel's stream,
    and it is recorded and replayed like one."""

    ts: float
    cgroup_id: int  # the cgroup of the groups' members
    current: int  # tasks in `path` (pids.current)
    limit: int | None  # pids.max of `path`: the nearest limit from the cgroup up; None: no limit
    refused: int  # forks refused by that limit so far (the `max` count of pids.events)
    path: str = ""  # the cgroup whose limit applies (the cgroup itself without one)

    kind = Kind.PIDS


# Records of what the adapters observe beside the kernel's process events.
OBSERVATION_TYPES: dict[Kind, type] = {Kind.PIDS: PidsSample, Kind.CONTAINER: ContainerEvent}
Observation = PidsSample | ContainerEvent


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
    environ: tuple[str, ...] = ()  # as Exec's
    environ_unread: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """All processes at one instant; recordings start with one so replay == live."""

    ts: float
    processes: tuple[ProcessInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Resync(Snapshot):
    """All processes at one instant after the kernel lost events: the process
    table is made to agree with it (recorded, so replay does the same)."""


def to_record(item: Event | Observation | Snapshot) -> dict[str, Any]:
    """The JSON/msgpack dict of an event, `kind` first."""
    if isinstance(item, Snapshot):
        return {
            "kind": "resync" if isinstance(item, Resync) else "snapshot",
            "ts": item.ts,
            "processes": [
                {**asdict(p), "argv": list(p.argv)} for p in item.processes
            ],
        }
    return _CODECS[type(item)].write(item)


class RecordError(ValueError):
    """A record that claims to be an event (or snapshot) but is not a valid one: the message says which key."""


MAX_ID = 2**64 - 1  # pids, cgroup ids and byte counts are at most u64 on the kernel side
# Seconds since boot, or since 1970 for a boot time (the year 2286): a recording's times past
# it are forged, and would overflow a date or a count of clock ticks further on.
MAX_TIME = 1e10


def _check(ok: bool, value: Any, what: str, expected: str) -> None:
    if not ok:
        raise RecordError(f"{what} must be {expected}, not {value!r:.80}")


def time_value(value: Any, what: str) -> float:
    """A time in seconds since boot from a record (RecordError otherwise)."""
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIME,
           value, what, f"a finite number from 0 to {MAX_TIME:g}")
    return float(value)


def count_value(value: Any, what: str) -> int:
    """A pid, cgroup id or count from a record (RecordError otherwise)."""
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID,
           value, what, f"an integer from 0 to {MAX_ID}")
    return value


def _text(value: Any, what: str) -> str:
    _check(isinstance(value, str), value, what, "a string")
    return value


def _count_or_none(value: Any, what: str) -> int | None:
    return None if value is None else count_value(value, what)


def _flag(value: Any, what: str) -> bool:
    _check(isinstance(value, bool), value, what, "true or false")
    return value


def _words(value: Any, what: str) -> tuple[str, ...]:
    _check(isinstance(value, (list, tuple)) and all(isinstance(word, str) for word in value), value, what,
           "a list of strings")
    return tuple(value)


# How a record's value is checked, by the type its dataclass field is annotated with.
_CHECKS = {"float": time_value, "int": count_value, "int | None": _count_or_none, "str": _text, "bool": _flag,
           "tuple[str, ...]": _words}


def _fields_of(cls: type, record: Any, what: str) -> dict[str, Any]:
    """`cls`'s fields from `record`, each checked against its type; other keys are ignored."""
    if not isinstance(record, dict):
        raise RecordError(f"{what} must be a map, not {type(record).__name__}")
    values = {}
    for f in fields(cls):
        if f.name in record:
            values[f.name] = _CHECKS[f.type](record[f.name], f"{what}: '{f.name}'")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise RecordError(f"{what} lacks '{f.name}'")
    return values


# What a value of the exact type a decoder produces must also satisfy to be taken as it is;
# anything else goes to its check in _CHECKS, which converts it or raises the RecordError.
_ACCEPTED_AS_IS = {
    "float": "type({v}) is float and 0.0 <= {v} <= _MAX_TIME",
    "int": "type({v}) is int and 0 <= {v} <= _MAX_ID",
    "str": "type({v}) is str",
    "bool": "{v} is True or {v} is False",
}


# Format 2's record of an event or observation is an array: its kind's code, then its
# class's fields in declaration order (`dataclasses.fields`: the one order, written and read
# from it).  Codes are never renumbered nor reused: a kind added takes the next one.
ARRAY_CODES: dict[Kind, int] = {
    Kind.FORK: 1, Kind.EXEC: 2, Kind.EXIT: 3, Kind.REAP: 4, Kind.OOM: 5, Kind.BRIEF: 6, Kind.TALLY: 7,
    Kind.EXEC_BRIEF: 8, Kind.PIDS: 9, Kind.CONTAINER: 10, Kind.EXEC_TALLY: 11,
}


class _Codec:
    """An event class's record writers and readers (map and array), compiled once from its
    fields (as dataclasses compiles `__init__`): a replay reads millions of records, and
    walking `dataclasses.fields` for each cost more than the lineage they feed."""

    def __init__(self, cls: type, read_pidless: Callable[..., Event] | None = None) -> None:
        """`read_pidless`: the reader of a map of this kind without a pid but with a
        count (a brief's, as recordings made before tallies had a kind of their own wrote a
        tally)."""
        names = [f.name for f in fields(cls)]
        namespace: dict[str, Any] = {
            "_cls": cls, "_kind": cls.kind.value, "_code": ARRAY_CODES[cls.kind], "_ABSENT": _ABSENT,
            "_MAX_TIME": MAX_TIME, "_MAX_ID": MAX_ID, "RecordError": RecordError, "_what": f"{cls.kind.value} event",
            "_read_pidless": read_pidless, "_build": cls, "_new": object.__new__, "_names": names, "_islice": islice,
        }
        written = []
        # A record as written has every field, of its exact type: one test of them all and
        # no call per field.  Anything else is read field by field (defaults, conversions,
        # the error naming the field).
        fast = ["def read(record, what=_what):", "    try:",
                *(f"        {name} = record[{name!r}]" for name in names),
                "    except KeyError:", "        return read_each(record, what)"]
        # An array of exactly this class's fields: unpacked at once (a longer or shorter one
        # raises ValueError, and is read field by field).
        fast_array = ["def read_array(record, what=_what):", "    try:",
                      f"        code, {', '.join(names)}, = record",
                      "    except ValueError:", "        return read_array_each(record, what)"]
        accepted_all = []
        converted = []
        read = ["def read_each(record, what):", "    get = record.get"]
        # Anything else is read as the map of the fields it has, by the map's own checks: a
        # missing trailing field is a missing key (its default, or the error), items past the
        # fields are unknown keys (ignored), and each value is checked as a map's is.
        read_array = ["def read_array_each(record, what):",
                      "    if type(record[0]) is not int:",
                      "        raise RecordError(f\"{what}: its kind's code must be an integer, not {record[0]!r:.80}\")",
                      "    return read_each(dict(zip(_names, _islice(record, 1, None))), what)"]
        for f in fields(cls):
            name = f.name
            value = f"item.{name}"
            written.append(f"{name!r}: {f'list({value})' if f.type.startswith('tuple') else value}")
            if f.default is not MISSING:
                namespace[f"_default_{name}"] = f.default
                absent = f"{name} = _default_{name}"
            elif f.default_factory is not MISSING:
                namespace[f"_default_{name}"] = f.default_factory
                absent = f"{name} = _default_{name}()"
            else:
                absent = f"raise RecordError(what + \" lacks '{name}'\")"
            namespace[f"_check_{name}"] = _CHECKS[f.type]
            accepted = _ACCEPTED_AS_IS.get(f.type)
            checked = [f"    elif not ({accepted.format(v=name)}):" if accepted else "    else:",
                       f"        {name} = _check_{name}({name}, what + \": '{name}'\")"]
            read += [f"    {name} = get({name!r}, _ABSENT)", f"    if {name} is _ABSENT:", f"        {absent}", *checked]
            if accepted:
                accepted_all.append(f"({accepted.format(v=name)})")
            else:  # a list becomes a tuple
                converted.append(f"    {name} = _check_{name}({name}, what + \": '{name}'\")")
        build = f"    return _build({', '.join(names)})"
        # The item's slots set here rather than by its __init__: a call less, a third of
        # what building it cost (the class has no __post_init__, nothing __init__ would add).
        assigned = ["    item = _new(_cls)", *(f"    item.{name} = {name}" for name in names), "    return item"]
        fast += [*converted, f"    if not ({' and '.join(accepted_all)}):", "        return read_each(record, what)"]
        if read_pidless is not None:
            pidless = ["    if not pid and 'count' in record:", "        return _read_pidless(record, what)"]
            fast += pidless
            read += pidless
        fast += assigned
        # The code was found equal to this kind's: it must be an int as well (True and 1.0 equal 1).
        fast_array += [*converted, f"    if not (type(code) is int and {' and '.join(accepted_all)}):",
                       "        return read_array_each(record, what)",
                       *assigned]
        read.append(build)
        source = "\n".join([f"def write(item):\n    return {{'kind': _kind, {', '.join(written)}}}",
                            f"def write_array(item):\n    return (_code, {', '.join(f'item.{name}' for name in names)})",
                            *read, *fast, *read_array, *fast_array])
        exec(compile(source, f"<codec of {cls.__name__}>", "exec"), namespace)
        self.write: Callable[[Event], dict[str, Any]] = namespace["write"]
        self.read: Callable[..., Event] = namespace["read"]
        self.write_array: Callable[[Event], tuple[Any, ...]] = namespace["write_array"]
        self.read_array: Callable[..., Event] = namespace["read_array"]


def _changer(cls: type) -> Callable[..., Any]:
    """`dataclasses.replace` for the slots dataclass `cls`, compiled: that one looks up the
    class's fields and checks each change by name at every call, twice the cost."""
    names = [f.name for f in fields(cls)]
    namespace: dict[str, Any] = {"_cls": cls, "_new": object.__new__, "_SAME": _ABSENT}
    keywords = ", ".join(f"{name}=_SAME" for name in names)
    # The copy's slots set here, as a codec's reader sets them: no __init__ call.
    assigned = "".join(f"    changed.{name} = item.{name} if {name} is _SAME else {name}\n" for name in names)
    exec(compile(f"def change(item, *, {keywords}):\n    changed = _new(_cls)\n{assigned}    return changed",
                 f"<changer of {cls.__name__}>", "exec"), namespace)
    return namespace["change"]


def replaced(item: Any, **changes: Any) -> Any:
    """An event or observation with some fields changed (as `dataclasses.replace`): the
    probe completes every record it decodes."""
    return _CHANGERS[type(item)](item, **changes)


_ABSENT = object()
_CHANGERS: dict[type, Callable[..., Any]] = {cls: _changer(cls) for cls in (*EVENT_TYPES.values(), *OBSERVATION_TYPES.values())}
_CODECS: dict[type, _Codec] = {cls: _Codec(cls) for cls in (*EVENT_TYPES.values(), *OBSERVATION_TYPES.values())}


# An older recording's tally is a brief record without a pid, with a count (written then
# for every brief): the brief's reader hands it to the tally's.
_CODECS[Brief] = _Codec(Brief, _CODECS[Tally].read)
# The reader of each event's and observation's record kind: given a map, the item or a
# RecordError.  A replay hands each record to its kind's reader itself: from_record's
# checks (a map? which kind?) and its codec's method were 6% of a replayed event.
RECORD_READERS: dict[str, Callable[[dict[str, Any]], Event | Observation]] = {
    cls.kind.value: codec.read for cls, codec in _CODECS.items()
}
# The same for format 2's arrays, by their kind's code (their first item).
ARRAY_READERS: dict[int, Callable[[list[Any]], Event | Observation]] = {
    ARRAY_CODES[cls.kind]: codec.read_array for cls, codec in _CODECS.items()
}


def to_array(item: Event | Observation) -> tuple[Any, ...]:
    """An event's or observation's record in a format 2 recording: its kind's code
    (ARRAY_CODES), then its fields in declaration order."""
    return _CODECS[type(item)].write_array(item)


def from_record(record: dict[str, Any] | list[Any]) -> Event | Observation | Snapshot | None:
    """Inverse of `to_record` and `to_array`; None for records that are not events, observations or snapshots
    (ready, stats, alerts), and for an array of a kind code this version does not know (as for a map of
    an unknown kind).  Raises RecordError for an event or snapshot with a missing key or a value of the
    wrong type, naming it."""
    if type(record) is list:
        if not record or type(record[0]) is not int:
            raise RecordError(f"an array record must begin with its kind's code (an integer), not {record[:1]!r:.80}")
        read_array = ARRAY_READERS.get(record[0])
        return None if read_array is None else read_array(record)
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a map or an array, not {type(record).__name__}")
    kind = record.get("kind")
    read = RECORD_READERS.get(kind) if type(kind) is str else None
    if read is not None:
        return read(record)
    if kind in ("snapshot", "resync"):
        processes = record.get("processes", [])
        if not isinstance(processes, list):
            raise RecordError(f"{kind}: 'processes' must be a list, not {type(processes).__name__}")
        values = _fields_of(Snapshot, {k: v for k, v in record.items() if k != "processes"}, kind)
        return (Resync if kind == "resync" else Snapshot)(
            ts=values["ts"],
            processes=tuple(
                ProcessInfo(**_fields_of(ProcessInfo, p, f"snapshot process {i}")) for i, p in enumerate(processes)
            ),
        )
    return None


def replay(records: Iterable[dict[str, Any]]) -> Iterator[Event | Observation | Snapshot]:
    """Events (and snapshots) of a recorded stream, skipping bookkeeping lines."""
    for record in records:
        item = from_record(record)
        if item is not None:
            yield item
