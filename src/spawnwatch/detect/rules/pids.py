"""pids: a leak drives its cgroup towards its pids limit (docker's --pids-limit, compose's
pids_limit, systemd's TasksMax), or the limit already refuses forks.

Past the limit every fork fails (EAGAIN, "fork: retry", Go's errno 11) long before memory
runs out, and threads count as well as processes.  The sampler reads the limit that
applies to each cgroup the groups are in (`PidsSample`); of the groups in cgroups under
one limit, the one with the most live members (and orphans charged to it) is named, as
the leak that fills it.  Refused forks are counted by the kernel for good: they hold the
alert for `hold_s` after the count last grew (or was first seen), and make it critical."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from spawnwatch.detect.groups import Group, GroupKey, Leak
from spawnwatch.detect.rules.base import CRITICAL, WARNING, Context, Hit, PidsState, Rule
from spawnwatch.events import PidsSample


@dataclass(frozen=True, slots=True)
class PidsRule:
    enabled: bool = True
    share: float = 0.8  # of the limit in use: the leak is about to make forks fail
    min_members: int = 5  # the leading group's live members and orphans: fewer are no leak
    hold_s: float = 300.0  # refused forks keep the alert this long after their count last grew
    sample_every_s: float = 1.0  # how often the sampler reads a limited cgroup
    unlimited_every_s: float = 30.0  # ...and looks again for a limit over a cgroup that had none


class PidsBook:
    """The latest sample of each cgroup the groups are in (bounded by the groups: a cgroup
    that no group is in any more is forgotten at the next evaluation)."""

    def __init__(self) -> None:
        self.states: dict[int, PidsState] = {}

    def add(self, sample: PidsSample) -> None:
        known = self.states.get(sample.cgroup_id)
        changed = known is None or sample.refused != known.sample.refused or sample.path != known.sample.path
        self.states[sample.cgroup_id] = PidsState(sample, sample.ts if changed else known.refused_since)

    def leaders(self, groups: Iterable[Group], leaks: Mapping[GroupKey, Leak]) -> dict[GroupKey, PidsState]:
        """Per limit (the cgroup whose pids.max applies), the group holding most of it, with the limit's state."""
        best: dict[str, tuple[tuple[int, int, str], Group, PidsState]] = {}
        cgroups = set()
        for group in groups:
            cgroups.add(group.key.cgroup_id)
            state = self.states.get(group.key.cgroup_id)
            if state is None or state.sample.limit is None:
                continue
            leak = leaks.get(group.key)
            held = group.live + (len(leak.processes) if leak else 0)
            if held == 0:
                continue
            # The same order live and replayed: by size, then the lower spawner pid, then the signature.
            rank = (held, -group.spawner.pid, group.key.signature)
            limit = state.sample.path or str(group.key.cgroup_id)
            if limit not in best or rank > best[limit][0]:
                best[limit] = (rank, group, state)
        for cgroup_id in [c for c in self.states if c not in cgroups]:
            del self.states[cgroup_id]
        return {group.key: state for _, group, state in best.values()}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def check(rule: PidsRule, group: Group, context: Context) -> Hit | None:
    state = context.pids
    if state is None:
        return None
    sample = state.sample
    leak = context.leak
    orphans = leak.processes if leak else []
    if group.live + len(orphans) < rule.min_members or sample.limit is None:
        return None
    near = sample.current >= rule.share * sample.limit
    refusing = sample.refused > 0 and context.now - state.refused_since < rule.hold_s
    if not (near or refusing):
        return None
    live = sorted((p for p in group.members if p.alive), key=lambda p: (-p.start, -p.pid))
    share = f"{100 * sample.current / sample.limit:.0f}%" if sample.limit else "all"
    refused = f"{plural(sample.refused, 'fork')} refused by it" if sample.refused else "no fork refused yet"
    orphaned = f" and {plural(len(orphans), 'orphan')} charged to it" if orphans else ""
    return Hit(
        [p.pid for p in live] + [p.pid for p in orphans],
        f"{sample.current} of the {sample.limit} tasks allowed ({share}; threads count too), {refused}; "
        f"{group.live} of them its live children{orphaned}",
        CRITICAL if sample.refused else WARNING,
        pids_limit=sample,
    )


RULE = Rule("pids", PidsRule, check)
