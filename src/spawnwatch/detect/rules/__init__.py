"""The rules, one module each; `RULES` is the one place that names them (evaluation
order), and the config's [rules.<name>] tables are built from it."""

from __future__ import annotations

from spawnwatch.detect.rules import accumulating, oom, orphaned, orphaned_containers, pids, spawn_rate, zombie
from spawnwatch.detect.rules.base import CRITICAL, WARNING, Context, Hit, Rule

RULES: dict[str, Rule] = {
    m.RULE.name: m.RULE for m in (accumulating, orphaned, orphaned_containers, zombie, spawn_rate, oom, pids)
}
REAPABLE = tuple(name for name, rule in RULES.items() if rule.reapable)

__all__ = ["CRITICAL", "REAPABLE", "RULES", "WARNING", "Context", "Hit", "Rule"]
