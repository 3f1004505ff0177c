"""`spawnwatch report`: the investigation of a memory-hungry host, in one table.

Host memory; per container its memory (and share of the host), limit, process
count, restart count and largest groups of identical processes; Docker's dangling
images and unused volumes; and what to do: limits as a compose snippet, a `reap`
command for each leaked group, prunes.

Groups and leaks come from the same lineage and detector as `watch`: seeded from
/proc (a parent that already holds many identical children spawned one by one is
a leak from the snapshot alone), and fed live events for `--trace SECONDS`, which
also charges orphans to the child that left them.

`investigate()` collects (from /proc, cgroups, the Docker engine and optionally the
probe); `build()` turns the collected facts into the report dict (pure); `render()`
is the human view of that same dict.
"""

from __future__ import annotations

import math
import shlex
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import ContainerInfo, DockerEngine
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.adapters.memory import CgroupMemory, HostMemory, cgroup_memory, host_memory
from spawnwatch.config import Config
from spawnwatch.detect import Detector, Finding, Group, live_subtree
from spawnwatch.lineage import Lineage, Process
from spawnwatch.pipeline import Pipeline
from spawnwatch.redact import Redactor
from spawnwatch.reap import INIT
from spawnwatch.render import human_bytes

HOST = "host"  # the pseudo-container of processes outside any container
MEMORY_STEP = 256 * 1024 * 1024  # suggested limits are rounded up to this
MIN_PIDS_LIMIT = 64


@dataclass(frozen=True, slots=True)
class ReportSettings:
    groups_per_container: int = 5
    min_group: int = 2  # smaller "groups" are just processes
    max_pids: int = 20


# --- the facts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupFacts:
    signature: str
    spawner: Process
    container_id: str | None
    processes: int  # unreaped members
    zombies: int
    rss_bytes: int  # members' live subtrees (and orphans charged to them)
    pids: tuple[int, ...]
    findings: tuple[Finding, ...] = ()
    # The leaked processes as /proc sees them now, by (current parent, signature): the
    # groups `reap` can select.  For an orphan leak these are the orphans, not the members.
    reap_targets: tuple[tuple[int, str, int], ...] = ()  # (parent pid, signature, count)


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    info: ContainerInfo
    memory: CgroupMemory | None
    processes: int


@dataclass(frozen=True, slots=True)
class Facts:
    host_memory: HostMemory
    host_processes: int
    containers: tuple[ContainerFacts, ...]
    groups: tuple[GroupFacts, ...]
    docker_available: bool
    dangling_images: tuple[dict[str, Any], ...] = ()
    unused_volumes: tuple[dict[str, Any], ...] = ()
    traced_seconds: float | None = None


# --- collection -----------------------------------------------------------------------------


def investigate(
    config: Config, trace_seconds: float | None = None, settings: ReportSettings = ReportSettings()
) -> dict[str, Any]:
    """Collect everything and build the report (`trace_seconds` needs root and BPF)."""
    engine = DockerEngine()
    pipeline = Pipeline(config, reparent_hint=procfs.parent_pid)
    redact = Redactor(config.redact)
    if trace_seconds:
        from spawnwatch.session import Stop, live_batches, open_probe

        with open_probe(redact) as probe:  # attached before the snapshot: no process falls in between
            pipeline.feed(procfs.snapshot(redact))
            for batch in live_batches(probe, Stop(trace_seconds)):
                for event in batch:
                    pipeline.feed(event)
    else:
        pipeline.feed(procfs.snapshot(redact))
    findings = pipeline.detector.evaluate(procfs.boottime_now())
    facts = _facts(pipeline.lineage, pipeline.detector, findings, engine, settings, trace_seconds)
    return build(facts, settings)


