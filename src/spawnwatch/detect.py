"""Leak detection: children grouped by (container cgroup, spawner, signature), rules over the groups.

A group counts its members' life: spawned, live, exited, zombies (exited and
not yet reaped), first/last spawn, spawns per second over a sliding horizon.
Orphans are found at evaluation time: a live process whose spawner has exited
is leaked, and so is every live process below it; the leak is charged to the
group of the highest exited ancestor whose own spawner still lives (the child
that the supervisor started and then killed without its descendants).

Rules (thresholds in `RuleSettings`, from the config's [rules] tables):
  accumulating  identical live children keep growing with no matching exits
  orphaned      leaked descendants of exited children, still alive
  zombie        exited children their living spawner has not reaped
  spawn_rate    spawns per minute of one group above a limit, sustained
  oom           an OOM kill in the group

Pure: memory comes through the injected `memory_of(pids) -> (rss, uss|None)`,
called only for groups a rule currently finds suspicious.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from spawnwatch.lineage import Key, Process

MemoryOf = Callable[[list[int]], "tuple[int, int | None]"]

RULES = ("accumulating", "orphaned", "zombie", "spawn_rate", "oom")


@dataclass(frozen=True, slots=True)
class Accumulating:
    enabled: bool = True
    min_live: int = 9
    min_gap_s: float = 1.0
    min_growth: int = 5


@dataclass(frozen=True, slots=True)
class Orphaned:
    enabled: bool = True
    min_orphans: int = 8
    min_leakers: int = 3


@dataclass(frozen=True, slots=True)
class Zombie:
    enabled: bool = True
    min_zombies: int = 8
    min_age_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SpawnRate:
    enabled: bool = True
    per_minute: int = 600
    minutes: int = 3


@dataclass(frozen=True, slots=True)
class OomRule:
    enabled: bool = True
    hold_s: float = 60.0


@dataclass(frozen=True, slots=True)
class DetectSettings:
    evaluate_every_s: float = 1.0
    max_idle_groups: int = 4096
    idle_group_s: float = 600.0
    memory_every_s: float = 5.0
    ignore_signatures: tuple[str, ...] = ()
    accumulating: Accumulating = Accumulating()
    orphaned: Orphaned = Orphaned()
    zombie: Zombie = Zombie()
    spawn_rate: SpawnRate = SpawnRate()
    oom: OomRule = OomRule()


@dataclass(frozen=True, slots=True)
class GroupKey:
    cgroup_id: int
    spawner: Key
    signature: str


class SpawnHistory:
    """Spawns per second over a sliding horizon: at most `horizon_s` buckets."""

    def __init__(self, horizon_s: int) -> None:
        self.horizon_s = horizon_s
        self._buckets: deque[list[int]] = deque()  # [second, count], ascending

    def add(self, ts: float, delta: int = 1) -> None:
        second = int(ts)
        buckets = self._buckets
        for i in range(len(buckets) - 1, -1, -1):  # nearly always the last bucket
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
    live: int = 0
    zombies: int = 0
    spawned: int = 0
    exited: int = 0
    first_spawn: float = 0.0
    last_spawn: float = 0.0
    last_oom: float | None = None
    ooms: int = 0
    oom_victims: deque[int] = field(default_factory=lambda: deque(maxlen=20))
    memory: tuple[int, int | None] = (0, None)
    memory_at: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule holds for a group right now, with its evidence."""

    rule: str
    group: Group
    pids: tuple[int, ...]  # the leaked processes, most telling first
    orphans: int
    rss_bytes: int
    uss_bytes: int | None
    detail: str  # why, in words


