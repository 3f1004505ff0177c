"""Synthetic event streams for the pure layers: write a process history as calls,
get the events (and snapshots) the probe would have produced."""

from __future__ import annotations

from spawnwatch.events import (
    Brief, ContainerEvent, Event, Exec, ExecBrief, ExecTally, Exit, Fork, Observation, Oom, PidsSample, ProcessInfo,
    Reap, Snapshot, Tally,
)

BOOT_OFFSET = 1000.0  # stream time 0 in seconds since boot


class Stream:
    def __init__(self, t: float = 0.0, cgroup_id: int = 1) -> None:
        self.t = t
        self.cgroup_id = cgroup_id
        self.events: list[Event | Observation] = []
        self._next_pid = 1000
        self._parent: dict[int, int] = {}
        self._comm: dict[int, str] = {}

    @property
    def ts(self) -> float:
        return BOOT_OFFSET + self.t

    def at(self, t: float) -> "Stream":
        assert t >= self.t, "streams go forward; use reorder tests for the rest"
        self.t = t
        return self

    def new_pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def fork(self, ppid: int, pid: int | None = None, cgroup_id: int | None = None) -> int:
        pid = self.new_pid() if pid is None else pid
        self._parent[pid] = ppid
        self._comm[pid] = self._comm.get(ppid, "parent")
        self.events.append(Fork(self.ts, pid, ppid, self._comm[pid], cgroup_id or self.cgroup_id))
        return pid

    def exec(self, pid: int, *argv: str) -> int:
        self._comm[pid] = argv[0].rsplit("/", 1)[-1][:15]
        self.events.append(
            Exec(self.ts, pid, self._parent.get(pid, 0), self._comm[pid], self.cgroup_id, argv=tuple(argv))
        )
        return pid

    def spawn(self, ppid: int, *argv: str, pid: int | None = None) -> int:
        return self.exec(self.fork(ppid, pid), *argv)

    def exit(self, pid: int) -> None:
        self.events.append(Exit(self.ts, pid, self._parent.get(pid, 0), self._comm.get(pid, ""), self.cgroup_id))

    def reap(self, pid: int) -> None:
        self.events.append(Reap(self.ts, pid, self._parent.get(pid, 0), self._comm.get(pid, ""), self.cgroup_id))

    def end(self, pid: int) -> None:
        """Exit, and reaped by its parent at once (a healthy ending)."""
        self.exit(pid)
        self.reap(pid)

    def oom(self, pid: int, rss_bytes: int = 1 << 30) -> None:
        self.events.append(Oom(self.ts, pid, self._parent.get(pid, 0), self._comm.get(pid, ""), self.cgroup_id, rss_bytes))

    def pids(self, current: int, limit: int | None, refused: int = 0, path: str = "/docker/leaky",
             cgroup_id: int | None = None) -> None:
        """What the pids sampler read of the stream's cgroup (or `cgroup_id`'s)."""
        self.events.append(PidsSample(self.ts, cgroup_id or self.cgroup_id, current, limit, refused, path))

    def container(self, action: str, container_id: str, **fields) -> None:
        """An event of the container engine's stream (name, image, compose_project, detached, ...)."""
        self.events.append(ContainerEvent(self.ts, action, container_id, **fields))

    def reparent(self, pid: int, ppid: int) -> None:
        """The stream's own idea of parents (for later events' ppid field)."""
        self._parent[pid] = ppid


def info(pid: int, ppid: int, start: float, *argv: str, zombie: bool = False, cgroup_id: int = 1) -> ProcessInfo:
    comm = argv[0].rsplit("/", 1)[-1][:15] if argv else "?"
    return ProcessInfo(pid=pid, ppid=ppid, start=BOOT_OFFSET + start, comm=comm, argv=tuple(argv),
                       cgroup_id=cgroup_id, zombie=zombie)


def snapshot(t: float, *processes: ProcessInfo) -> Snapshot:
    return Snapshot(ts=BOOT_OFFSET + t, processes=tuple(processes))


# The processes every synthetic host has.
INIT = info(1, 0, 0.0, "/sbin/init")
SHELL = info(100, 1, 1.0, "bash")
SUPERVISOR = info(200, 100, 2.0, "python3", "supervisor.py")


def host(t: float = 5.0, *more: ProcessInfo) -> Snapshot:
    return snapshot(t, INIT, SHELL, SUPERVISOR, *more)



