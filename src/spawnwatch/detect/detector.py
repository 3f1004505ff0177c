"""Detection: the group book (lineage listener) and the rules over its groups.

Pure: memory comes through the injected `memory_of(pids) -> (rss, uss|None)`,
called only for groups a rule currently finds suspicious, and a leaked container's
through `container_memory(id) -> bytes|None`; programs through `program_of(argv, comm)`
(Signer.program), container clients through `client_of(argv)` (Signer.container_client).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from spawnwatch.detect.containers import ClientOf, Container, ContainerBook
from spawnwatch.detect.groups import Group, GroupBook, GroupKey, Leak, ProgramOf, live_subtree
from spawnwatch.detect.rules import RULES, WARNING, Context
from spawnwatch.detect.rules.accumulating import Accumulating
from spawnwatch.detect.rules.oom import OomRule
from spawnwatch.detect.rules.orphaned import Orphaned
from spawnwatch.detect.rules.orphaned_containers import OrphanedContainers
from spawnwatch.detect.rules.pids import PidsBook, PidsRule
from spawnwatch.detect.rules.spawn_rate import SpawnRate
from spawnwatch.detect.rules.zombie import Zombie
from spawnwatch.detect.serving import SocketsOf, gone, sampled, serving
from spawnwatch.events import PidsSample
from spawnwatch.lineage import Listeners, Process
from spawnwatch.signature import DEFAULT_ENGINE

MemoryOf = Callable[[list[int]], "tuple[int, int | None]"]
ContainerMemoryOf = Callable[[str], "int | None"]


@dataclass(frozen=True, slots=True)
class DetectSettings:
    evaluate_every_s: float = 1.0
    max_idle_groups: int = 4096
    idle_group_s: float = 600.0
    memory_every_s: float = 5.0
    ignore_signatures: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()  # fnmatch patterns of per-connection servers (see rules.accumulating)
    # one field per entry of RULES, named after it
    accumulating: Accumulating = Accumulating()
    orphaned: Orphaned = Orphaned()
    orphaned_containers: OrphanedContainers = OrphanedContainers()
    zombie: Zombie = Zombie()
    spawn_rate: SpawnRate = SpawnRate()
    oom: OomRule = OomRule()
    pids: PidsRule = PidsRule()


@dataclass(frozen=True, slots=True)
class Finding:
    """A rule holds for a group right now, with its evidence."""

    rule: str
    group: Group
    pids: tuple[int, ...]  # the leaked processes, most telling first
    orphans: int  # leaked processes, or containers for orphaned_containers
    rss_bytes: int  # of the group's processes and its orphans, or of the leaked containers
    uss_bytes: int | None
    detail: str  # why, in words
    severity: str = WARNING
    pids_limit: PidsSample | None = None  # the pids limit the group fills (pids rule)
    # the leaked containers: {"id", "name", "image", "runtime", "memory_bytes", "ambiguous"}; `ambiguous`: another
    # client may have asked for it (detect/containers.py), so `reap` leaves it
    containers: tuple[dict[str, Any], ...] = ()


class Detector:
    """`listener` is the lineage listener (the group book and the container book);
    `evaluate(now)` gives the findings."""

    def __init__(self, settings: DetectSettings, program_of: ProgramOf, memory_of: MemoryOf | None = None,
                 client_of: ClientOf | None = None, container_memory: ContainerMemoryOf | None = None,
                 local_engine: str = DEFAULT_ENGINE, sockets_of: SocketsOf | None = None) -> None:
        self.settings = settings
        self._memory_of = memory_of
        self._sockets_of = sockets_of
        self._container_memory = container_memory
        self._ignore = [re.compile(p) for p in settings.ignore_signatures]
        self.book = GroupBook(max(60, settings.spawn_rate.minutes * 60), program_of, settings.servers)
        self.pids = PidsBook()
        self.containers = ContainerBook(client_of, settings.orphaned_containers.match_window_s, local_engine)
        self.listener = Listeners(self.book, self.containers)

    @property
    def groups(self) -> dict[GroupKey, Group]:
        return self.book.groups

    @property
    def counts(self):
        return self.book.counts + self.containers.counts

    def cgroups(self) -> dict[int, int]:
        """cgroup id -> the pid of a live member, of the cgroups the groups with live members are in:
        where the pids sampler looks."""
        found: dict[int, int] = {}
        for group in self.book.groups.values():
            if group.live and group.key.cgroup_id and group.key.cgroup_id not in found:
                member = next((p for p in group.members if p.alive), None)
                if member is not None:
                    found[group.key.cgroup_id] = member.pid
        return found

    def evaluate(self, now: float) -> list[Finding]:
        orphaned = self.settings.orphaned
        leaks = self.book.leaks(orphaned.handoff_s, zombies_exited_by=now - orphaned.min_zombie_age_s)
        self.containers.expire(now)
        leaked_containers = self.containers.leaked(now, self.settings.orphaned_containers.grace_s, self.book)
        rules = [(rule, getattr(self.settings, name)) for name, rule in RULES.items()]
        limits = self.pids.leaders(self.book.groups.values(), leaks)
        findings = []
        serving_of = None if self._sockets_of is None else (lambda group: self._serving(group, now))
        for group in list(self.book.groups.values()):
            group.history.prune(now)
            if any(p.search(group.key.signature) for p in self._ignore):
                continue
            leak = leaks.get(group.key)
            context = Context(now=now, book=self.book, leak=leak, pids=limits.get(group.key),
                              containers=tuple(leaked_containers.get(group.key, ())), serving_of=serving_of)
            for rule, settings in rules:
                if not settings.enabled:
                    continue
                hit = rule.check(settings, group, context)
                if hit is None:
                    continue
                if hit.containers:
                    containers = tuple(self._container(c, now) for c in hit.containers)
                    orphans, rss, uss = len(containers), sum(c["memory_bytes"] or 0 for c in containers), None
                else:
                    containers = ()
                    orphans = len(leak.processes) + len(leak.zombies) if leak else 0
                    rss, uss = self._memory(group, now, leak)
                findings.append(Finding(
                    rule=rule.name, group=group, pids=tuple(hit.pids), orphans=orphans,
                    rss_bytes=rss, uss_bytes=uss, detail=hit.detail, severity=hit.severity,
                    pids_limit=hit.pids_limit, containers=containers,
                ))
        self.book.expire(now, self.settings.idle_group_s, self.settings.max_idle_groups,
                         keep={f.group.key for f in findings} | set(leaks) | set(leaked_containers))
        return findings

    def charged_orphans(self) -> dict[GroupKey, list[Process]]:
        """Leaked live processes per group they are charged to (for the tree)."""
        return {key: leak.processes for key, leak in self.book.leaks(self.settings.orphaned.handoff_s).items()}

    def _container(self, container: Container, now: float) -> dict[str, Any]:
        """A leaked container as alerts carry it, its memory sampled at most every `memory_every_s`."""
        if self._container_memory is not None and (
                container.memory_at is None or now - container.memory_at >= self.settings.memory_every_s):
            container.memory_bytes = self._container_memory(container.id)
            container.memory_at = now
        return {"id": container.id, "name": container.name, "image": container.image,
                "runtime": container.engine or "docker", "memory_bytes": container.memory_bytes,
                "ambiguous": container.ambiguous}

    def _serving(self, group: Group, now: float) -> str | None:
        """Why the group's children serve connections, their sockets read at most every `memory_every_s`."""
        assert self._sockets_of is not None
        if group.serving_at is None or now - group.serving_at >= self.settings.memory_every_s:
            members = sampled(group.members)
            held = self._sockets_of([group.spawner.pid] + [p.pid for p in members])
            if gone(members, held):
                # The last verdict stands, read again at the next evaluation: a pool stays
                # spared, and a leak fires on, as its replay (which reads no sockets) does.
                return group.serving
            group.serving = serving(group.spawner, members, held)
            group.serving_at = now
        return group.serving

    def _memory(self, group: Group, now: float, leak: Leak | None) -> tuple[int, int | None]:
        if self._memory_of is None:
            return (0, None)
        if group.memory_at is None or now - group.memory_at >= self.settings.memory_every_s:
            pids = [p.pid for m in group.members if m.alive for p in live_subtree(m)]
            if leak:
                pids += [p.pid for p in leak.processes]
            group.memory = self._memory_of(pids)
            group.memory_at = now
        return group.memory