def _facts(
    lineage: Lineage,
    detector: Detector,
    findings: list[Finding],
    engine: DockerEngine,
    settings: ReportSettings,
    trace_seconds: float | None,
) -> Facts:
    resolver = ContainerResolver(engine)
    container_of: dict[int, ContainerInfo | None] = {}

    def container(proc: Process) -> ContainerInfo | None:
        if proc.pid not in container_of:
            container_of[proc.pid] = resolver.info(proc.cgroup_id, proc.pid)
        return container_of[proc.pid]

    per_container: dict[str, list[Process]] = defaultdict(list)
    infos: dict[str, ContainerInfo] = {}
    host_processes = 0
    for proc in lineage.unreaped():
        info = container(proc)
        if info is None:
            host_processes += 1
        else:
            per_container[info.id].append(proc)
            infos[info.id] = info
    for info in engine.containers():
        infos.setdefault(info.id, info)

    containers = []
    for container_id, info in infos.items():
        members = per_container.get(container_id, [])
        pid = info.pid or (members[0].pid if members else None)
        containers.append(ContainerFacts(info, cgroup_memory(pid) if pid else None, len(members)))

    found_by_group: dict[Any, list[Finding]] = defaultdict(list)
    for finding in findings:
        found_by_group[finding.group.key].append(finding)
    orphans = detector.charged_orphans()
    groups = []
    for group in detector.groups.values():
        leaked = orphans.get(group.key, [])
        if len(group.members) + len(leaked) < settings.min_group:
            continue
        live = [p for m in group.members if m.alive for p in live_subtree(m)] + list(leaked)
        info = container(next(iter(group.members))) if group.members else container(leaked[0])
        group_findings = tuple(found_by_group.get(group.key, ()))
        groups.append(
            GroupFacts(
                signature=group.key.signature,
                spawner=group.spawner,
                container_id=info.id if info else None,
                processes=len(group.members),
                zombies=group.zombies,
                rss_bytes=procfs.memory_of(sorted({p.pid for p in live})).rss_bytes,
                pids=tuple(sorted(p.pid for p in group.members))[: settings.max_pids],
                findings=group_findings,
                reap_targets=_reap_targets(group, leaked, group_findings),
            )
        )
    return Facts(
        host_memory=host_memory(),
        host_processes=host_processes,
        containers=tuple(containers),
        groups=tuple(groups),
        docker_available=engine.available,
        dangling_images=tuple(engine.dangling_images()),
        unused_volumes=tuple(engine.unused_volumes()),
        traced_seconds=trace_seconds,
    )


def _reap_targets(group: Group, leaked: Sequence[Process], findings: Iterable[Finding]) -> tuple[tuple[int, str, int], ...]:
    rules = {f.rule for f in findings}
    leaking: list[Process] = []
    if rules & {"accumulating", "spawn_rate"}:
        leaking += [m for m in group.members if m.alive]
    if "orphaned" in rules:
        # only the tops of the orphaned subtrees: reap takes each one's subtree with it
        leaked_set = set(leaked)
        leaking += [p for p in leaked if p.parent not in leaked_set]
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for proc in leaking:
        # /proc, not the lineage, for the parent: `reap` selects by what /proc says now.
        counts[(procfs.parent_pid(proc.pid) or proc.ppid, proc.signature)] += 1
    return tuple((ppid, signature, n) for (ppid, signature), n in counts.items())


# --- the report -----------------------------------------------------------------------------


def build(facts: Facts, settings: ReportSettings = ReportSettings()) -> dict[str, Any]:
    """The report dict (the `--json` output; `render` shows the same)."""
    total = facts.host_memory.total
    by_container: dict[str, list[GroupFacts]] = defaultdict(list)
    for group in facts.groups:
        by_container[group.container_id or HOST].append(group)
    names = {c.info.id: c.info.name for c in facts.containers}

    def groups_of(key: str) -> list[dict[str, Any]]:
        # Every leak, then the largest healthy groups up to the cap: a busy host's big
        # pools, or more leaks than the cap, must never push a leak out of the list.
        ranked = sorted(by_container.get(key, ()),
                        key=lambda g: (not g.findings, -g.rss_bytes, -g.processes, g.signature))
        leaks = sum(1 for g in ranked if g.findings)
        shown = max(leaks, settings.groups_per_container)
        return [_group_record(g, names) for g in ranked[:shown]]

    containers = [
        {
            "id": c.info.id,
            "name": c.info.name,
            "image": c.info.image,
            "compose_project": c.info.compose_project,
            "compose_service": c.info.compose_service,
            "memory_bytes": c.memory.used if c.memory else None,
            "memory_percent": round(100 * c.memory.used / total, 1) if c.memory and total else None,
            "memory_limit_bytes": c.info.memory_limit or (c.memory.limit if c.memory else None),
            "pids_limit": c.info.pids_limit,
            "processes": c.processes,
            "restart_count": c.info.restart_count,
            "groups": groups_of(c.info.id),
        }
        for c in sorted(facts.containers, key=lambda c: -(c.memory.used if c.memory else 0))
    ]
    memory = facts.host_memory
    report = {
        "kind": "report",
        "traced_seconds": facts.traced_seconds,
        "host": {
            "memory": {"total_bytes": memory.total, "used_bytes": memory.used, "free_bytes": memory.free, "cache_bytes": memory.cache},
            "processes": facts.host_processes,
            "groups": groups_of(HOST),
        },
        "containers": containers,
        "docker": {
            "available": facts.docker_available,
            "dangling_images": list(facts.dangling_images),
            "dangling_images_bytes": sum(i["size_bytes"] for i in facts.dangling_images),
            "unused_volumes": list(facts.unused_volumes),
            "unused_volumes_bytes": sum(max(v["size_bytes"], 0) for v in facts.unused_volumes),
        },
    }
    report["actions"] = _actions(report)
    return report


