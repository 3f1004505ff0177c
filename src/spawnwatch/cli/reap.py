"""`spawnwatch reap`: end a leaked group of identical children, keep everything else running."""

from __future__ import annotations

import shlex
import time
from typing import Any

import click

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import SHORT_ID, DockerEngine
from spawnwatch.adapters.ledger import LedgerError, LedgerFile
from spawnwatch.adapters.ledger import read as read_ledger
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
from spawnwatch.reap_containers import (
    ORPHANED_CONTAINERS,
    ContainerLeak,
    ContainerOutcome,
    ContainerState,
    container_leaks,
    names_docker_client,
    pick,
    survey,
)
from spawnwatch.reap_containers import execute as end_containers
from spawnwatch.reap_containers import refusal as containers_refusal
from spawnwatch.redact import Redactor
from spawnwatch.text import human_age, human_bytes, printable
from spawnwatch.signature import Signer


@click.command("reap")
@click.option("--signature", required=True, help="The group's signature (as `watch`/`report` show it) or a command line that has it.")
@click.option("--spawner", type=click.IntRange(min=1), help="Pid of the parent the group's processes share.")
@click.option("--container", help="Only the group in this container (name or id prefix).")
@click.option("--keep", type=click.IntRange(min=0), default=1, show_default=True,
              help="Leave the newest N members running (a supervisor still talks to its newest child; 0 for orphans)."
                   " Does not apply to containers: every one the alert lists is ended.")
@click.option("--grace", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="SECONDS",
              help="Wait this long after SIGTERM before SIGKILL (containers are killed at once: nobody talks to them).")
@click.option("--yes", is_flag=True, help="Really end them (without it: only show what would be ended).")
@click.option("--force", is_flag=True, help="End the group even though no rule of `watch` flags it now.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Signature rules (TOML), as for `watch`.")
@click.option("--state-dir", metavar="DIR",
              help="Where `watch` keeps its ledger of firing alerts (default: the config's [watch] state_dir).")
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
    state_dir: str | None,
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

    Containers that exited `docker run` clients left running are no process's
    children: a `docker run IMAGE ...` signature and the host's pid select those
    that the ledger of a running `watch` lists in its firing orphaned_containers
    alert.  Each is checked with the engine again (still running, the very
    container, created before the alert listed it), killed, and removed unless it
    was started with --rm.  Refused, unless --force, when the ledger's `watch` has
    ended or the host's pid is no longer the process the alert named.  Exits 1
    when the engine cannot end one.

    \b
    Examples:
      sudo spawnwatch reap --signature 'npm exec magic' --spawner 4242
      sudo spawnwatch reap --signature 'npx -y @21st-dev/magic' --container metamcp --yes
      sudo spawnwatch reap --signature 'node magic' --spawner 4300 --keep 0 --yes   # orphans
      sudo spawnwatch reap --signature 'docker run ghcr.io/github/github-mcp-server stdio' --spawner 4242
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

    def signature_of(p: ProcessInfo) -> str:
        # --signature may be a command line as typed, secrets and all: signed redacted, as /proc's are.
        return signer(redact(p.argv), p.comm)

    docker_client = names_docker_client(selection, signature_of)
    kept, leaks = _ledger(config.watch.state_dir if state_dir is None else state_dir) if docker_client else (None, [])
    try:
        leak = pick(leaks, selection, signature_of)
    except SelectionError as exc:
        raise click.ClickException(str(exc)) from exc
    if kept is not None and leak is not None:
        _reap_containers(kept, leak, yes, force, as_json)
        return
    snapshot = procfs.snapshot(redact)
    try:
        chosen = plan(snapshot.processes, selection, signature_of, container_of)
    except SelectionError as exc:
        raise click.ClickException(str(exc) + (_without_containers(kept) if docker_client else "")) from exc
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


def _ledger(state_dir: str) -> tuple[LedgerFile | None, list[ContainerLeak]]:
    """The ledger of `watch` in `state_dir` ("": none), and the leaked containers it lists."""
    if not state_dir:
        return None, []
    try:
        kept = read_ledger(state_dir)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc
    if kept is None:
        return None, []
    try:
        return kept, container_leaks(kept.alerts)
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(f"{kept.path}: not a ledger's {ORPHANED_CONTAINERS} alert: {exc!r}") from exc


