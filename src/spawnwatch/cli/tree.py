"""`spawnwatch tree`: the live process tree, identical siblings collapsed, leaks flagged."""

from __future__ import annotations

import sys

import click

from spawnwatch import tree
from spawnwatch.cli.common import config_option, emit_json, json_option, load_config, one_line_errors
from spawnwatch.filters import container_matches
from spawnwatch.pipeline import judge
from spawnwatch.redact import Redactor


@click.command("tree")
@click.option("--pid", type=click.IntRange(min=1), help="Only this process and what is below it.")
@click.option("--container", metavar="NAME",
              help="Only the processes of this container (name or id prefix), or of a pod (POD or NAMESPACE/POD).")
@config_option
@json_option
@one_line_errors
def command(pid: int | None, container: str | None, config_path: str | None, as_json: bool) -> None:
    """Show the process tree with identical siblings collapsed into one line.

    \b
      └─ node supervisor.js accumulate  [pid 4242]  1.6 GiB
         └─ npm exec magic  x20  1.5 GiB  !! accumulating

    Memory is the RSS of a line's processes and everything below them.  Lines
    whose processes a rule of `watch` finds suspicious right now (from /proc
    alone: live children accumulated over time, unreaped zombies) are marked
    with `!!` and the rule.  Kernel threads are left out.  No root needed,
    though other users' processes may then show less.

    With --json: {"kind": "tree", "roots": [{"signature", "count", "pids",
    "rss_bytes", "rules", "container", "children": [...]}]}.
    """
    from spawnwatch.adapters import procfs
    from spawnwatch.adapters.resolver import ContainerResolver

    config = load_config(config_path)
    judged = judge(config, procfs.snapshot(Redactor(config.redact)), reparent_hint=procfs.parent_pid)
    pipeline, findings = judged.pipeline, judged.findings
    if pid is not None and pipeline.lineage.get(pid) is None:
        raise click.BadParameter(f"no process {pid}", param_hint="--pid")
    with ContainerResolver(host_root=config.runtimes.host_root,
                           containerd_state=config.runtimes.containerd_state) as resolver:
        if container is None:
            roots = [pid]
        else:
            # The container's top processes: those whose parent is outside it (its
            # init, and what `docker exec` started under containerd-shim).
            inside = {
                p.pid for p in pipeline.lineage.processes()
                if p.reaped_at is None and container_matches(resolver(p.cgroup_id, p.pid), container)
            }
            roots = sorted(p for p in inside if pipeline.lineage.get(p).ppid not in inside)
            if pid is not None:
                roots = [pid] if pid in inside else []
            if not roots:
                raise click.BadParameter(f"no process in container {container!r}", param_hint="--container")
        nodes = [
            node
            for root in roots
            for node in tree.build(
                pipeline.lineage,
                findings,
                pipeline.detector.charged_orphans(),
                rss_of=lambda p: procfs.memory_of([p]).rss_bytes,
                resolve_container=resolver,
                root_pid=root,
            )
        ]
    if as_json:
        emit_json({"kind": "tree", "roots": [node.to_record() for node in nodes]})
        return
    color = sys.stdout.isatty()
    for line in tree.render(nodes, lambda text, flagged: click.style(text, fg="red", bold=True) if flagged and color else text):
        click.echo(line)
