"""orphaned: live descendants left behind by exited children, charged to their spawner.

A child that forks and exits within `handoff_s` hands what it forked off on purpose
(double fork, `setsid -f`, `containerd-shim ... start` behind every `docker run -d`):
those are daemons, not leaks, and are left out.  A leaked server's launcher (`npm
exec`) lives beside it for its session before it is killed."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, kinds_of_members, severity


@dataclass(frozen=True, slots=True)
class Orphaned:
    enabled: bool = True
    min_orphans: int = 8
    min_leakers: int = 3
    handoff_s: float = 0.5
    critical_orphans: int = 40


def check(rule: Orphaned, group: Group, context: Context) -> Hit | None:
    leak = context.leak
    if leak is None or len(leak.processes) < rule.min_orphans or len(leak.leakers) < rule.min_leakers:
        return None
    handed = f"; {leak.handed_off} handed off on purpose not counted" if leak.handed_off else ""
    return Hit(
        [p.pid for p in leak.processes],
        f"{len(leak.processes)} processes left alive by {len(leak.leakers)} exited children that ran beside them "
        f"longer than a hand-off ({rule.handoff_s:g} s){handed}{kinds_of_members(group)}",
        severity(len(leak.processes), rule.critical_orphans),
    )


RULE = Rule("orphaned", Orphaned, check)
