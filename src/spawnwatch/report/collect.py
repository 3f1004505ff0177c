"""Collecting the facts of a host: /proc, cgroups, the Docker engine, and optionally a
live trace through the same lineage and detector as `watch`.

Groups and leaks are seeded from /proc (a parent that already holds many identical
children spawned one by one is a leak from the snapshot alone) and fed live events
for `--trace SECONDS`, which also charges orphans to the child that left them."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from typing import Any, Iterable, Sequence

from spawnwatch.adapters import ledger, procfs
from spawnwatch.adapters.cgroups import pids_of_process
from spawnwatch.adapters.engine import ContainerInfo, DockerEngine, Engines
from spawnwatch.adapters.memory import cgroup_memory, host_memory
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.config import Config
from spawnwatch.detect import RULES, Detector, Finding, Group, live_subtree
from spawnwatch.lineage import Lineage, Process
from spawnwatch.pipeline import judge
from spawnwatch.redact import Redactor
from spawnwatch.reap import container_leaks, survey
from spawnwatch.report.facts import (
    ContainerFacts, Facts, GroupFacts, LeakedContainerFacts, LedgerFacts, ReportSettings,
)


def collect(config: Config, trace_seconds: float | None = None, settings: ReportSettings = ReportSettings(),
            state_dir: str | None = None) -> Facts:
    """Every fact of the report (`trace_seconds` needs root and BPF); the leaked containers
    from the ledger `watch` keeps in `state_dir` (by default the config's)."""
    engine = DockerEngine()
    ledger_facts, leaked = _leaked_containers(engine, config.watch.state_dir if state_dir is None else state_dir)
    if trace_seconds:
        # watch's detection on watch's live loop: the same events, container lifecycle and pids samples
        from spawnwatch.consumers.watch import Detection
        from spawnwatch.runner import run_live
        from spawnwatch.sinks import Fanout

        detection = Detection(config, Fanout([]))
        run_live(config, detection, trace_seconds)
        pipeline = detection.pipeline
        findings = pipeline.findings(procfs.boottime_now())
    else:
        judged = judge(config, procfs.snapshot(Redactor(config.redact)), reparent_hint=procfs.parent_pid)
        pipeline, findings = judged.pipeline, judged.findings
    resolver = ContainerResolver(engine, host_root=config.runtimes.host_root,
                                 containerd_state=config.runtimes.containerd_state)
    facts = _facts(pipeline.lineage, pipeline.detector, findings, engine, resolver, settings, trace_seconds)
    return replace(facts, ledger=ledger_facts, leaked_containers=leaked)


def _leaked_containers(engine: DockerEngine, state_dir: str) -> tuple[LedgerFacts | None, tuple[LeakedContainerFacts, ...]]:
    """The containers the ledger's firing alerts list that still run, with their memory now."""
    if not state_dir:
        return None, ()
    try:
        kept = ledger.read(state_dir)
        leaks = container_leaks(kept.alerts) if kept else []
    except (ledger.LedgerError, KeyError, TypeError, ValueError) as exc:
        return LedgerFacts(ledger.ledger_path(state_dir), None, str(exc)), ()
    if kept is None:
        return None, ()
    facts = LedgerFacts(kept.path, kept.writer.pid, kept.stale)
    if kept.stale:
        return facts, ()
    now = time.time()
    leaked = tuple(
        LeakedContainerFacts(leak.signature, leak.spawner, state.info, state.memory_bytes, state.age_s(now))
        for leak in leaks
        for state in survey(leak, Engines(engine))
        if state.running and state.info is not None
    )
    return facts, leaked


def _facts(
    lineage: Lineage,
    detector: Detector,
    findings: list[Finding],
    engine: DockerEngine,
    resolver: ContainerResolver,
    settings: ReportSettings,
    trace_seconds: float | None,
) -> Facts:
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
        containers.append(ContainerFacts(info, cgroup_memory(pid) if pid else None, len(members),
                                         pids_of_process(pid) if pid else None))

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
    leaking: dict[Process, None] = {}  # once each, though two rules flag it (accumulating, spawn_rate)
    for finding in findings:
        reaped = RULES[finding.rule].reaped
        if reaped is not None:
            leaking.update(dict.fromkeys(reaped(group, leaked)))
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for proc in leaking:
        # /proc, not the lineage, for the parent: `reap` selects by what /proc says now.
        counts[(procfs.parent_pid(proc.pid) or proc.ppid, proc.signature)] += 1
    return tuple((ppid, signature, n) for (ppid, signature), n in counts.items())
