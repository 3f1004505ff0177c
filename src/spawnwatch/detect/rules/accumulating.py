"""accumulating: identical launched children keep growing with no matching exits.

Only launched children count (`count_workers = false`): a server's workers (forked
without exec, or re-exec'd into the server's own program) come and stay with its
clients, and a pool that grows with its load is healthy.  Children of a spawner in
[detect] servers are exempt: they are per-connection by design, whatever they run; so
are init's (pid 1), which adopts every orphan on the host.

Growth alone does not make a leak: a spawner that ends or replaces its children manages
them (their exits are subtracted from the growth), and children that serve connections
their spawner passes them are a pool (detect.serving; their sockets are read only once the
rest of the rule holds).  Children gone from /proc before their exits reach the lineage are
no evidence: the last verdict stands until the next read."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, live_members, severity
from spawnwatch.text import human_duration


@dataclass(frozen=True, slots=True)
class Accumulating:
    enabled: bool = True
    min_live: int = 9
    min_gap_s: float = 1.0
    min_growth: int = 5
    count_workers: bool = False
    critical_live: int = 50


def check(rule: Accumulating, group: Group, context: Context) -> Hit | None:
    if group.exempt is not None:
        return None
    candidates = group.members if rule.count_workers else group.launched
    if len(candidates) < rule.min_live:
        return None
    live = sorted((p for p in candidates if p.alive), key=lambda p: (p.start, p.pid))
    if len(live) < rule.min_live:
        return None
    moments = spawn_moments([p.start for p in live], rule.min_gap_s)
    exits_since = context.book.exits_since_join(group, live[0])
    if moments - exits_since < rule.min_growth:
        return None
    if context.serving_of is not None and context.serving_of(group) is not None:
        return None  # a pool: its children take connections their spawner passes them
    span = live[-1].start - live[0].start
    kind = f"each a new program (`{group.program}`)" if group.launched else "workers counted (count_workers)"
    ended = f"{exits_since} ended meanwhile" if exits_since else "none ended"
    looked = ("; none serves connections of its spawner (no listening socket passed down, no connection "
              "that came in on its port)") if context.serving_of is not None else ""
    return Hit(
        [p.pid for p in live],
        f"{len(live)} live, {kind}, spawned one by one over {human_duration(span)}, {ended}{looked}",
        severity(len(live), rule.critical_live),
    )


def spawn_moments(starts: list[float], min_gap_s: float) -> int:
    """How many times spawning happened: starts closer than `min_gap_s` to the previous counted one are one burst."""
    moments = 0
    last = None
    for start in sorted(starts):
        if last is None or start - last >= min_gap_s:
            moments += 1
            last = start
    return moments


RULE = Rule("accumulating", Accumulating, check, reaped=live_members)
