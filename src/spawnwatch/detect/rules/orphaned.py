"""orphaned: descendants left behind by exited children, charged to their spawner.

A child that forks and exits within `handoff_s` hands what it forked off on purpose
(double fork, `setsid -f`, `containerd-shim ... start` behind every `docker run -d`):
those are daemons, not leaks, and are left out.  A leaked server's launcher (`npm
exec`) lives beside it for its session before it is killed.

Leaked processes that exited count too while their adopter leaves them zombies for
`min_zombie_age_s`: a container's PID 1 that never waits (node, or a shell script
that never waits) keeps every orphan that ever exited in it, and those hold pids up
to the container's limit.  An adopter that reaps (init, tini, a shell waiting for
its job) does so within milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, kinds_of_members, orphan_tops, severity
from spawnwatch.text import human_duration


@dataclass(frozen=True, slots=True)
class Orphaned:
    enabled: bool = True
    min_orphans: int = 8
    min_leakers: int = 3
    handoff_s: float = 0.5
    min_zombie_age_s: float = 1.0
    critical_orphans: int = 40


def check(rule: Orphaned, group: Group, context: Context) -> Hit | None:
    leak = context.leak
    if leak is None:
        return None
    leaked = len(leak.processes) + len(leak.zombies)
    if leaked < rule.min_orphans or len(leak.leakers) < rule.min_leakers:
        return None
    handed = f"; {leak.handed_off} handed off on purpose not counted" if leak.handed_off else ""
    beside = f"{len(leak.leakers)} exited children that ran beside them longer than a hand-off ({rule.handoff_s:g} s)"
    if leak.zombies:
        oldest = context.now - leak.zombies[0].exited_at
        left = (f"{leaked} processes left by {beside}: {len(leak.processes)} alive, {len(leak.zombies)} zombies "
                f"under their adopter, which has not reaped them (the oldest for {human_duration(oldest)})")
    else:
        left = f"{leaked} processes left alive by {beside}"
    return Hit(
        [p.pid for p in leak.processes] + [p.pid for p in leak.zombies],
        f"{left}{handed}{kinds_of_members(group)}",
        severity(leaked, rule.critical_orphans),
    )


RULE = Rule("orphaned", Orphaned, check, reaped=orphan_tops)
