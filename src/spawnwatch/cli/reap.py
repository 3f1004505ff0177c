"""`spawnwatch reap`: end a leaked group of identical children, keep everything else running."""

from __future__ import annotations

import time

import click

from spawnwatch import reap
from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import DockerEngine, Engines
from spawnwatch.adapters.ledger import LedgerError, LedgerFile
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.cli.common import EXIT_RUNTIME, emit_json, json_option, one_line_errors, require_root
from spawnwatch.config import ConfigError, load
from spawnwatch.events import ProcessInfo
from spawnwatch.pipeline import judge
from spawnwatch.redact import Redactor
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
    when a process survives SIGKILL; 3 with --yes when not root.  Interrupted
    (Ctrl-C, SIGTERM, SIGHUP) or unable to hold every target, it resumes every
    process it stopped, ends none, and exits 1.

    Containers that exited `docker run` clients left running are no process's
    children: a `docker run IMAGE ...` signature and the host's pid select those
    that the ledger of a running `watch` lists in its firing orphaned_containers
    alert.  Each is checked with the engine again (still running, the very
    container, created before the alert listed it), killed, and removed unless it
    was started with --rm.  Refused, unless --force, when the ledger's `watch` has
    ended or the host's pid is no longer the process the alert named.  A container
    whose link to its client is ambiguous is left out.  Exits 1 when the engine
    cannot end one or cannot be reached.  The ledger is used only when its directory
    and file belong to this command's user and no other may write them.

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
    resolver = ContainerResolver(DockerEngine(), host_root=config.runtimes.host_root,
                                 containerd_state=config.runtimes.containerd_state)
    container_id = None
    if container is not None:
        named = resolver.container(container)  # the engine also finds containers by name
        container_id = named.id if named else container

    def container_of(p: ProcessInfo) -> str | None:
        info = resolver.info(p.cgroup_id, p.pid)
        return info.id if info else None

    selection = reap.Selection(signature=signature, spawner=spawner, container=container_id, keep=keep)

    def signature_of(p: ProcessInfo) -> str:
        # --signature may be a command line as typed, secrets and all: signed redacted, as /proc's are.
        return signer(redact(p.argv), p.comm)

    docker_client = reap.names_docker_client(selection, signature_of)
    kept, leaks = _ledger(config.watch.state_dir if state_dir is None else state_dir) if docker_client else (None, [])
    try:
        leak = reap.pick(leaks, selection, signature_of)
    except reap.SelectionError as exc:
        raise click.ClickException(str(exc)) from exc
    if kept is not None and leak is not None:
        _reap_containers(kept, leak, yes, force, as_json)
        return
    snapshot = procfs.snapshot(redact)
    try:
        chosen = reap.plan(snapshot.processes, selection, signature_of, container_of)
    except reap.SelectionError as exc:
        raise click.ClickException(str(exc) + (_without_containers(kept) if docker_client else "")) from exc
    refused = reap.refusal(chosen, reap.flagged(judge(config, snapshot, procfs.parent_pid, resolver)), reap.self_and_ancestors(), force)
    if refused and yes:
        raise click.ClickException(f"refused: {refused}")
    rss = {t.process.pid: procfs.memory_of([t.process.pid]).rss_bytes for t in chosen.targets}
    where = resolver.container(chosen.container) if chosen.container else None
    record = reap.plan_record(chosen, rss, where, dry_run=not yes, refused=refused)
    if not yes:
        _show(record, as_json)
        return
    try:
        outcome = reap.end_processes(chosen, grace=grace)
    except reap.Interrupted as exc:
        click.echo(f"interrupted by {exc.signal.name}: every process it had stopped was resumed; nothing ended",
                   err=True)
        raise SystemExit(EXIT_RUNTIME) from exc
    except reap.ReapError as exc:
        raise click.ClickException(f"{exc}; every process it had stopped was resumed; nothing ended") from exc
    record.update(reap.outcome_record(outcome))
    _show(record, as_json)
    if outcome.survived:
        raise SystemExit(EXIT_RUNTIME)


def _ledger(state_dir: str) -> tuple[LedgerFile | None, list[reap.ContainerLeak]]:
    """The ledger of `watch` in `state_dir` ("": none), and the leaked containers it lists."""
    try:
        return reap.ledger_leaks(state_dir)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise click.ClickException(f"{state_dir}: not a ledger's {reap.ORPHANED_CONTAINERS} alert: {exc!r}") from exc


def _without_containers(kept: LedgerFile | None) -> str:
    """For a `docker` client's signature, why no leaked container matched either."""
    if kept is None:
        return ("; the containers that exited `docker` clients leave running are known only to a running `watch`:"
                " no ledger of one here (start `spawnwatch watch` or the service, or give its --state-dir)")
    return f"; nor does a firing {reap.ORPHANED_CONTAINERS} alert in the ledger {kept.path}"


def _reap_containers(kept: LedgerFile, leak: reap.ContainerLeak, yes: bool, force: bool, as_json: bool) -> None:
    engines = Engines()
    refused = reap.container_refusal(leak, kept.stale, reap.spawner_is_alive(leak), reap.self_and_ancestors(), force)
    if refused and yes:
        raise click.ClickException(f"refused: {refused}")
    states = reap.survey(leak, engines)
    record = reap.containers_record(kept, leak, states, time.time(), dry_run=not yes, refused=refused)
    if not yes:
        _show(record, as_json)
        if any(state.unknown for state in states):
            raise SystemExit(EXIT_RUNTIME)
        return
    outcome = reap.end_containers(leak, engines)
    record.update(reap.containers_outcome_record(outcome))
    _show(record, as_json)
    if outcome.failed:
        raise SystemExit(EXIT_RUNTIME)


def _show(record: dict, as_json: bool) -> None:
    if as_json:
        emit_json(record)
        return
    out, err = reap.render(record)
    for line in out:
        click.echo(line)
    for line in err:
        click.echo(line, err=True)
