"""Leak detection: children grouped by (container cgroup, spawner, signature), rules over the groups.

    groups.py      group accounting, the lineage listener (launched children vs workers,
                   orphans and hand-offs)
    containers.py  the container book: engine events joined to the clients that asked for them
    rules/         one module per rule; rules.RULES names them
    serving.py     children that serve connections their spawner passes them: a pool, not a leak
    detector.py    the rules over the groups, with memory and sockets read for the suspicious ones

Rules (thresholds from the config's [rules] tables):
  accumulating  identical launched children keep growing with no matching exits
  orphaned      leaked descendants of exited children, still alive, not handed off
  zombie        exited children their living spawner has not reaped
  spawn_rate    spawns per minute of one group above a limit, sustained
  oom           an OOM kill in the group
  pids          the group fills its cgroup's pids limit, or the limit refuses forks
  orphaned_containers  containers left running by the `docker run` clients the group's spawner killed
"""

from spawnwatch.detect.containers import Container, ContainerBook
from spawnwatch.detect.detector import ContainerMemoryOf, DetectSettings, Detector, Finding, MemoryOf
from spawnwatch.detect.groups import Group, GroupKey, SpawnHistory, charged_child, handed_off, live_subtree
from spawnwatch.detect.rules import CRITICAL, REAPABLE, RULES, WARNING
from spawnwatch.detect.rules.accumulating import Accumulating, spawn_moments
from spawnwatch.detect.rules.oom import OomRule
from spawnwatch.detect.rules.orphaned import Orphaned
from spawnwatch.detect.rules.pids import PidsRule
from spawnwatch.detect.rules.orphaned_containers import OrphanedContainers
from spawnwatch.detect.rules.spawn_rate import SpawnRate
from spawnwatch.detect.rules.zombie import Zombie
from spawnwatch.detect.serving import HeldSockets, SocketsOf

__all__ = [
    "CRITICAL", "RULES", "WARNING", "Accumulating", "Container", "ContainerBook", "ContainerMemoryOf", "DetectSettings",
    "Detector", "Finding", "Group", "GroupKey", "HeldSockets", "MemoryOf", "OomRule", "Orphaned", "OrphanedContainers", "PidsRule",
    "REAPABLE", "SocketsOf", "SpawnHistory", "SpawnRate", "Zombie", "charged_child", "handed_off", "live_subtree", "spawn_moments",
]