class Detector:
    """Implements lineage.Listener; `evaluate(now)` gives the findings."""

    def __init__(self, settings: DetectSettings = DetectSettings(), memory_of: MemoryOf | None = None) -> None:
        self.settings = settings
        self._memory_of = memory_of
        self._ignore = [re.compile(p) for p in settings.ignore_signatures]
        self._horizon = max(60, settings.spawn_rate.minutes * 60)
        self.groups: dict[GroupKey, Group] = {}
        self._idle: OrderedDict[GroupKey, float] = OrderedDict()  # empty groups, by when they emptied
        self._orphan_roots: set[Process] = set()  # live processes whose spawner has exited
        self._exits_at_join: dict[Process, int] = {}  # group.exited when the member joined
        self.counts: Counter[str] = Counter()

    # -- lineage.Listener ----------------------------------------------------------------

    def joined(self, proc: Process) -> None:
        self._join(proc)
        if proc.alive and proc.spawner is not None and not proc.spawner.alive:
            self._orphan_roots.add(proc)

    def changed(self, proc: Process, old_signature: str) -> None:
        group = self._group_of(proc)
        if group is not None and group.key.signature == proc.signature:
            return
        self._leave(proc, unspawn=True)
        self._join(proc)

    def exited(self, proc: Process) -> None:
        group = self._group_of(proc)
        if group is not None and proc in group.members:
            group.live -= 1
            group.zombies += 1
            group.exited += 1
        self._orphan_roots.discard(proc)
        for child in proc.spawned:
            if child.alive:
                self._orphan_roots.add(child)

    def reaped(self, proc: Process) -> None:
        group = self._group_of(proc)
        if group is not None and proc in group.members:
            group.zombies -= 1
            group.members.discard(proc)
            self._exits_at_join.pop(proc, None)
            self._mark_idle(group, proc.reaped_at or 0.0)

    def dropped(self, proc: Process) -> None:
        self._orphan_roots.discard(proc)
        if proc.reaped_at is None:
            self._leave(proc, unspawn=False)  # evicted while unreaped: its counts go with it
        proc.group = None

    def oom(self, proc: Process, ts: float) -> None:
        group = self._group_of(proc)
        if group is not None:
            group.last_oom = ts
            group.ooms += 1
            group.oom_victims.appendleft(proc.pid)

    # -- membership ----------------------------------------------------------------------

    def _group_of(self, proc: Process) -> Group | None:
        return self.groups.get(proc.group) if proc.group is not None else None

    def _join(self, proc: Process) -> None:
        spawner = proc.spawner
        if spawner is None:
            proc.group = None
            return
        key = GroupKey(proc.cgroup_id, spawner.key, proc.signature)
        group = self.groups.get(key)
        if group is None:
            group = Group(key=key, spawner=spawner, history=SpawnHistory(self._horizon), first_spawn=proc.start)
            self.groups[key] = group
        self._idle.pop(key, None)
        proc.group = key
        group.members.add(proc)
        group.spawned += 1
        group.first_spawn = min(group.first_spawn, proc.start)
        group.last_spawn = max(group.last_spawn, proc.start)
        group.history.add(proc.start)
        if proc.alive:
            group.live += 1
        else:
            group.zombies += 1
        self._exits_at_join[proc] = group.exited

    def _leave(self, proc: Process, unspawn: bool) -> None:
        group = self._group_of(proc)
        proc.group = None
        self._exits_at_join.pop(proc, None)
        if group is None or proc not in group.members:
            return
        group.members.discard(proc)
        if proc.alive:
            group.live -= 1
        else:
            group.zombies -= 1
        if unspawn:  # it was never a spawn of this signature: its exec renamed it
            group.spawned -= 1
            group.history.add(proc.start, -1)
        self._mark_idle(group, proc.start)

    def _mark_idle(self, group: Group, ts: float) -> None:
        if not group.members:
            self._idle[group.key] = max(ts, group.last_spawn)
            self._idle.move_to_end(group.key)

    def _expire(self, now: float, keep: set[GroupKey]) -> None:
        """Drop groups empty for long (or beyond the cap), unless a finding or a leak still refers to them."""
        for key, since in list(self._idle.items()):
            if since > now - self.settings.idle_group_s and len(self._idle) <= self.settings.max_idle_groups:
                break
            if key in keep:
                continue
            del self._idle[key]
            del self.groups[key]
            self.counts["groups_dropped"] += 1

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Finding]:
        rules = self.settings
        orphans = self._orphans()
        findings = []
        for group in list(self.groups.values()):
            group.history.prune(now)
            if any(p.search(group.key.signature) for p in self._ignore):
                continue
            leaked = orphans.get(group.key)
            for rule, check in (
                ("accumulating", self._accumulating),
                ("orphaned", self._orphaned),
                ("zombie", self._zombie),
                ("spawn_rate", self._spawn_rate),
                ("oom", self._oom),
            ):
                if not getattr(rules, rule).enabled:
                    continue
                hit = check(group, now, leaked)
                if hit is not None:
                    pids, detail = hit
                    findings.append(self._finding(rule, group, now, pids, detail, leaked))
        self._expire(now, keep={f.group.key for f in findings} | set(orphans))
        return findings

    def charged_orphans(self) -> dict[GroupKey, list[Process]]:
        """Leaked live processes per group they are charged to (for the tree)."""
        return {key: leaked.processes for key, leaked in self._orphans().items()}

    def _finding(self, rule: str, group: Group, now: float, pids, detail: str, leaked) -> Finding:
        rss, uss = self._memory(group, now, leaked)
        return Finding(
            rule=rule,
            group=group,
            pids=tuple(pids),
            orphans=len(leaked.processes) if leaked else 0,
            rss_bytes=rss,
            uss_bytes=uss,
            detail=detail,
        )

    def _accumulating(self, group: Group, now: float, leaked) -> tuple[list[int], str] | None:
        rule = self.settings.accumulating
        if group.live < rule.min_live:
            return None
        live = sorted((p for p in group.members if p.alive), key=lambda p: (p.start, p.pid))
        moments = spawn_moments([p.start for p in live], rule.min_gap_s)
        exits_since = group.exited - self._exits_at_join.get(live[0], 0)
        if moments - exits_since < rule.min_growth:
            return None
        span = live[-1].start - live[0].start
        return [p.pid for p in live], (
            f"{len(live)} live, spawned one by one over {format_span(span)}, "
            f"{exits_since} ended meanwhile"
        )

    def _orphaned(self, group: Group, now: float, leaked) -> tuple[list[int], str] | None:
        rule = self.settings.orphaned
        if leaked is None or len(leaked.processes) < rule.min_orphans or len(leaked.leakers) < rule.min_leakers:
            return None
        return [p.pid for p in leaked.processes], (
            f"{len(leaked.processes)} processes left alive by {len(leaked.leakers)} exited children"
        )

    def _zombie(self, group: Group, now: float, leaked) -> tuple[list[int], str] | None:
        rule = self.settings.zombie
        if group.zombies < rule.min_zombies:
            return None
        zombies = self._unreaped_by_spawner(group)
        deadline = now - rule.min_age_s
        old = [p for p in zombies if p.exited_at <= deadline]
        if len(old) < rule.min_zombies:
            return None
        oldest = now - old[0].exited_at
        return [p.pid for p in zombies], f"{len(zombies)} exited children not reaped, the oldest for {format_span(oldest)}"

    def _unreaped_by_spawner(self, group: Group) -> list[Process]:
        """Zombie members whose spawner, still alive and still their parent, has not reaped them."""
        if group.zombies == 0 or not group.spawner.alive:
            return []
        zombies = [p for p in group.members if p.zombie and p.parent is group.spawner]
        return sorted(zombies, key=lambda p: (p.exited_at, p.pid))

    def _spawn_rate(self, group: Group, now: float, leaked) -> tuple[list[int], str] | None:
        rule = self.settings.spawn_rate
        needed = rule.per_minute
        if group.history.count(now - 60, now) < needed:
            return None  # the cheap test first
        if group.first_spawn > now - 60 * rule.minutes:
            return None
        per_minute = [group.history.count(now - 60 * (k + 1), now - 60 * k) for k in range(rule.minutes)]
        if min(per_minute) < needed:
            return None
        recent = sorted((p for p in group.members if p.alive), key=lambda p: (-p.start, p.pid))
        return [p.pid for p in recent], (
            f"{min(per_minute)}+ spawns a minute for {rule.minutes} minutes (limit {needed})"
        )

    def _oom(self, group: Group, now: float, leaked) -> tuple[list[int], str] | None:
        if group.last_oom is None or group.last_oom < now - self.settings.oom.hold_s:
            return None
        return list(group.oom_victims), f"{group.ooms} OOM kill{'s' if group.ooms != 1 else ''}"

    def _orphans(self) -> dict[GroupKey, "Leak"]:
        leaks: dict[GroupKey, Leak] = {}
        for root in sorted(self._orphan_roots, key=lambda p: (p.start, p.pid)):  # stable pid lists
            leaker = charged_child(root)
            if leaker is None or leaker.group is None:
                continue
            leak = leaks.setdefault(leaker.group, Leak())
            leak.leakers.add(leaker)
            leak.processes.extend(live_subtree(root))
        return leaks

    def _memory(self, group: Group, now: float, leaked) -> tuple[int, int | None]:
        if self._memory_of is None:
            return (0, None)
        if group.memory_at is None or now - group.memory_at >= self.settings.memory_every_s:
            pids = [p.pid for m in group.members if m.alive for p in live_subtree(m)]
            if leaked:
                pids += [p.pid for p in leaked.processes]
            group.memory = self._memory_of(pids)
            group.memory_at = now
        return group.memory


@dataclass
class Leak:
    leakers: set[Process] = field(default_factory=set)  # exited children that left processes behind
    processes: list[Process] = field(default_factory=list)  # the live processes they left


def charged_child(root: Process) -> Process | None:
    """The exited ancestor of a leaked process that its (living) supervisor spawned.

    Walks up the spawner chain through exited processes; the highest one whose
    own spawner is alive is the child the leak is charged to."""
    proc = root.spawner
    seen = 0
    while proc is not None and seen < 64:
        spawner = proc.spawner
        if spawner is None:
            return None
        if spawner.alive:
            return proc
        proc = spawner
        seen += 1
    return None


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


def spawn_moments(starts: list[float], min_gap_s: float) -> int:
    """How many times spawning happened: starts closer than `min_gap_s` to the previous counted one are one burst."""
    moments = 0
    last = None
    for start in sorted(starts):
        if last is None or start - last >= min_gap_s:
            moments += 1
            last = start
    return moments


def format_span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
