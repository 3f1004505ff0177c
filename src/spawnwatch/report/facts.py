"""What `report` knows about a host: the facts collection gathers and everything after it reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from spawnwatch.adapters.cgroups import PidsReading
from spawnwatch.adapters.engine import ContainerInfo
from spawnwatch.adapters.memory import CgroupMemory, HostMemory
from spawnwatch.detect import Finding
from spawnwatch.lineage import Process

HOST = "host"  # the pseudo-container of processes outside any container


@dataclass(frozen=True, slots=True)
class ReportSettings:
    groups_per_container: int = 5
    min_group: int = 2  # smaller "groups" are just processes
    max_pids: int = 20


@dataclass(frozen=True, slots=True)
class GroupFacts:
    signature: str
    spawner: Process
    container_id: str | None
    processes: int  # unreaped members
    zombies: int
    rss_bytes: int  # members' live subtrees (and orphans charged to them)
    pids: tuple[int, ...]
    findings: tuple[Finding, ...] = ()
    # The leaked processes as /proc sees them now, by (current parent, signature): the
    # groups `reap` can select.  For an orphan leak these are the orphans, not the members.
    reap_targets: tuple[tuple[int, str, int], ...] = ()  # (parent pid, signature, count)


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    info: ContainerInfo
    memory: CgroupMemory | None
    processes: int
    pids: PidsReading | None = None  # the pids limit over its cgroup (its own, or a parent's), tasks, refused forks


@dataclass(frozen=True, slots=True)
class LeakedContainerFacts:
    """A container an exited client of `spawner` left running, as the ledger of `watch` lists it."""

    signature: str  # the client's
    spawner: dict[str, Any]  # pid, ppid, argv, comm
    info: ContainerInfo  # as the engine says now
    memory_bytes: int | None  # its cgroup's, now
    age_s: float | None


@dataclass(frozen=True, slots=True)
class LedgerFacts:
    path: str
    writer_pid: int | None
    unusable: str | None = None  # why its alerts cannot be trusted (stale, unreadable); None: a live watch keeps it

    @property
    def state_dir(self) -> str:
        return os.path.dirname(self.path)


@dataclass(frozen=True, slots=True)
class Facts:
    host_memory: HostMemory
    host_processes: int
    containers: tuple[ContainerFacts, ...]
    groups: tuple[GroupFacts, ...]
    docker_available: bool
    dangling_images: tuple[dict[str, Any], ...] = ()
    unused_volumes: tuple[dict[str, Any], ...] = ()
    traced_seconds: float | None = None
    ledger: LedgerFacts | None = None  # None: no `watch` keeps one here
    leaked_containers: tuple[LeakedContainerFacts, ...] = ()
