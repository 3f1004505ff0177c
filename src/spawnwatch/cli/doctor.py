"""`spawnwatch doctor`: can tracing work on this host, and if not, what to do."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from spawnwatch.adapters import runtimes
from spawnwatch.adapters.cgroups import CgroupContainer, cgroup2_mount, parse_cgroup_path, populated, walk_cgroup2
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.cli.common import EXIT_CANNOT_TRACE, config_option, emit_json, json_option, load_config
from spawnwatch.config import RuntimeSettings
from spawnwatch.probe import preflight
from spawnwatch.probe.preflight import Check
from spawnwatch.supervise import DOCKER_EVENTS, internal_errors, last_failure

FOLLOW_WAIT_S = 5.0
CGROUPS_WALKED = 65536  # a node's cgroups: a few per container


@click.command("doctor")
@config_option
@json_option
def command(config_path: str | None, as_json: bool) -> None:
    """Check root, tracefs, tracepoints, bcc, kernel headers, BPF ring buffer, BTF, Docker,
    and every other container runtime found here (Podman, containerd, CRI-O).

    Prints each result and, for each failure, the fix.  Exits 0 only when
    tracing can work (BTF and the runtimes are optional); 3 otherwise.  A runtime
    is found by its state directory or by a running container's cgroup; its
    names resolve when its state on disk names its running containers.

    \b
    Examples:
      sudo spawnwatch doctor
      sudo spawnwatch doctor --json | jq 'select(.ok == false)'
    """
    results = [check() for check in preflight.DOCTOR]
    if any(r.name == "docker" and r.ok for r in results):
        results.append(check_docker_events())
    results.extend(check_runtimes(load_config(config_path).runtimes))
    for result in results:
        if as_json:
            emit_json({"kind": "check", **asdict(result)})
            continue
        mark = click.style("ok  ", fg="green") if result.ok else (
            click.style("FAIL", fg="red") if result.required else click.style("warn", fg="yellow")
        )
        click.echo(f"{mark} {result.name:<16} {result.detail}")
        if not result.ok and result.fix:
            click.echo(f"     {'':<16} fix: {result.fix}")
    can_trace = all(r.ok for r in results if r.required)
    if not as_json:
        click.echo("tracing can work here" if can_trace else "tracing cannot work here yet")
    raise SystemExit(0 if can_trace else EXIT_CANNOT_TRACE)


def check_docker_events(wait_s: float = FOLLOW_WAIT_S) -> Check:
    """Follow the engine's events for a moment, as `watch` does: a failure here is one `watch`
    would count in internal_errors (and restart from), said with its reason."""
    before = internal_errors()[DOCKER_EVENTS]
    deadline = time.monotonic() + wait_s
    with ContainerResolver() as resolver:
        while (not resolver.following.is_set() and internal_errors()[DOCKER_EVENTS] == before
               and time.monotonic() < deadline):
            time.sleep(0.05)
        following = resolver.following.is_set()
    if internal_errors()[DOCKER_EVENTS] != before:
        return Check("docker events", False, f"following the engine failed: {last_failure(DOCKER_EVENTS)}",
                     "watch restarts the follower and counts each failure (spawnwatch_internal_errors_total); "
                     "container names and the container rules may lag: report this with the engine's version",
                     required=False)
    if not following:
        return Check("docker events", False, f"the engine's event stream did not open within {wait_s:g} s",
                     "check that dockerd answers (docker events)", required=False)
    return Check("docker events", True, "the engine's containers and events can be followed", required=False)


def check_runtimes(settings: RuntimeSettings) -> list[Check]:
    """One check per runtime found besides Docker: whether its running containers are named."""
    checks = []
    for found in runtimes.survey(running_containers(), settings.host_root, settings.containerd_state):
        where = f"state in {found.where}" if found.where else "no state directory"
        if not found.containers:
            checks.append(Check(found.runtime, True, f"{where}; no container of it runs now", required=False))
        elif found.named == found.containers:
            checks.append(Check(found.runtime, True, f"{where}; its {found.containers} running containers "
                                f"are named from its state", required=False))
        else:
            checks.append(Check(
                found.runtime, False,
                f"{where}; {found.containers - found.named} of its {found.containers} running containers "
                f"have no name in its state (shown by id: {', '.join(i[:12] for i in found.unnamed)})",
                "let spawnwatch read the runtime's state ([runtimes] host_root and containerd_state in "
                "--config; in a pod, mount the host's directories read-only); see README: Container runtimes",
                required=False))
    return checks


def running_containers() -> list[CgroupContainer]:
    """The containers the cgroup tree shows a process in, each once."""
    mount = cgroup2_mount()
    refs: dict[str, CgroupContainer] = {}
    for _, path in walk_cgroup2(mount, CGROUPS_WALKED) if mount else ():
        ref = parse_cgroup_path(path)
        if ref is not None and populated(mount, path):
            refs.setdefault(ref.id, ref)  # a container's nested cgroups name it again
    return list(refs.values())
