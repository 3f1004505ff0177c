"""`spawnwatch reap`: end a leaked group of identical children, keep everything else running."""

from __future__ import annotations

import shlex
from typing import Any

import click

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import DockerEngine
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.cli.common import EXIT_RUNTIME, emit_json, json_option, one_line_errors, require_root
from spawnwatch.config import ConfigError, load
from spawnwatch.events import ProcessInfo
from spawnwatch.reap import (
    Outcome,
    Plan,
    Selection,
    SelectionError,
    execute,
    flagged,
    plan,
    refusal,
    self_and_ancestors,
)
from spawnwatch.redact import Redactor
from spawnwatch.render import human_bytes
from spawnwatch.signature import Signer


@click.command("reap")
@click.option("--signature", required=True, help="The group's signature (as `watch`/`report` show it) or a command line that has it.")
@click.option("--spawner", type=click.IntRange(min=1), help="Pid of the parent the group's processes share.")
@click.option("--container", help="Only the group in this container (name or id prefix).")
@click.option("--keep", type=click.IntRange(min=0), default=1, show_default=True,
              help="Leave the newest N members running (a supervisor still talks to its newest child; 0 for orphans).")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="SECONDS", help="Wait this long after SIGTERM before SIGKILL.")
@click.option("--yes", is_flag=True, help="Really end them (without it: only show what would be ended).")
@click.option("--force", is_flag=True, help="End the group even though no rule of `watch` flags it now.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Signature rules (TOML), as for `watch`.")
@json_option
@one_line_errors
def command(
    signature: str,
    spawner: int | None,
    container: str | None,
    keep: int,
    grace: float,
    yes: bool,
    force: bool,
    config_path: str | None,
    as_json: bool,
) -> None:
    """End a leaked group: every member but the newest --keep, each with its whole
    subtree (the grandchildren it would orphan), and nothing else.

    Only a group that a rule of `watch` flags now (accumulating, orphaned or
    spawn_rate, judged from /proc with --config's thresholds) is ended, unless
    --force.  A group whose spawner is pid 1, this command or one of its
    ancestors is refused, even with --force.  A refused group is listed with
    the reason ("refused" in --json); with --yes the refusal is an error (exit 1)
    and nothing is signalled.

    Without --yes it only lists what it would end.  With --yes: SIGSTOP all (no new
    child escapes), SIGTERM, SIGKILL after --grace.  Each process is pinned by
    (pid, start time) first, so a pid reused meanwhile is never signalled.  Exits 1
    when a process survives SIGKILL; 3 with --yes when not root.

    \b
    Examples:
      sudo spawnwatch reap --signature 'npm exec magic' --spawner 4242
      sudo spawnwatch reap --signature 'npx -y @21st-dev/magic' --container metamcp --yes
      sudo spawnwatch reap --signature 'node magic' --spawner 4300 --keep 0 --yes   # orphans
    """
    if yes:
        require_root()  # it signals processes of other users, and a half-done freeze would leave some stopped
    try:
        config = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    signer = Signer(config.signature)
    redact = Redactor(config.redact)
    resolver = ContainerResolver(DockerEngine())
    container_id = None
    if container is not None:
        named = resolver.container(container)  # the engine also finds containers by name
        container_id = named.id if named else container

    def container_of(p: ProcessInfo) -> str | None:
        info = resolver.info(p.cgroup_id, p.pid)
        return info.id if info else None

    selection = Selection(signature=signature, spawner=spawner, container=container_id, keep=keep)
    snapshot = procfs.snapshot(redact)
    try:
        # --signature may be a command line as typed, secrets and all: signed redacted, as /proc's are.
        chosen = plan(snapshot.processes, selection, lambda p: signer(redact(p.argv), p.comm), container_of)
    except SelectionError as exc:
        raise click.ClickException(str(exc)) from exc
    refused = refusal(chosen, flagged(config, snapshot, resolver), self_and_ancestors(), force)
    if refused and yes:
        raise click.ClickException(f"refused: {refused}")
    rss = {t.process.pid: procfs.memory_of([t.process.pid]).rss_bytes for t in chosen.targets}
    record = _plan_record(chosen, rss, resolver, dry_run=not yes, refused=refused)
    if not yes:
        _show(record, as_json)
        return
    outcome = execute(chosen, grace=grace)
    record.update(_outcome_record(outcome))
    _show(record, as_json)
    if outcome.survived:
        raise SystemExit(EXIT_RUNTIME)