def _group_record(group: GroupFacts, names: dict[str, str]) -> dict[str, Any]:
    spawner = group.spawner
    return {
        "signature": group.signature,
        "spawner": {"pid": spawner.pid, "ppid": spawner.ppid, "argv": list(spawner.argv), "comm": spawner.comm},
        "container": names.get(group.container_id or "", group.container_id),
        "processes": group.processes,
        "zombies": group.zombies,
        "rss_bytes": group.rss_bytes,
        "pids": list(group.pids),
        "leak": [{"rule": f.rule, "detail": f.detail, "orphans": f.orphans} for f in group.findings],
        "reap": [
            {"spawner": ppid, "signature": signature, "processes": n} for ppid, signature, n in group.reap_targets
        ],
    }


def _actions(report: dict[str, Any]) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    leaked_of: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))  # container -> (processes, rss)
    # One reap per selection: the orphans a trace charges to their supervisor are, in /proc,
    # also a group of their adopter's own.
    reaps: dict[tuple[int, str, str | None], dict[str, Any]] = {}
    for scope in [report["host"], *report["containers"]]:
        for group in scope["groups"]:
            for target in group["reap"]:
                if target["spawner"] == INIT:
                    continue  # `reap` never ends init's children: they are adopted by the whole system
                # An accumulating supervisor still talks to its newest child; orphans have nobody.
                keep = 1 if target["spawner"] == group["spawner"]["pid"] else 0
                key = (target["spawner"], target["signature"], scope.get("name"))
                known = reaps.setdefault(key, {"keep": keep, "processes": 0, "rss_bytes": 0})
                known["keep"] = min(known["keep"], keep)
                known["processes"] = max(known["processes"], target["processes"])
                known["rss_bytes"] = max(known["rss_bytes"], group["rss_bytes"])
            if group["leak"]:
                processes, rss = leaked_of[scope.get("id", HOST)]
                leaked_of[scope.get("id", HOST)] = (processes + group["processes"], rss + group["rss_bytes"])
            if any(f["rule"] == "zombie" for f in group["leak"]):
                spawner = group["spawner"]
                actions.append({
                    "kind": "zombies",
                    "message": (
                        f"{spawner['comm']} (pid {spawner['pid']}) never waits for its `{group['signature']}` "
                        f"children: {group['zombies']} zombies hold pids, not memory; only it (fixed or "
                        f"restarted) can clear them"
                    ),
                })
    actions[:0] = [_reap_action(*key, **found) for key, found in reaps.items()]
    for container in report["containers"]:
        action = _limit_action(container, *leaked_of[container["id"]])
        if action:
            actions.append(action)
    docker = report["docker"]
    if docker["dangling_images"]:
        actions.append({
            "kind": "prune_images",
            "message": f"{len(docker['dangling_images'])} dangling images take {human_bytes(docker['dangling_images_bytes'])}",
            "command": "docker image prune",
        })
    if docker["unused_volumes"]:
        actions.append({
            "kind": "prune_volumes",
            "message": (
                f"{len(docker['unused_volumes'])} volumes no container uses take "
                f"{human_bytes(docker['unused_volumes_bytes'])}; check that none holds data you need"
            ),
            "command": "docker volume prune",
        })
    return actions


def _reap_action(
    spawner: int, signature: str, container: str | None, keep: int, processes: int, rss_bytes: int
) -> dict[str, Any]:
    argv = ["spawnwatch", "reap", "--signature", signature, "--spawner", str(spawner)]
    if container:
        argv += ["--container", container]
    argv += ["--keep", str(keep)]
    return {
        "kind": "reap",
        "message": (
            f"end {processes - keep} leaked `{signature}` processes"
            f" (group RSS {human_bytes(rss_bytes)}); without --yes it only lists them"
        ),
        "command": shlex.join(argv),
    }


