"""What every rule shares: its verdict (`Hit`), what it may look at (`Context`),
and how strong the evidence is (`WARNING` at the rule's threshold, `CRITICAL`
past the rule's `critical_*` count)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from spawnwatch.detect.containers import Container
from spawnwatch.detect.groups import Group, GroupBook, Leak
from spawnwatch.events import PidsSample
from spawnwatch.lineage import Process

WARNING = "warning"
CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Hit:
    pids: list[int]  # the leaked processes, most telling first
    detail: str  # why, in words
    severity: str = WARNING
    pids_limit: PidsSample | None = None  # the pids limit the group fills (pids rule)
    containers: tuple[Container, ...] = ()  # the leaked containers, oldest first (orphaned_containers)


@dataclass(frozen=True, slots=True)
class PidsState:
    """The latest pids sample of a cgroup, and since when its refused count is what it is."""

    sample: PidsSample
    refused_since: float


@dataclass(frozen=True, slots=True)
class Context:
    now: float
    book: GroupBook
    leak: Leak | None  # the orphans charged to the group, if any
    pids: PidsState | None = None  # the pids limit of the group's cgroup, when the group holds most of it
    containers: tuple[Container, ...] = ()  # the leaked containers charged to the group, oldest first
    # Why the group's children serve connections (detect.serving), read from the host only when
    # asked: a rule asks once it would fire.  None: nothing to read them with (a snapshot's judge).
    serving_of: Optional[Callable[[Group], "str | None"]] = None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    settings: type  # the dataclass of its [rules.<name>] table; every one has `enabled`
    check: Callable[[Any, Group, Context], "Hit | None"]
    # What `reap` ends of a group this rule flags (from the group and the orphans charged to it),
    # each process with its subtree. None: no signal remedies what it flags, neither zombies, dead
    # already (only their parent, by waiting, or its end clears them), nor an OOM kill's victim.
    reaped: Callable[[Group, Sequence[Process]], list[Process]] | None = None

    @property
    def reapable(self) -> bool:
        return self.reaped is not None


def live_members(group: Group, orphans: Sequence[Process]) -> list[Process]:
    """What `reap` ends of a group that keeps too many children: each live one."""
    return [m for m in group.members if m.alive]


def orphan_tops(group: Group, orphans: Sequence[Process]) -> list[Process]:
    """What `reap` ends of a group's orphans: only the tops of the orphaned subtrees, each
    taken with its subtree."""
    orphaned = set(orphans)
    return [p for p in orphans if p.parent not in orphaned]


def severity(count: int, critical_at: int) -> str:
    return CRITICAL if count >= critical_at else WARNING


def kinds_of_members(group: Group) -> str:
    """Why a group is spared by accumulating, for the messages of the rules that still apply."""
    if group.exempt is not None:
        return f"; exempt from accumulating: {group.exempt}"
    if group.serving is not None:
        return f"; spared by accumulating: {group.serving}"
    if not group.launched and group.members:
        return f"; these are workers of {group.spawner.comm} (no program of their own), not counted by accumulating"
    return ""


