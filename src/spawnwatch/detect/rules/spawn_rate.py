"""spawn_rate: spawns per minute of one group above a limit, sustained.  Every spawn
counts, workers too: a server forking hundreds a minute for minutes is crash-looping
or flooded."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, kinds_of_members, live_members, severity


@dataclass(frozen=True, slots=True)
class SpawnRate:
    enabled: bool = True
    per_minute: int = 600
    minutes: int = 3
    critical_per_minute: int = 6000


def check(rule: SpawnRate, group: Group, context: Context) -> Hit | None:
    now, needed = context.now, rule.per_minute
    if group.history.count(now - 60, now) < needed:
        return None  # the cheap test first
    if group.first_spawn > now - 60 * rule.minutes:
        return None
    per_minute = [group.history.count(now - 60 * (k + 1), now - 60 * k) for k in range(rule.minutes)]
    if min(per_minute) < needed:
        return None
    recent = sorted((p for p in group.members if p.alive), key=lambda p: (-p.start, -p.pid))
    return Hit(
        [p.pid for p in recent],
        f"{min(per_minute)}+ spawns a minute for {rule.minutes} minutes (limit {needed}){kinds_of_members(group)}",
        severity(min(per_minute), rule.critical_per_minute),
    )


RULE = Rule("spawn_rate", SpawnRate, check, reaped=live_members)
