"""oom: an OOM kill in the group, held for `hold_s`; repeated kills are critical."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, severity


@dataclass(frozen=True, slots=True)
class OomRule:
    enabled: bool = True
    hold_s: float = 60.0
    critical_kills: int = 3


def check(rule: OomRule, group: Group, context: Context) -> Hit | None:
    if group.last_oom is None or group.last_oom < context.now - rule.hold_s:
        return None
    return Hit(
        list(group.oom_victims),
        f"{group.ooms} OOM kill{'s' if group.ooms != 1 else ''}",
        severity(group.ooms, rule.critical_kills),
    )


RULE = Rule("oom", OomRule, check)