def briefed(events: list, hold_s: float = 0.25, execs: bool = False) -> list:
    """`events` as the kernel side sends them: a process forked, exited and reaped within
    `hold_s` of its fork, with no exec, OOM or child in between, is one Brief where its
    reap was; with `execs` (as `watch` has it), one that exec'd once in between is one
    ExecBrief; every other process keeps its own events."""
    life: dict[int, list[int]] = {}  # pid -> indexes of its fork, exec if any, exit, reap
    spoiled: set[int] = set()  # indexes of forks the kernel would have sent on their own
    execed: set[int] = set()  # indexes of forks whose process exec'd once so far
    compacted: dict[int, list[int]] = {}  # index of a reap -> its process's fork, (exec,) exit, reap
    for index, event in enumerate(events):
        if isinstance(event, Fork):
            if event.ppid in life:
                spoiled.add(life[event.ppid][0])
            life[event.pid] = [index]
        elif event.pid not in life:
            continue
        elif isinstance(event, Exec) and execs and len(life[event.pid]) == 1 and life[event.pid][0] not in spoiled:
            execed.add(life[event.pid][0])  # its first exec: held with its fork
            life[event.pid].append(index)
        elif isinstance(event, (Exec, Oom)):
            spoiled.add(life[event.pid][0])
        elif isinstance(event, Exit):
            life[event.pid].append(index)
        elif isinstance(event, Reap):
            indexes = life.pop(event.pid) + [index]
            fork = events[indexes[0]]
            whole = 4 if indexes[0] in execed else 3
            if len(indexes) == whole and indexes[0] not in spoiled and event.ts - fork.ts < hold_s:
                compacted[index] = indexes
    dropped = {i for indexes in compacted.values() for i in indexes[:-1]}
    out = []
    for index, event in enumerate(events):
        if index in compacted:
            fork, *exec_, exit_ = (events[i] for i in compacted[index][:-1])
            if exec_:
                (exec_,) = exec_
                event = ExecBrief(fork.ts, fork.pid, fork.ppid, exec_.comm, fork.cgroup_id, exited_at=exit_.ts,
                                  reaped_at=event.ts, execed_at=exec_.ts, argv=exec_.argv, filename=exec_.filename,
                                  argv_truncated=exec_.argv_truncated)
            else:
                event = Brief(fork.ts, fork.pid, fork.ppid, fork.comm, fork.cgroup_id,
                              exited_at=exit_.ts, reaped_at=event.ts)
        if index not in dropped:
            out.append(event)
    return out


def tallied(events: list, hold_s: float = 0.25, execs: bool = False) -> list:
    """`events` as the kernel side sends them to `watch`: the Briefs of `briefed` reaped
    within `hold_s` / 2 of their fork are counted per spawner, second of fork, cgroup and
    comm, and each count comes as one Tally once its second has
    been over for `hold_s`, as the probe's sweep tells it; with `execs`, so are the
    ExecBriefs of a command line one came whole for before (per command line too, in an
    ExecTally); every other event as it was."""
    out: list = []
    counting: dict[tuple, Tally] = {}
    told: set[tuple] = set()  # command lines an ExecBrief brought whole

    def tell_closed(now: float) -> None:
        for key in [key for key in counting if key[1] + 1 + hold_s <= now]:
            out.append(counting.pop(key))

    for event in briefed(events, hold_s, execs):
        brief = isinstance(event, Brief)
        tell_closed(event.reaped_at if brief else event.ts)
        command_line = event.argv if isinstance(event, ExecBrief) else None
        if (not brief or event.reaped_at - event.ts >= hold_s / 2
                or (command_line is not None and command_line not in told)):
            if command_line is not None:
                told.add(command_line)
            out.append(event)
            continue
        key = (event.ppid, int(event.ts), event.cgroup_id, event.comm, command_line)
        tally = counting.get(key)
        first, exited, reaped, count = (event.ts, event.exited_at, event.reaped_at, 1) if tally is None else (
            min(tally.ts, event.ts), max(tally.exited_at, event.exited_at), max(tally.reaped_at, event.reaped_at),
            tally.count + 1)
        if command_line is None:
            counting[key] = Tally(first, 0, event.ppid, event.comm, event.cgroup_id, exited, reaped, count)
        else:
            counting[key] = ExecTally(first, 0, event.ppid, event.comm, event.cgroup_id, exited, reaped, count,
                                      command_line, event.filename, event.argv_truncated)
    return out + sorted(counting.values(), key=lambda tally: tally.ts)