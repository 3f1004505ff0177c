"""The report as data (the `--json` output) and as the human table; both from the facts
and the plan, never from each other.  Pure.  Every text the host gave (argv, comm,
container names, images, the plan's messages and commands built from them) reaches
the table through the text module."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from spawnwatch.text import command_line, container_line, human_bytes, human_duration, printable
from spawnwatch.report.facts import HOST, Facts, GroupFacts, ReportSettings
from spawnwatch.report.plan import plan


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
            "runtime": c.info.runtime,
            "pod": c.info.pod,
            "namespace": c.info.namespace,
            "pod_uid": c.info.pod_uid,
            "compose_project": c.info.compose_project,
            "compose_service": c.info.compose_service,
            "memory_bytes": c.memory.used if c.memory else None,
            "memory_percent": round(100 * c.memory.used / total, 1) if c.memory and total else None,
            "memory_limit_bytes": c.info.memory_limit or (c.memory.limit if c.memory else None),
            "pids_limit": c.pids.limit if c.pids else c.info.pids_limit,
            "pids_current": c.pids.current if c.pids else None,
            "pids_refused_forks": c.pids.refused if c.pids else None,
            "processes": c.processes,
            "restart_count": c.info.restart_count,
            "groups": groups_of(c.info.id),
        }
        for c in sorted(facts.containers, key=lambda c: -(c.memory.used if c.memory else 0))
    ]
    memory = facts.host_memory
    report: dict[str, Any] = {
        "kind": "report",
        "traced_seconds": facts.traced_seconds,
        "host": {
            "memory": {"total_bytes": memory.total, "used_bytes": memory.used, "free_bytes": memory.free, "cache_bytes": memory.cache},
            "processes": facts.host_processes,
            "groups": groups_of(HOST),
        },
        "containers": containers,
        "pods": _pods(containers),
        "docker": {
            "available": facts.docker_available,
            "dangling_images": list(facts.dangling_images),
            "dangling_images_bytes": sum(i["size_bytes"] for i in facts.dangling_images),
            "unused_volumes": list(facts.unused_volumes),
            "unused_volumes_bytes": sum(max(v["size_bytes"], 0) for v in facts.unused_volumes),
        },
    }
    ledger = facts.ledger
    report["ledger"] = (
        {"path": ledger.path, "writer_pid": ledger.writer_pid, "unusable": ledger.unusable} if ledger else None
    )
    report["leaked_containers"] = [
        {
            "id": leaked.info.id,
            "name": leaked.info.name,
            "image": leaked.info.image,
            "age_s": leaked.age_s,
            "memory_bytes": leaked.memory_bytes,
            "signature": leaked.signature,
            "spawner": {key: leaked.spawner.get(key) for key in ("pid", "ppid", "argv", "comm")},
        }
        for leaked in facts.leaked_containers
    ]
    report["actions"] = [action.as_record() for action in plan(facts)]
    return report


def _pods(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The containers of Kubernetes pods, by pod: what a pod's containers hold together."""
    by_pod: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in containers:
        if c["pod"] is not None:
            by_pod[(c["namespace"] or "", c["pod"], c["pod_uid"] or "")].append(c)
    pods = [
        {
            "namespace": namespace,
            "pod": pod,
            "pod_uid": pod_uid or None,
            "containers": sorted(c["name"] for c in members),
            "memory_bytes": sum(c["memory_bytes"] or 0 for c in members),
            "processes": sum(c["processes"] for c in members),
            "leaks": sum(len(g["leak"]) for c in members for g in c["groups"]),
        }
        for (namespace, pod, pod_uid), members in by_pod.items()
    ]
    return sorted(pods, key=lambda p: (-p["memory_bytes"], p["namespace"], p["pod"]))


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


