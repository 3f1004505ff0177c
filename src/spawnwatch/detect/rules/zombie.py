"""zombie: exited children their living spawner has not reaped.  Workers count too:
a server that never waits for its workers has a bug, however healthy its pool.

Init (pid 1) is left out: its zombies are other processes' orphans, reaped on its own
schedule, and a /proc snapshot names it the spawner of every process it adopted."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, kinds_of_members, severity
from spawnwatch.lineage import INIT_PID, Process
from spawnwatch.text import human_duration


@dataclass(frozen=True, slots=True)
class Zombie:
    enabled: bool = True
    min_zombies: int = 8
    min_age_s: float = 1.0
    critical_zombies: int = 100


def check(rule: Zombie, group: Group, context: Context) -> Hit | None:
    if group.zombies < rule.min_zombies:
        return None
    zombies = unreaped_by_spawner(group)
    deadline = context.now - rule.min_age_s
    old = [p for p in zombies if p.exited_at <= deadline]
    if len(old) < rule.min_zombies:
        return None
    oldest = context.now - old[0].exited_at
    return Hit(
        [p.pid for p in zombies],
        f"{len(zombies)} exited children not reaped, the oldest for {human_duration(oldest)}{kinds_of_members(group)}",
        severity(len(zombies), rule.critical_zombies),
    )


def unreaped_by_spawner(group: Group) -> list[Process]:
    """Zombie members whose spawner, still alive and still their parent, has not reaped them."""
    if group.zombies == 0 or not group.spawner.alive or group.spawner.pid == INIT_PID:
        return []
    zombies = [p for p in group.members if p.zombie and p.parent is group.spawner]
    return sorted(zombies, key=lambda p: (p.exited_at, p.start, p.pid))  # the same order live and replayed


RULE = Rule("zombie", Zombie, check)
