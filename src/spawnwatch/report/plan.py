"""What to do about a host, planned from its facts: one `reap` per leaked selection,
a word on zombies only their spawner can clear, limits sized on what a container needs
without its leaks, and Docker's prunes.  Pure."""

from __future__ import annotations

import math
import shlex
from collections import defaultdict
from dataclasses import dataclass

from spawnwatch.config import WatchSettings
from spawnwatch.reap import INIT
from spawnwatch.text import human_bytes
from spawnwatch.report.facts import ContainerFacts, Facts, GroupFacts, LeakedContainerFacts

MEMORY_STEP = 256 * 1024 * 1024  # suggested limits are rounded up to this
MIN_PIDS_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # reap, zombies, limits, prune_images, prune_volumes
    message: str
    command: str | None = None
    compose: str | None = None  # limits: the compose snippet
    container: str | None = None  # limits: the container's name

    def as_record(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


@dataclass(slots=True)
class _Reap:
    keep: int
    processes: int = 0
    rss_bytes: int = 0


def plan(facts: Facts) -> list[Action]:
    names = {c.info.id: c.info.name for c in facts.containers}
    reaps: dict[tuple[int, str, str | None], _Reap] = {}
    zombies: list[Action] = []
    leaked_of: dict[str | None, tuple[int, int]] = defaultdict(lambda: (0, 0))  # container -> (processes, rss)
    for group in facts.groups:
        container = names.get(group.container_id or "", group.container_id)
        for spawner, signature, processes in group.reap_targets:
            if spawner == INIT:
                continue  # `reap` never ends init's children: they are adopted by the whole system
            # An accumulating supervisor still talks to its newest child; orphans have nobody.
            keep = 1 if spawner == group.spawner.pid else 0
            # One reap per selection: the orphans a trace charges to their supervisor are, in /proc,
            # also a group of their adopter's own.
            known = reaps.setdefault((spawner, signature, container), _Reap(keep))
            known.keep = min(known.keep, keep)
            known.processes = max(known.processes, processes)
            known.rss_bytes = max(known.rss_bytes, group.rss_bytes)
        if group.findings:
            processes, rss = leaked_of[group.container_id]
            leaked_of[group.container_id] = (processes + group.processes, rss + group.rss_bytes)
        if any(f.rule == "zombie" for f in group.findings):
            zombies.append(_zombies_action(group))
    actions = [_reap_action(*key, found) for key, found in reaps.items()]
    actions += _container_reaps(facts)
    actions += zombies
    leaked_containers = {c.info.id for c in facts.leaked_containers}  # to be ended, not limited
    actions += [a for c in facts.containers
                if c.info.id not in leaked_containers and (a := _limit_action(c, *leaked_of[c.info.id]))]
    actions += _prunes(facts)
    return actions


def _zombies_action(group: GroupFacts) -> Action:
    spawner = group.spawner
    return Action("zombies", (
        f"{spawner.comm} (pid {spawner.pid}) never waits for its `{group.signature}` "
        f"children: {group.zombies} zombies hold pids, not memory; only it (fixed or "
        f"restarted) can clear them"
    ))


def _reap_action(spawner: int, signature: str, container: str | None, found: _Reap) -> Action:
    argv = ["spawnwatch", "reap", "--signature", signature, "--spawner", str(spawner)]
    if container:
        argv += ["--container", container]
    argv += ["--keep", str(found.keep)]
    return Action(
        "reap",
        f"end {found.processes - found.keep} leaked `{signature}` processes"
        f" (group RSS {human_bytes(found.rss_bytes)}); without --yes it only lists them",
        command=shlex.join(argv),
    )


def _container_reaps(facts: Facts) -> list[Action]:
    """One `reap` per host and client signature whose leaked containers still run."""
    by_client: dict[tuple[int, str], list[LeakedContainerFacts]] = defaultdict(list)
    for leaked in facts.leaked_containers:
        by_client[(leaked.spawner["pid"], leaked.signature)].append(leaked)
    actions = []
    for (spawner, signature), leaked in by_client.items():
        if spawner == INIT:
            continue  # `reap` refuses init's, as for processes
        argv = ["spawnwatch", "reap", "--signature", signature, "--spawner", str(spawner)]
        if facts.ledger is not None and facts.ledger.state_dir != WatchSettings().state_dir:
            argv += ["--state-dir", facts.ledger.state_dir]
        memory = sum(c.memory_bytes or 0 for c in leaked)
        actions.append(Action(
            "reap",
            f"end the {len(leaked)} container{'s' if len(leaked) != 1 else ''} that exited `{signature}` clients of "
            f"{leaked[0].spawner['comm']} (pid {spawner}) left running ({human_bytes(memory)});"
            f" without --yes it only lists them",
            command=shlex.join(argv),
        ))
    return actions


def _limit_action(container: ContainerFacts, leaked_processes: int, leaked_rss: int) -> Action | None:
    """Memory and pids limits sized on what the container needs without its leaks."""
    info = container.info
    missing_memory = info.memory_limit is None and (container.memory is None or container.memory.limit is None)
    missing_pids = (container.pids.limit if container.pids else info.pids_limit) is None  # a parent's counts too
    if not (missing_memory or missing_pids):
        return None
    used = container.memory.used if container.memory else 0
    baseline = max(used - leaked_rss, 0)
    memory = max(MEMORY_STEP, math.ceil(2 * baseline / MEMORY_STEP) * MEMORY_STEP)
    processes = max(container.processes - leaked_processes, 1)
    pids = max(MIN_PIDS_LIMIT, 1 << math.ceil(math.log2(2 * processes)))
    service = info.compose_service or info.name
    lines = ["services:", f"  {service}:"]
    update = ["docker", "update"]
    if missing_memory:
        lines.append(f"    mem_limit: {memory // (1024 * 1024)}m")
        update += ["--memory", f"{memory // (1024 * 1024)}m", "--memory-swap", f"{memory // (1024 * 1024)}m"]
    if missing_pids:
        lines.append(f"    pids_limit: {pids}")
        update += ["--pids-limit", str(pids)]
    what = " or ".join(w for w, m in (("memory", missing_memory), ("pids", missing_pids)) if m)
    return Action(
        "limits",
        f"{info.name} has no {what} limit, so a leak in it can take the whole host down; "
        f"sized at twice what it uses without its leaked groups:",
        command=shlex.join([*update, info.name]),
        compose="\n".join(lines),
        container=info.name,
    )


def _prunes(facts: Facts) -> list[Action]:
    actions = []
    if facts.dangling_images:
        size = sum(i["size_bytes"] for i in facts.dangling_images)
        actions.append(Action(
            "prune_images", f"{len(facts.dangling_images)} dangling images take {human_bytes(size)}",
            command="docker image prune",
        ))
    if facts.unused_volumes:
        size = sum(max(v["size_bytes"], 0) for v in facts.unused_volumes)
        actions.append(Action(
            "prune_volumes",
            f"{len(facts.unused_volumes)} volumes no container uses take {human_bytes(size)}; "
            f"check that none holds data you need",
            command="docker volume prune",
        ))
    return actions
