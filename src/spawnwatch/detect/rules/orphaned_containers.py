"""orphaned_containers: containers left running by the `docker run` clients a process
started and then killed (detect/containers.py tells which), charged to that process.

A container started detached (-d), owned by compose, or stopped by its host is never
counted; neither is one whose client still runs (a host keeping its clients is
`accumulating`'s business)."""

from __future__ import annotations

from dataclasses import dataclass

from spawnwatch.detect.groups import Group
from spawnwatch.detect.rules.base import Context, Hit, Rule, severity
from spawnwatch.text import human_duration


@dataclass(frozen=True, slots=True)
class OrphanedContainers:
    enabled: bool = True
    min_containers: int = 8
    grace_s: float = 3.0
    match_window_s: float = 120.0
    critical_containers: int = 40


def check(rule: OrphanedContainers, group: Group, context: Context) -> Hit | None:
    containers = context.containers
    if not containers or len(containers) < rule.min_containers:
        return None
    images = ", ".join(sorted({f"`{c.image}`" for c in containers}))
    oldest = context.now - (containers[0].started_at or containers[0].created_at)
    ambiguous = sum(c.ambiguous for c in containers)
    return Hit(
        [],
        f"{len(containers)} containers of {images} still running after their clients exited, "
        f"the oldest for {human_duration(oldest)}"
        + (f"; {ambiguous} of them may be another client's (the engine does not say which client made it, "
           "or in which engine a client ran): reap leaves those" if ambiguous else ""),
        severity(len(containers), rule.critical_containers),
        containers=tuple(containers),
    )


RULE = Rule("orphaned_containers", OrphanedContainers, check)
