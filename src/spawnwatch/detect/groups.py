"""Group accounting: children grouped by (container cgroup, spawner, signature).

A group counts its members' life: spawned, live, exited, zombies (exited and
not yet reaped), first/last spawn, spawns per second over a sliding horizon,
OOM kills.  `GroupBook` is the lineage listener; it keeps its own process ->
group map, so a `Process` carries nothing of detection.

Launched children and workers.  A member is *launched* when it ran a program
other than its spawner's (`npm exec magic` from `node host.js`); a member that
never exec'd since its fork (postgres backends, Apache prefork and gunicorn
workers) or that re-exec'd its spawner's own program (sshd's per-connection
`sshd -R`) is a *worker* of a server.  A /proc-seeded member, whose exec was not
seen, is judged by its program alone: a titled backend `postgres: user db` runs
the postmaster's program.  "Program" is `Signer.program`.

Orphans are found at evaluation time: a live process whose spawner has exited
is leaked, and so is every live process below it; the leak is charged to the
group of the highest exited ancestor whose own spawner still lives (the child
that the supervisor started and then killed without its descendants).  A
process whose spawner exited within `handoff_s` of forking it was handed off
on purpose (double fork, `setsid -f`, `containerd-shim ... start`): it is not
a leak.

An orphan that exits is a zombie of its adopter (the nearest subreaper, or the
PID 1 of its pid namespace: a container's entrypoint) until the adopter reaps
it; one that never does (node or a shell script that never waits as a
container's PID 1) piles the leak up as zombies, still charged the same way.

Pure: the program of an argv comes through the injected `program_of`.
"""

from __future__ import annotations

import fnmatch
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

from spawnwatch.events import Brief, Tally
from spawnwatch.lineage import INIT_PID, Key, Process

ProgramOf = Callable[[Sequence[str], str], str]
MAX_ANCESTRY = 64  # exited ancestors walked up from an orphan (a chain, never a loop)


class GroupKey(NamedTuple):  # a tuple: hashed and compared in C, once per spawn
    cgroup_id: int
    spawner: Key
    signature: str