def _plan_record(
    chosen: Plan, rss: dict[int, int], resolver: ContainerResolver, dry_run: bool, refused: str | None
) -> dict[str, Any]:
    spawner = chosen.spawner
    info = resolver.container(chosen.container) if chosen.container else None
    return {
        "kind": "reap",
        "dry_run": dry_run,
        "refused": refused,
        "signature": chosen.signature,
        "spawner": {"pid": spawner.pid, "ppid": spawner.ppid, "argv": list(spawner.argv), "comm": spawner.comm}
        if spawner
        else None,
        "container": info.as_contract() if info else None,
        "kept": [p.pid for p in chosen.kept],
        "targets": [
            {
                "pid": t.process.pid,
                "member": t.member,
                "argv": list(t.process.argv),
                "comm": t.process.comm,
                "rss_bytes": rss.get(t.process.pid, 0),
            }
            for t in chosen.targets
        ],
        "rss_bytes": sum(rss.values()),
    }


def _outcome_record(outcome: Outcome) -> dict[str, Any]:
    return {
        "ended": [p.pid for p in outcome.ended],
        "killed": [p.pid for p in outcome.killed],
        "survived": [p.pid for p in outcome.survived],
        "gone": [p.pid for p in outcome.gone],
        "zombies": [p.pid for p in outcome.zombies],
        "spared": [p.pid for p in outcome.spared],
        "rss_freed_bytes": outcome.rss_freed,
    }


def _show(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(record)
        return
    spawner = record["spawner"]
    by = f"{spawner['comm']} (pid {spawner['pid']})" if spawner else "an unknown spawner"
    where = f" in container {record['container']['name']}" if record["container"] else ""
    members = sum(1 for t in record["targets"] if t["member"] == t["pid"])
    click.echo(
        f"group `{record['signature']}` of {by}{where}: ending {members} members "
        f"and {len(record['targets']) - members} descendants, keeping {len(record['kept'])}"
        + (f" (pids {', '.join(map(str, record['kept']))})" if record["kept"] else "")
    )
    click.echo(f"{'PID':>8} {'MEMBER':>8} {'RSS':>10}  COMMAND")
    for t in record["targets"]:
        command = shlex.join(t["argv"]) if t["argv"] else f"[{t['comm']}]"
        click.echo(f"{t['pid']:>8} {t['member']:>8} {human_bytes(t['rss_bytes']):>10}  {command[:100]}")
    if record["refused"]:
        click.echo(f"refused: {record['refused']}; nothing ended")
        return
    if record["dry_run"]:
        click.echo(f"would free about {human_bytes(record['rss_bytes'])} RSS; nothing ended: add --yes to end them")
        return
    click.echo(
        f"ended {len(record['ended'])} ({len(record['killed'])} needed SIGKILL), "
        f"freed {human_bytes(record['rss_freed_bytes'])} RSS"
    )
    if record["gone"]:
        click.echo(f"already gone before the end: {', '.join(map(str, record['gone']))}")
    if record["zombies"]:
        click.echo(f"zombies, dead already (only their parent can reap them): {', '.join(map(str, record['zombies']))}")
    if record["spared"]:
        click.echo(f"left alone, this command runs in them: {', '.join(map(str, record['spared']))}")
    if record["survived"]:
        click.echo(f"still alive after SIGKILL: {', '.join(map(str, record['survived']))}", err=True)