def _limit_action(container: dict[str, Any], leaked_processes: int, leaked_rss: int) -> dict[str, Any] | None:
    """Memory and pids limits sized on what the container needs without its leaks."""
    missing_memory = container["memory_limit_bytes"] is None
    missing_pids = container["pids_limit"] is None
    if not (missing_memory or missing_pids):
        return None
    baseline = max((container["memory_bytes"] or 0) - leaked_rss, 0)
    memory = max(MEMORY_STEP, math.ceil(2 * baseline / MEMORY_STEP) * MEMORY_STEP)
    processes = max(container["processes"] - leaked_processes, 1)
    pids = max(MIN_PIDS_LIMIT, 1 << math.ceil(math.log2(2 * processes)))
    service = container["compose_service"] or container["name"]
    lines = ["services:", f"  {service}:"]
    update = ["docker", "update"]
    if missing_memory:
        lines.append(f"    mem_limit: {memory // (1024 * 1024)}m")
        update += ["--memory", f"{memory // (1024 * 1024)}m", "--memory-swap", f"{memory // (1024 * 1024)}m"]
    if missing_pids:
        lines.append(f"    pids_limit: {pids}")
        update += ["--pids-limit", str(pids)]
    what = " or ".join(w for w, m in (("memory", missing_memory), ("pids", missing_pids)) if m)
    return {
        "kind": "limits",
        "container": container["name"],
        "message": (
            f"{container['name']} has no {what} limit, so a leak in it can take the whole host down; "
            f"sized at twice what it uses without its leaked groups:"
        ),
        "compose": "\n".join(lines),
        "command": shlex.join([*update, container["name"]]),
    }


# --- the human view ---------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    out: list[str] = []
    memory = report["host"]["memory"]
    out.append(
        f"HOST MEMORY  total {human_bytes(memory['total_bytes'])}  used {human_bytes(memory['used_bytes'])}"
        f"  free {human_bytes(memory['free_bytes'])}  cache {human_bytes(memory['cache_bytes'])}"
    )
    if report["traced_seconds"]:
        out.append(f"(lineage traced for {report['traced_seconds']:g} s)")
    out.append("")
    header = f"{'CONTAINER':<24} {'IMAGE':<28} {'MEMORY':>10} {'%HOST':>6} {'LIMIT':>10} {'PROCS':>6} {'RESTARTS':>8}"
    out.append(header)
    for c in report["containers"]:
        out.append(
            f"{_cut(c['name'], 24):<24} {_cut(c['image'] or '-', 28):<28} "
            f"{_bytes_or_dash(c['memory_bytes']):>10} "
            f"{(str(c['memory_percent']) + '%') if c['memory_percent'] is not None else '-':>6} "
            f"{_bytes_or_dash(c['memory_limit_bytes'], 'none'):>10} {c['processes']:>6} "
            f"{c['restart_count'] if c['restart_count'] is not None else '-':>8}"
        )
        out.extend(_group_lines(c["groups"]))
    out.append(f"{'(host)':<24} {'-':<28} {'':>10} {'':>6} {'':>10} {report['host']['processes']:>6} {'':>8}")
    out.extend(_group_lines(report["host"]["groups"]))
    docker = report["docker"]
    out.append("")
    if docker["available"]:
        out.append(
            f"DOCKER DISK  dangling images {len(docker['dangling_images'])} ({human_bytes(docker['dangling_images_bytes'])})"
            f"  unused volumes {len(docker['unused_volumes'])} ({human_bytes(docker['unused_volumes_bytes'])})"
        )
    else:
        out.append("DOCKER  no engine answers: containers are shown by id, without images or disk usage")
    if report["actions"]:
        out.append("")
        out.append("RECOMMENDED")
        for n, action in enumerate(report["actions"], 1):
            out.append(f"{n:>3}. {action['message']}")
            if "compose" in action:
                out.extend("       " + line for line in action["compose"].splitlines())
                out.append(f"       or now: {action['command']}")
            elif "command" in action:
                out.append(f"       {action['command']}")
    return "\n".join(out)


def _group_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in groups:
        leak = "  LEAK: " + "; ".join(f"{f['rule']}: {f['detail']}" for f in g["leak"]) if g["leak"] else ""
        spawner = g["spawner"]
        lines.append(
            f"    {_cut(g['signature'], 48):<48} x{g['processes']:<4} {human_bytes(g['rss_bytes']):>10}"
            f"  by {spawner['comm']} ({spawner['pid']}){leak}"
        )
    return lines


def _bytes_or_dash(n: int | None, none: str = "-") -> str:
    return human_bytes(n) if n is not None else none


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