class SpawnHistory:
    """Spawns per second over a sliding horizon: at most `horizon_s` buckets."""

    def __init__(self, horizon_s: int) -> None:
        self.horizon_s = horizon_s
        self._buckets: deque[list[int]] = deque()  # [second, count], ascending
        # The newest bucket, where nearly every spawn lands: a deque's [-1] is no
        # specialised subscript, and it was taken twice a spawn of a fork storm.
        self._newest: list[int] | None = None

    def add(self, ts: float, delta: int = 1) -> None:
        second = int(ts)
        newest = self._newest
        if newest is not None and newest[0] == second:  # nearly always
            newest[1] += delta
            return
        self._add_elsewhere(second, delta)
        self._newest = self._buckets[-1] if self._buckets else None

    def _add_elsewhere(self, second: int, delta: int) -> None:
        buckets = self._buckets
        for i in range(len(buckets) - 1, -1, -1):
            if buckets[i][0] == second:
                buckets[i][1] += delta
                return
            if buckets[i][0] < second:
                if delta > 0:
                    buckets.insert(i + 1, [second, delta])
                return
        if delta > 0:
            buckets.appendleft([second, delta])

    def prune(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - self.horizon_s:
            self._buckets.popleft()
        if not self._buckets:
            self._newest = None

    def count(self, start: float, end: float) -> int:
        """Spawns in [start, end)."""
        return sum(c for s, c in self._buckets if start <= s < end)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(eq=False)
class Group:
    key: GroupKey
    spawner: Process
    history: SpawnHistory
    members: set[Process] = field(default_factory=set)  # unreaped members
    launched: set[Process] = field(default_factory=set)  # the members that run a program other than the spawner's
    program: str = ""  # what the members run (Signer.program)
    spawner_program: str = ""
    exempt: str | None = None  # why accumulating spares the group's spawner, in words
    live: int = 0
    zombies: int = 0
    spawned: int = 0
    exited: int = 0
    first_spawn: float = 0.0
    last_spawn: float = 0.0
    last_brief_reaped: float = 0.0  # when the last member that came as a Brief was reaped (see GroupBook.expire)
    last_oom: float | None = None
    ooms: int = 0
    oom_victims: deque[int] = field(default_factory=lambda: deque(maxlen=20))
    memory: tuple[int, int | None] = (0, None)
    memory_at: float | None = None
    serving: str | None = None  # why its children serve connections (detect.serving), None: no evidence
    serving_at: float | None = None  # when their sockets were last read (suspicious groups only)


@dataclass
class Leak:
    leakers: set[Process] = field(default_factory=set)  # exited children that left processes behind
    processes: list[Process] = field(default_factory=list)  # the live processes they left
    zombies: list[Process] = field(default_factory=list)  # those that exited since, unreaped by their adopter
    handed_off: int = 0  # live processes their exited spawner handed off on purpose (not counted above)


class GroupBook:
    """Implements lineage.Listener: every change of membership lands here."""

    def __init__(self, horizon_s: int, program_of: ProgramOf, servers: Sequence[str] = ()) -> None:
        self._horizon = horizon_s
        self._program_of = program_of
        self._servers = tuple(servers)
        self.groups: dict[GroupKey, Group] = {}
        # Bounded by the lineage: dropped entries leave.  The group itself, not its key: a
        # process asks for it at every event.  Unreaped members' groups are never expired.
        self._group_of: dict[Process, Group] = {}
        # Empty groups, by when they emptied.  Every group without members is in it, but for
        # a Brief's new group, for the moment it takes to be marked.
        self._idle: OrderedDict[GroupKey, float] = OrderedDict()
        # The group of each spawner's Briefs (children that ran its program), with the cgroup
        # and signature of its key: the one lookup made for nearly every record of a fork
        # storm, without building a GroupKey (or reading one: a named tuple's field is a
        # descriptor call).  Bounded by the lineage (dropped spawners leave) and by the groups
        # (expired ones leave).
        self._brief_group: dict[Process, tuple[int, str, Group]] = {}
        self._orphan_roots: set[Process] = set()  # live processes whose spawner has exited
        self._orphan_zombies: set[Process] = set()  # orphan roots that exited, not yet reaped by their adopter
        self._exits_at_join: dict[Process, int] = {}  # group.exited when the member joined
        self.counts: Counter[str] = Counter()

    # -- lineage.Listener ----------------------------------------------------------------

    def joined(self, proc: Process) -> None:
        self._join(proc)
        if proc.alive and proc.spawner is not None and not proc.spawner.alive:
            self._orphan_roots.add(proc)

    def spawned_briefly(self, spawner: Process, brief: Brief | Tally, argv: tuple[str, ...], signature: str) -> None:
        """Members that joined, exited and were reaped at once: one, or a tally's count.
        They ran `argv` (`signature`), their spawner's program when they forked."""
        cgroup_id = brief.cgroup_id
        cached = self._brief_group.get(spawner)
        if cached is not None and cached[0] == cgroup_id and cached[1] == signature:
            group = cached[2]
        else:
            key = GroupKey(cgroup_id, spawner.key, signature)
            group = self.groups.get(key)
            if group is None:
                group = self._group(key, spawner, argv, brief.comm, brief.ts)
                self._mark_idle(group, brief.reaped_at)
            self._brief_group[spawner] = (cgroup_id, signature, group)
        count = brief.count
        self._count_spawn(group, brief.ts, count)
        group.exited += count
        # An empty group is in _idle already: expire reads this rather than the group
        # being moved to the end of _idle at every Brief.
        if brief.reaped_at > group.last_brief_reaped:
            group.last_brief_reaped = brief.reaped_at

    def changed(self, proc: Process, old_signature: str) -> None:
        group = self.group_of(proc)
        if group is not None and group.key.signature == proc.signature:
            return
        self._leave(proc, unspawn=True)
        self._join(proc)

    def exited(self, proc: Process) -> None:
        group = self.group_of(proc)
        if group is not None and proc in group.members:
            group.live -= 1
            group.zombies += 1
            group.exited += 1
        if proc in self._orphan_roots:
            self._orphan_roots.discard(proc)
            self._orphan_zombies.add(proc)
        for child in proc.spawned:
            if child.alive:
                self._orphan_roots.add(child)

    def reaped(self, proc: Process) -> None:
        self._orphan_zombies.discard(proc)
        group = self.group_of(proc)
        if group is not None and proc in group.members:
            group.zombies -= 1
            group.members.discard(proc)
            group.launched.discard(proc)
            self._exits_at_join.pop(proc, None)
            self._mark_idle(group, proc.reaped_at or 0.0)

    def dropped(self, proc: Process) -> None:
        self._orphan_roots.discard(proc)
        self._orphan_zombies.discard(proc)
        if proc.reaped_at is None:
            self._leave(proc, unspawn=False)  # evicted while unreaped: its counts go with it
        self._group_of.pop(proc, None)
        self._brief_group.pop(proc, None)

    def oom(self, proc: Process, ts: float) -> None:
        group = self.group_of(proc)
        if group is not None:
            group.last_oom = ts
            group.ooms += 1
            group.oom_victims.appendleft(proc.pid)

    # -- queries -------------------------------------------------------------------------

    def restored(self, key: GroupKey, spawner: Process, now: float) -> Group:
        """The group of `key`, which a former `watch` knew, for the containers it charged there:
        without members, so idle (expired like any other once nothing refers to it)."""
        group = self._group(key, spawner, tuple(key.signature.split()), "", now)
        self._mark_idle(group, now)
        return group

    def group_of(self, proc: Process) -> Group | None:
        return self._group_of.get(proc)

    def exits_since_join(self, group: Group, proc: Process) -> int:
        """Members of `group` that exited since `proc` joined it."""
        return group.exited - self._exits_at_join.get(proc, 0)

    def leaks(self, handoff_s: float, zombies_exited_by: float | None = None) -> dict[GroupKey, Leak]:
        """Leaked processes per group they are charged to.  A process whose spawner exited
        within `handoff_s` of forking it was handed off, not leaked.  Orphans that exited by
        `zombies_exited_by` and that their adopter has not reaped since count as zombies
        (None: the live leak only)."""
        leaks: dict[GroupKey, Leak] = {}
        for root in sorted(self._orphan_roots, key=lambda p: (p.start, p.pid)):  # stable pid lists
            charge = self._charge(root, leaks)
            if charge is None:
                continue
            leaker, leak = charge
            if handed_off(root, handoff_s):
                leak.handed_off += 1
                continue
            leak.leakers.add(leaker)
            leak.processes.extend(live_subtree(root))
        if zombies_exited_by is None:
            return leaks
        settled = (p for p in self._orphan_zombies if p.exited_at <= zombies_exited_by)
        for zombie in sorted(settled, key=lambda p: (p.exited_at, p.start, p.pid)):
            charge = None if handed_off(zombie, handoff_s) else self._charge(zombie, leaks)
            if charge is not None:
                leaker, leak = charge
                leak.leakers.add(leaker)
                leak.zombies.append(zombie)
        return leaks

    def _charge(self, orphan: Process, leaks: dict[GroupKey, Leak]) -> tuple[Process, Leak] | None:
        """The child that left `orphan` behind, and the leak of that child's group."""
        leaker = charged_child(orphan)
        group = self._group_of.get(leaker) if leaker is not None else None
        if group is None:
            return None
        return leaker, leaks.setdefault(group.key, Leak())

    # -- membership ----------------------------------------------------------------------

    def _join(self, proc: Process) -> None:
        spawner = proc.spawner
        if spawner is None:
            self._group_of.pop(proc, None)
            return
        group = self._group(GroupKey(proc.cgroup_id, spawner.key, proc.signature), spawner,
                            proc.argv, proc.comm, proc.start)
        if not group.members:  # idle until now
            self._idle.pop(group.key, None)
        self._group_of[proc] = group
        group.members.add(proc)
        if (proc.execed or proc.seeded) and group.program != group.spawner_program:
            group.launched.add(proc)  # a fork-only child runs its spawner's program
        self._count_spawn(group, proc.start)
        if proc.alive:
            group.live += 1
        else:
            group.zombies += 1
        self._exits_at_join[proc] = group.exited

    def _group(self, key: GroupKey, spawner: Process, argv: Sequence[str], comm: str, start: float) -> Group:
        """The group of `key`, made for a member running `argv` as `comm` if it has none yet."""
        group = self.groups.get(key)
        if group is None:
            spawner_program = self._program_of(spawner.argv, spawner.comm)
            group = Group(key=key, spawner=spawner, history=SpawnHistory(self._horizon), first_spawn=start,
                          program=self._program_of(argv, comm), spawner_program=spawner_program,
                          exempt=self._exemption(spawner, spawner_program))
            self.groups[key] = group
        return group

    @staticmethod
    def _count_spawn(group: Group, start: float, count: int = 1) -> None:
        group.spawned += count
        if start < group.first_spawn:
            group.first_spawn = start
        if start > group.last_spawn:
            group.last_spawn = start
        group.history.add(start, count)

    def _leave(self, proc: Process, unspawn: bool) -> None:
        group = self.group_of(proc)
        self._group_of.pop(proc, None)
        self._exits_at_join.pop(proc, None)
        if group is None or proc not in group.members:
            return
        group.members.discard(proc)
        group.launched.discard(proc)
        if proc.alive:
            group.live -= 1
        else:
            group.zombies -= 1
        if unspawn:  # it was never a spawn of this signature: its exec renamed it
            group.spawned -= 1
            group.history.add(proc.start, -1)
        self._mark_idle(group, proc.start)

    def _exemption(self, spawner: Process, program: str) -> str | None:
        """Why the spawner's children are per-connection by design: a [detect] servers pattern
        names it (by comm, program or script), or it is init."""
        if spawner.pid == INIT_PID:
            # Every orphan on the host ends up its child, and /proc cannot tell adoptees
            # from children: what init "spawned" in a snapshot is every daemon's hand-off.
            return f"{spawner.comm} is init, the adopter of every orphan"
        names = {spawner.comm, program, program.rsplit(" ", 1)[-1]}
        pattern = next((p for p in self._servers if any(fnmatch.fnmatchcase(n, p) for n in names)), None)
        if pattern is None:
            return None
        return f"{spawner.comm} is a per-connection server ({pattern!r} in [detect] servers)"

    def _mark_idle(self, group: Group, ts: float) -> None:
        if not group.members:
            self._idle[group.key] = max(ts, group.last_spawn)
            self._idle.move_to_end(group.key)

    def expire(self, now: float, idle_s: float, max_idle: int, keep: set[GroupKey]) -> None:
        """Drop groups empty for long (or beyond the cap), unless a finding or a leak still refers to them."""
        for key, since in list(self._idle.items()):
            group = self.groups[key]
            refreshed = group.last_brief_reaped > since  # Briefs came since it emptied: idle since the last
            if refreshed:
                since = self._idle[key] = group.last_brief_reaped
                self._idle.move_to_end(key)
            if since > now - idle_s and len(self._idle) <= max_idle:
                if refreshed:
                    continue  # its place is further on now
                break
            if key in keep:
                continue
            del self._idle[key]
            del self.groups[key]
            cached = self._brief_group.get(group.spawner)
            if cached is not None and cached[2] is group:
                del self._brief_group[group.spawner]
            self.counts["groups_dropped"] += 1


def charged_child(root: Process) -> Process | None:
    """The exited ancestor of a leaked process that its (living) supervisor spawned.

    Walks up the spawner chain through exited processes; the highest one whose
    own spawner is alive is the child the leak is charged to."""
    proc = root.spawner
    seen = 0
    while proc is not None and seen < MAX_ANCESTRY:
        spawner = proc.spawner
        if spawner is None:
            return None
        if spawner.alive:
            return proc
        proc = spawner
        seen += 1
    return None


def handed_off(root: Process, handoff_s: float) -> bool:
    """Its spawner forked it and exited at once: a daemon's hand-off, not a leak.  A leaked
    server's launcher lives with it for a session before it is killed."""
    spawner = root.spawner
    return spawner is not None and spawner.exited_at is not None and spawner.exited_at - root.start <= handoff_s


def live_subtree(root: Process) -> Iterator[Process]:
    """`root` and its live descendants through live processes (live children of exited
    ones are orphan roots of their own and counted there)."""
    stack = [root]
    while stack:
        proc = stack.pop()
        if not proc.alive:
            continue
        yield proc
        stack.extend(sorted(proc.spawned, key=lambda p: (p.start, p.pid), reverse=True))
