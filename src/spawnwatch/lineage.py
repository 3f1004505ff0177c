"""The process table: who spawned whom, kept current by events.

A process is identified by (pid, start time in clock ticks), so a reused pid is
a new process, never a continuation of the old one.  At most one unreaped
process holds a pid; a fork of a pid still held means its exit and reap were
missed: the old process is closed and the miss counted.

Each process keeps two parents: `parent`, the current one (the kernel reparents
the children of an exiting process to the nearest subreaper or init), and
`spawner`, the process that forked it, which never changes.  Leaks are charged
to spawners.

A Brief is a process the kernel saw forked, exited and reaped with nothing in
between: it never enters the table; its spawner hears of it in one call.  When
its fork arrived on its own before (it lived long enough for that), the Brief
is that process's exit and reap.  A Tally, many such processes of one spawner
counted, reaches the spawner the same way.

Exited processes are zombies until their Reap.  Reaped processes stay for
`retention_s`, longer while processes they spawned are still in the table (an
orphan's charge is found through its spawner chain), and the table never grows
past `max_processes`: reaped entries are evicted first, then the least recently
active; every eviction is counted and unlinked from its relatives.

Pure: events in, state out; /proc is reached only through the injected
`reparent_hint`.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import AbstractSet, Callable, Iterator, Protocol

from spawnwatch.bounded import Memo, weigh_words
from spawnwatch.clock import SAME_START_S, same_start, start_tick
from spawnwatch.events import Brief, Event, Exec, ExecBrief, ExecTally, Exit, Fork, Oom, Reap, Snapshot, Tally

INIT_PID = 1
COMM_CHARS = 15  # of a program name the kernel keeps (/proc readers may show more)

MAX_REAPED_LOOKED_AT = 4096  # for the spawner of a Brief that outlived it (see Lineage._reaped_holder_at)
# Signatures kept by command line: an exec storm, or a leak's children, signs the same
# argv again and again.  Bounded in entries and in what their keys weigh (weigh_words):
# usual command lines fill the entries first, hostile ones (distinct, 4 KiB of two-letter
# words, ~90 KB each) the weight.
SIGNATURES_KEPT = 1024
SIGNED_ARGVS_WEIGHT = 1 << 20

Key = tuple[int, int]  # (pid, start in ticks)
# Shared by every process without children (nearly all of them in a fork storm): two empty
# sets per process were a third of the table's memory.  Only this module changes the sets.
NO_PROCESSES: frozenset[Process] = frozenset()


@dataclass(frozen=True, slots=True)
class LineageSettings:
    max_processes: int = 65536
    retention_s: float = 30.0


@dataclass(eq=False, slots=True)
class Process:
    pid: int
    start: float  # seconds since boot
    ppid: int  # current parent pid (also when the parent itself is unknown)
    comm: str
    argv: tuple[str, ...]
    signature: str
    cgroup_id: int
    parent: Process | None = None  # current parent, None when unknown
    spawner: Process | None = None  # forked it; never changes (None when unknown or evicted)
    exited_at: float | None = None
    reaped_at: float | None = None
    children: AbstractSet[Process] = NO_PROCESSES  # unreaped processes whose parent this is
    spawned: AbstractSet[Process] = NO_PROCESSES  # processes in the table that this one spawned
    seeded: bool = False  # came from the /proc snapshot (start, parent and argv from /proc)
    execed: bool = False  # ran a program of its own since its fork (unknown, so False, when seeded)
    # (when, argv, signature): its last exec that changed its signature, and what it ran until
    # then.  A tally of its children comes a second or two after their forks, maybe after it.
    ran_before: tuple[float, tuple[str, ...], str] | None = None
    # A container engine's client: the variables of its environment that name its engine
    # (events.Exec.environ); None when they could not be read.
    environ: tuple[str, ...] | None = ()

    @property
    def key(self) -> Key:
        return (self.pid, start_tick(self.start))

    @property
    def alive(self) -> bool:
        return self.exited_at is None

    @property
    def zombie(self) -> bool:
        return self.exited_at is not None and self.reaped_at is None

    def __repr__(self) -> str:
        state = "live" if self.alive else "zombie" if self.zombie else "reaped"
        return f"<Process {self.pid}@{self.start:.2f} {state} {self.signature!r}>"


class Listener(Protocol):
    """What the detector hears; every change of membership, and every OOM kill, goes through one of these."""

    def joined(self, proc: Process) -> None: ...
    def spawned_briefly(self, spawner: Process, brief: Brief | Tally, argv: tuple[str, ...], signature: str) -> None: ...
    def changed(self, proc: Process, old_signature: str) -> None: ...
    def exited(self, proc: Process) -> None: ...
    def reaped(self, proc: Process) -> None: ...
    def dropped(self, proc: Process) -> None: ...
    def oom(self, proc: Process, ts: float) -> None: ...


LISTENER_CALLS = ("joined", "spawned_briefly", "changed", "exited", "reaped", "dropped", "oom")


def _nothing(*_args: object) -> None:
    return None


class Listeners:
    """Several listeners heard as one, in order.  A listener defines only the calls it
    needs: each call goes straight to the listeners that define it (it is made for
    every event of a fork storm, so no call is made to a method that does nothing)."""

    def __init__(self, *listeners: object) -> None:
        for name in LISTENER_CALLS:
            calls = tuple(getattr(listener, name) for listener in listeners if hasattr(listener, name))
            setattr(self, name, calls[0] if len(calls) == 1 else _in_turn(calls) if calls else _nothing)


def _in_turn(calls: tuple[Callable[..., None], ...]) -> Callable[..., None]:
    def call(*args: object) -> None:
        for each in calls:
            each(*args)
    return call


Signer = Callable[[tuple[str, ...], str], str]
ReparentHint = Callable[[int], "int | None"]


class Lineage:
    def __init__(
        self,
        signer: Signer,
        settings: LineageSettings = LineageSettings(),
        reparent_hint: ReparentHint | None = None,
        listener: Listener | None = None,
    ) -> None:
        self._signatures: Memo[tuple[tuple[str, ...], str], str] = Memo(
            lambda key: signer(*key), SIGNATURES_KEPT, SIGNED_ARGVS_WEIGHT, _argv_weight)
        self.settings = settings
        # Who adopts an orphan: the kernel's choice (nearest subreaper, else init) is not in
        # the events; the caller can read it from /proc.  Without a hint: init.
        self._reparent_hint = reparent_hint or (lambda pid: None)
        self.listener: Listener = listener or Listeners()  # type: ignore[assignment]
        self._by_pid: dict[int, Process] = {}  # unreaped processes
        self._recent: OrderedDict[Process, None] = OrderedDict()  # every entry, least recently active first
        # Reaped, in reap order, awaiting expiry: a deque (8 bytes an entry, where an ordered
        # dict takes 144 at the table's cap) that _drop leaves to be skipped, see _oldest_reaped.
        self._reaped: deque[Process] = deque()
        self._held: dict[Process, None] = {}  # expired but still spawner of an entry
        # Orphans adopted by init for now: /proc still named the dying parent when
        # its exit arrived (the kernel reparents after the exit tracepoint).  Asked
        # again at every expire() until /proc names the real adopter.
        self._adoption_pending: dict[Process, int] = {}
        self.counts: Counter[str] = Counter()  # missed_exits, evicted, unknown_pid, stale, missing_parent

    # -- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._recent)

    def get(self, pid: int) -> Process | None:
        """The unreaped process holding `pid`."""
        return self._by_pid.get(pid)

    def processes(self) -> Iterator[Process]:
        return iter(list(self._recent))

    def unreaped(self) -> Iterator[Process]:
        return iter(list(self._by_pid.values()))

    # -- seeding -------------------------------------------------------------------------

    def seed(self, snapshot: Snapshot) -> list[Process]:
        """Fill the table from /proc; each process's current parent is taken as its spawner.
        The processes it added (those whose pid the table did not hold), in start order."""
        created = []
        for info in sorted(snapshot.processes, key=lambda p: p.start):
            if info.pid in self._by_pid:
                continue
            proc = Process(
                pid=info.pid,
                start=info.start,
                ppid=info.ppid,
                comm=info.comm,
                argv=tuple(info.argv),
                signature=self._signature(tuple(info.argv), info.comm),
                cgroup_id=info.cgroup_id,
                exited_at=snapshot.ts if info.zombie else None,
                seeded=True,
                environ=None if info.environ_unread else info.environ,
            )
            self._by_pid[proc.pid] = proc
            created.append(proc)
        for proc in created:  # linked after all exist: a reparented child may be older than its parent
            parent = self._by_pid.get(proc.ppid)
            if parent is not None and parent is not proc:
                self._link(proc, parent, spawner=parent)
        for proc in created:
            self._add(proc)
        return created

    # -- events --------------------------------------------------------------------------

    def apply(self, event: Event) -> Process | None:
        """Update the table; the process the event is about (None when it could not be placed)."""
        kind = type(event)
        if kind is Brief:  # nearly every record of a fork storm
            if event.pid in self._by_pid:  # seldom: nearly every Brief's pid is free in the table
                return self._brief_of_held_pid(event)
            return self._spawned_briefly(event)
        if kind is Fork:
            return self._fork(event)
        if kind is Tally:
            return self._spawned_briefly(event)
        if kind is ExecBrief:  # nearly every record of an exec storm
            if event.pid in self._by_pid:
                return self._brief_of_held_pid(event)
            return self._ran_briefly(event)
        if kind is ExecTally:
            return self._ran_briefly(event)
        proc = self._by_pid.get(event.pid)
        if proc is not None and event.ts < proc.start - SAME_START_S:
            self.counts["stale"] += 1  # about an earlier holder of this pid
            return None
        if kind is Exec:
            return self._exec(event, proc)
        if proc is None:
            self.counts["unknown_pid"] += 1
            return None
        self._touch(proc)
        if kind is Exit:
            self._exit(proc, event.ts)
        elif kind is Reap:
            self._reap(proc, event.ts)
        elif kind is Oom:
            self.listener.oom(proc, event.ts)
        return proc

    def _birth(self, pid: int, ts: float) -> tuple[Process | None, bool]:
        """For a process of `pid` born at `ts`: the table's entry when it is that process
        already, and whether the birth is stale (older than the pid's holder).  A holder
        born earlier, still unreaped, is closed: its exit and reap were missed."""
        held = self._by_pid.get(pid)
        if held is None or same_start(held.start, ts):
            return held, False
        if ts < held.start:
            self.counts["stale"] += 1
            return None, True
        self.counts["missed_exits"] += 1
        self._close(held, ts)
        return None, False

    def _fork(self, event: Fork) -> Process | None:
        known, stale = self._birth(event.pid, event.ts)
        if known is not None or stale:
            return known  # already known (from the snapshot, or its exec came first)
        parent = self._by_pid.get(event.ppid)
        if parent is None:
            self.counts["missing_parent"] += 1
        else:
            self._touch(parent)
        proc = Process(
            pid=event.pid,
            start=event.ts,
            ppid=event.ppid,
            comm=event.comm,
            # Until its exec a child runs its parent's program.
            argv=parent.argv if parent else (),
            signature=parent.signature if parent else self._signature((), event.comm),
            cgroup_id=event.cgroup_id,
        )
        self._by_pid[proc.pid] = proc
        if parent is not None:
            self._link(proc, parent, spawner=parent)
        self._add(proc)
        return proc

    def _brief_of_held_pid(self, event: Brief) -> Process | None:
        known, stale = self._birth(event.pid, event.ts)
        if stale:
            return None
        if known is not None:
            self._touch(known)  # its fork came on its own while it lived: this is its end
            self._exit(known, event.exited_at)
            self._reap(known, event.reaped_at)
            return known
        return self._spawned_briefly(event)

    def _spawner_of_brief(self, event: Brief | Tally) -> Process | None:
        """The spawner of a short life the kernel told whole (touched), None when unknown."""
        spawner = self._by_pid.get(event.ppid)
        if spawner is None or spawner.start - SAME_START_S > event.ts:
            spawner = self._reaped_holder_at(event.ppid, event.ts)
            if spawner is None:
                self.counts["missing_parent"] += 1
                return None
        try:  # _touch, inlined: this runs for nearly every record of a storm
            self._recent.move_to_end(spawner)
        except KeyError:  # evicted
            pass
        return spawner

    def _spawned_briefly(self, event: Brief | Tally) -> None:
        spawner = self._spawner_of_brief(event)
        if spawner is None:
            return None
        ran_before = spawner.ran_before
        if ran_before is not None and event.ts < ran_before[0]:
            _exec_ts, argv, signature = ran_before  # forked before that exec: under the program it ran then
            self.listener.spawned_briefly(spawner, event, argv, signature)
        else:
            self.listener.spawned_briefly(spawner, event, spawner.argv, spawner.signature)
        return None

    def _signature(self, argv: tuple[str, ...], comm: str) -> str:
        return self._signatures((argv, comm))

    @property
    def signatures_evicted(self) -> int:
        """Command lines whose signature was let go past the limits."""
        return self._signatures.evicted

    def _ran_briefly(self, event: ExecBrief | ExecTally) -> None:
        """Short lives that exec'd: members of the group of the program they ran, as their
        forks, execs, exits and reaps would have made them."""
        spawner = self._spawner_of_brief(event)
        if spawner is not None:
            self.listener.spawned_briefly(spawner, event, event.argv, self._signature(event.argv, event.comm))
        return None

    def _reaped_holder_at(self, pid: int, ts: float) -> Process | None:
        """The process that held `pid` at `ts` and was reaped since, among the last
        MAX_REAPED_LOOKED_AT reaped: a Brief comes at most a poll and the kernel's hold
        after its fork, and its spawner is nearly always alive."""
        for proc in itertools.islice(reversed(self._reaped), MAX_REAPED_LOOKED_AT):
            if proc.reaped_at < ts:
                break
            if proc.pid == pid and proc.start - SAME_START_S <= ts <= proc.exited_at and proc in self._recent:
                return proc
        return None

    def _exec(self, event: Exec, proc: Process | None) -> Process | None:
        if proc is None:
            # Its fork was missed or is still on its way: place it by the exec's parent.
            self.counts["unknown_pid"] += 1
            proc = self._fork(Fork(ts=event.ts, pid=event.pid, ppid=event.ppid, comm=event.comm, cgroup_id=event.cgroup_id))
            if proc is None:
                return None
        if not proc.alive:
            self.counts["stale"] += 1
            return None
        self._touch(proc)
        old, old_argv = proc.signature, proc.argv
        proc.execed = True
        proc.argv = tuple(event.argv)
        proc.comm = event.comm
        proc.environ = None if event.environ_unread else event.environ
        proc.signature = self._signature(proc.argv, event.comm)
        if proc.signature != old:
            proc.ran_before = (event.ts, old_argv, old)
            self.listener.changed(proc, old)
        return proc

    def _exit(self, proc: Process, ts: float) -> None:
        if not proc.alive:
            return
        proc.exited_at = ts
        if proc.children:
            for child in list(proc.children):
                self._reparent(child)
        self.listener.exited(proc)

    def _reap(self, proc: Process, ts: float) -> None:
        if proc.alive:
            self._exit(proc, ts)  # its exit was lost; the reap proves it
        proc.reaped_at = ts
        del self._by_pid[proc.pid]
        if proc.parent is not None:
            proc.parent.children = _without(proc.parent.children, proc)
        self._reaped.append(proc)
        if len(self._reaped) > 2 * self.settings.max_processes:
            self._reaped = deque(p for p in self._reaped if p in self._recent)  # without the dropped
        self.listener.reaped(proc)

    def _close(self, proc: Process, ts: float) -> None:
        """A process whose end we never saw: exit and reap it now."""
        self._exit(proc, ts)
        self._reap(proc, ts)

    def _reparent(self, child: Process) -> None:
        old = child.parent
        hinted = self._reparent_hint(child.pid)
        if hinted is None or hinted == old.pid:
            self._adoption_pending[child] = old.pid
            self._adopt(child, INIT_PID)
        else:
            self._adopt(child, hinted)

    def _adopt(self, child: Process, new_ppid: int) -> None:
        if child.parent is not None:
            child.parent.children = _without(child.parent.children, child)
        new = self._by_pid.get(new_ppid)
        child.ppid = new_ppid
        child.parent = new if new is not child else None
        if child.parent is not None:
            child.parent.children = _with(child.parent.children, child)

    def _settle_adoptions(self) -> None:
        for child, dead_parent in list(self._adoption_pending.items()):
            if not child.alive or self._by_pid.get(child.pid) is not child:
                del self._adoption_pending[child]
                continue
            hinted = self._reparent_hint(child.pid)
            if hinted is None:
                del self._adoption_pending[child]  # gone from /proc: init stands
            elif hinted != dead_parent:
                del self._adoption_pending[child]
                if hinted != child.ppid:
                    self._adopt(child, hinted)

    # -- bookkeeping ---------------------------------------------------------------------

    def _link(self, proc: Process, parent: Process, spawner: Process | None) -> None:
        proc.parent = parent
        parent.children = _with(parent.children, proc)
        proc.spawner = spawner
        if spawner is not None:
            spawner.spawned = _with(spawner.spawned, proc)

    def _add(self, proc: Process) -> None:
        self._recent[proc] = None
        self.listener.joined(proc)
        while len(self._recent) > self.settings.max_processes:
            self._evict()

    def _touch(self, proc: Process) -> None:
        try:
            self._recent.move_to_end(proc)
        except KeyError:  # evicted
            pass

    def _oldest_reaped(self) -> Process | None:
        """The reaped entry awaiting expiry the longest (dropped ones are skipped here)."""
        reaped, recent = self._reaped, self._recent
        while reaped and reaped[0] not in recent:
            reaped.popleft()
        return reaped[0] if reaped else None

    def _evict(self) -> None:
        victim = self._oldest_reaped() or next(iter(self._held or self._recent))
        self.counts["evicted"] += 1
        self._drop(victim)

    def expire(self, now: float) -> None:
        """Forget reaped processes older than the retention period that nothing refers
        to, and settle adoptions /proc could not tell at the parent's exit."""
        self._settle_adoptions()
        deadline = now - self.settings.retention_s
        while (proc := self._oldest_reaped()) is not None:
            if proc.reaped_at > deadline:
                break
            self._reaped.popleft()
            if proc.spawned:
                self._held[proc] = None  # dropped with its last spawned entry
            else:
                self._drop(proc)

    def _drop(self, proc: Process) -> None:
        self._adoption_pending.pop(proc, None)
        self._recent.pop(proc, None)
        self._held.pop(proc, None)
        if self._by_pid.get(proc.pid) is proc:
            del self._by_pid[proc.pid]
        if proc.parent is not None:
            proc.parent.children = _without(proc.parent.children, proc)
        for child in proc.children:
            child.parent = None
        for child in proc.spawned:
            child.spawner = None
        proc.children = NO_PROCESSES
        proc.spawned = NO_PROCESSES
        self.listener.dropped(proc)
        spawner = proc.spawner
        if spawner is not None:
            spawner.spawned = _without(spawner.spawned, proc)
            if not spawner.spawned and spawner in self._held:
                self._drop(spawner)

    # -- resync after lost events --------------------------------------------------------

    def resync(self, snapshot: Snapshot) -> list[Process]:
        """Make the table agree with /proc after the kernel lost events.

        Processes the table holds but /proc no longer has (or has under a reused
        pid) are closed (exit and reap); live ones /proc shows as zombies are
        exited, and those /proc shows under another comm take its argv (their
        exec was lost); every process takes /proc's parent (and, if it had none
        known at its fork, takes it as its spawner); processes the table
        never heard of are added as seeded, their current parent as spawner, so
        a leak that grew while events were lost is still charged to its
        spawner.  The listener hears each change, as for events.  The processes
        it added, as `seed`."""
        in_proc = {info.pid: info for info in snapshot.processes}
        for proc in list(self._by_pid.values()):
            info = in_proc.get(proc.pid)
            if info is None or not same_start(info.start, proc.start):
                self.counts["resync_closed"] += 1
                self._close(proc, snapshot.ts)
            elif info.zombie and proc.alive:
                self.counts["resync_exited"] += 1
                self._exit(proc, snapshot.ts)
            elif proc.alive and info.comm[:COMM_CHARS] != proc.comm[:COMM_CHARS] and info.argv:
                # An exec renames comm; its event was lost: /proc has the program.
                self.counts["resync_execs"] += 1
                self._exec(Exec(snapshot.ts, proc.pid, info.ppid, info.comm, proc.cgroup_id, info.argv,
                                environ=info.environ, environ_unread=info.environ_unread), proc)
        known = set(self._by_pid)
        added = self.seed(snapshot)
        self.counts["resync_added"] += len(added)
        for pid in known:
            proc = self._by_pid.get(pid)
            info = in_proc[pid]
            if proc is None:
                continue
            if proc.ppid != info.ppid:
                self._adoption_pending.pop(proc, None)  # /proc has told
                self._adopt(proc, info.ppid)
                self.counts["resync_reparented"] += 1
            elif proc.parent is None and proc.spawner is None:
                # Forked by a parent whose own records were lost (the sweep told a held child
                # before this resync told the parent): its spawner, as if seeded with it.
                parent = self._by_pid.get(info.ppid)
                if parent is not None and parent is not proc:
                    self._link(proc, parent, spawner=parent)
                    self.listener.joined(proc)
                    self.counts["resync_linked"] += 1
        return added


def _argv_weight(key: tuple[tuple[str, ...], str]) -> int:
    argv, comm = key
    return weigh_words(argv) + len(comm)


def _with(processes: AbstractSet[Process], proc: Process) -> AbstractSet[Process]:
    """`processes` and `proc`: a set of its own replaces the shared empty one."""
    if not processes:
        return {proc}
    processes.add(proc)  # type: ignore[attr-defined]  # not empty: a set of this process's own
    return processes


def _without(processes: AbstractSet[Process], proc: Process) -> AbstractSet[Process]:
    """`processes` but `proc`: the shared empty set once none is left."""
    if proc in processes:
        if len(processes) == 1:
            return NO_PROCESSES
        processes.remove(proc)  # type: ignore[attr-defined]
    return processes