def _without_containers(kept: LedgerFile | None) -> str:
    """For a `docker` client's signature, why no leaked container matched either."""
    if kept is None:
        return ("; the containers that exited `docker` clients leave running are known only to a running `watch`:"
                " no ledger of one here (start `spawnwatch watch` or the service, or give its --state-dir)")
    return f"; nor does a firing {ORPHANED_CONTAINERS} alert in the ledger {kept.path}"


def _reap_containers(kept: LedgerFile, leak: ContainerLeak, yes: bool, force: bool, as_json: bool) -> None:
    engine = DockerEngine()
    refused = containers_refusal(leak, kept.stale, leak.spawner_is_alive(), self_and_ancestors(), force)
    if refused and yes:
        raise click.ClickException(f"refused: {refused}")
    record = _containers_record(kept, leak, survey(leak, engine), time.time(), dry_run=not yes, refused=refused)
    if not yes:
        _show_containers(record, as_json)
        return
    outcome = end_containers(leak, engine)
    record.update(_containers_outcome_record(outcome))
    _show_containers(record, as_json)
    if outcome.failed:
        raise SystemExit(EXIT_RUNTIME)


def _containers_record(kept: LedgerFile, leak: ContainerLeak, states: list[ContainerState], now: float,
                       dry_run: bool, refused: str | None) -> dict[str, Any]:
    spawner = leak.spawner
    return {
        "kind": "reap",
        "dry_run": dry_run,
        "refused": refused,
        "signature": leak.signature,
        "spawner": {key: spawner.get(key) for key in ("pid", "ppid", "argv", "comm")},
        "container": leak.container,
        "ledger": {"path": kept.path, "writer_pid": kept.writer.pid, "stale": kept.stale},
        "containers": [
            {
                "id": state.listed.id,
                "name": state.info.name if state.info else state.listed.name,  # the engine's word, while it has one
                "image": state.info.image if state.info else state.listed.image,
                "running": state.running,
                "age_s": state.age_s(now),
                "memory_bytes": state.memory_bytes,
            }
            for state in states
        ],
        "memory_bytes": sum(state.memory_bytes or 0 for state in states),
    }


def _containers_outcome_record(outcome: ContainerOutcome) -> dict[str, Any]:
    return {
        "ended": [c.id for c in outcome.ended],
        "gone": [c.id for c in outcome.gone],
        **{name: [{"id": c.id, "reason": why} for c, why in getattr(outcome, name)]
           for name in ("skipped", "failed", "unremoved")},
        "memory_freed_bytes": outcome.memory_freed,
    }


def _show_containers(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(record)
        return
    spawner = record["spawner"]
    running = [c for c in record["containers"] if c["running"]]
    click.echo(
        f"containers left by `{record['signature']}` clients of {spawner['comm']} (pid {spawner['pid']}):"
        f" ending {len(running)} of the {_containers(len(record['containers']))} the ledger lists"
        f" ({record['ledger']['path']}, of `watch` pid {record['ledger']['writer_pid']})"
    )
    click.echo(f"{'CONTAINER':<12}  {'NAME':<28} {'IMAGE':<32} {'AGE':>5} {'MEMORY':>10}")
    for c in record["containers"]:
        age = human_age(c["age_s"]) if c["age_s"] is not None else "-"
        memory = human_bytes(c["memory_bytes"]) if c["memory_bytes"] is not None else "-"
        state = "" if c["running"] else "  (not running)"
        click.echo(f"{c['id'][:SHORT_ID]:<12}  {printable(c['name'])[:28]:<28} {printable(c['image'] or '-')[:32]:<32}"
                   f" {age:>5} {memory:>10}{state}")
    if record["refused"]:
        click.echo(f"refused: {record['refused']}; nothing ended")
        return
    if record["dry_run"]:
        click.echo(f"would free about {human_bytes(record['memory_bytes'])}; nothing ended: add --yes to end them")
        return
    click.echo(f"ended {_containers(len(record['ended']))}, freed {human_bytes(record['memory_freed_bytes'])}")
    if record["gone"]:
        click.echo(f"already stopped or removed: {', '.join(i[:SHORT_ID] for i in record['gone'])}")
    for name, what in (("skipped", "left alone"), ("unremoved", "killed, not removed"), ("failed", "not ended")):
        for c in record[name]:
            click.echo(f"{what}: {c['id'][:SHORT_ID]}: {c['reason']}", err=name == "failed")


def _containers(n: int) -> str:
    return f"{n} container{'s' if n != 1 else ''}"


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