def render(report: dict[str, Any]) -> str:
    out: list[str] = []
    memory = report["host"]["memory"]
    out.append(
        f"HOST MEMORY  total {human_bytes(memory['total_bytes'])}  used {human_bytes(memory['used_bytes'])}"
        f"  free {human_bytes(memory['free_bytes'])}  cache {human_bytes(memory['cache_bytes'])}"
    )
    if report["traced_seconds"]:
        out.append(f"(lineage traced for {human_duration(report['traced_seconds'])})")
    out.append("")
    header = (f"{'CONTAINER':<24} {'IMAGE':<28} {'MEMORY':>10} {'%HOST':>6} {'LIMIT':>10} {'PROCS':>6} {'RESTARTS':>8}"
              f" {'PIDS/LIMIT':>11} {'REFUSED':>7}")
    out.append(header)
    for c in report["containers"]:
        out.append(
            f"{printable(c['name'], 24):<24} {printable(c['image'] or '-', 28):<28} "
            f"{_bytes_or_dash(c['memory_bytes']):>10} "
            f"{(str(c['memory_percent']) + '%') if c['memory_percent'] is not None else '-':>6} "
            f"{_bytes_or_dash(c['memory_limit_bytes'], 'none'):>10} {c['processes']:>6} "
            f"{c['restart_count'] if c['restart_count'] is not None else '-':>8} "
            f"{_pids(c['pids_current'], c['pids_limit']):>11} "
            f"{c['pids_refused_forks'] if c['pids_refused_forks'] is not None else '-':>7}"
        )
        out.extend(_group_lines(c["groups"]))
    out.append(f"{'(host)':<24} {'-':<28} {'':>10} {'':>6} {'':>10} {report['host']['processes']:>6} {'':>8}")
    out.extend(_group_lines(report["host"]["groups"]))
    out.append("")
    if report.get("pods"):
        out.extend(_pod_lines(report["pods"]))
        out.append("")
    out.extend(_leaked_container_lines(report))
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
            out.append(f"{n:>3}. {printable(action['message'])}")
            if "compose" in action:
                out.extend("       " + printable(line) for line in action["compose"].splitlines())
                out.append(f"       or now: {printable(action['command'])}")
            elif "command" in action:
                out.append(f"       {printable(action['command'])}")
    return "\n".join(out)


def _group_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in groups:
        leak = "  LEAK: " + "; ".join(f"{f['rule']}: {printable(f['detail'])}" for f in g["leak"]) if g["leak"] else ""
        spawner = g["spawner"]
        lines.append(
            f"    {printable(g['signature'], 48):<48} x{g['processes']:<4} {human_bytes(g['rss_bytes']):>10}"
            f"  by {printable(spawner['comm'])} ({spawner['pid']}){leak}"
        )
    return lines


def _pod_lines(pods: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'POD (NAMESPACE/NAME)':<48} {'MEMORY':>10} {'PROCS':>6} {'LEAKS':>5}  CONTAINERS"]
    for pod in pods:
        name = printable(f"{pod['namespace']}/{pod['pod']}", 48)
        lines.append(f"{name:<48} {human_bytes(pod['memory_bytes']):>10} {pod['processes']:>6}"
                     f" {pod['leaks']:>5}  {printable(' '.join(pod['containers']), 60)}")
    return lines


def _pids(current: int | None, limit: int | None) -> str:
    """Tasks against the pids limit: `52/64`, `3/none`, or `-` when the cgroup could not be read."""
    if current is None:
        return f"-/{limit}" if limit is not None else "-"
    return f"{current}/{limit if limit is not None else 'none'}"


def _leaked_container_lines(report: dict[str, Any]) -> list[str]:
    """By host process and client signature, the containers its exited clients left running."""
    ledger = report["ledger"]
    start_watch = "start `spawnwatch watch` (or the service) to see containers leaked by exited clients"
    if ledger is None:
        return [f"LEAKED CONTAINERS  no ledger of `watch` here: {start_watch}"]
    if ledger["unusable"]:
        return [f"LEAKED CONTAINERS  the ledger {printable(ledger['path'])} cannot be used:"
                f" {printable(ledger['unusable'])}; {start_watch}"]
    source = f"(ledger {printable(ledger['path'])} of `watch` pid {ledger['writer_pid']})"
    if not report["leaked_containers"]:
        return [f"LEAKED CONTAINERS  none {source}"]
    by_client: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for leaked in report["leaked_containers"]:
        by_client[(leaked["spawner"]["pid"], leaked["signature"])].append(leaked)
    lines = [f"LEAKED CONTAINERS  {source}"]
    for (pid, signature), leaked in by_client.items():
        spawner = leaked[0]["spawner"]
        memory = sum(c["memory_bytes"] or 0 for c in leaked)
        lines.append(f"    {printable(signature, 48):<48} x{len(leaked):<4} {human_bytes(memory):>10}"
                     f"  by {printable(str(spawner['comm']))} ({pid})")
        lines.append(f"      host process: {command_line(spawner['argv'] or (), str(spawner['comm']), 100)}")
        lines.extend(f"      {container_line(c)}" for c in leaked)
    return lines


def _bytes_or_dash(n: int | None, none: str = "-") -> str:
    return human_bytes(n) if n is not None else none

