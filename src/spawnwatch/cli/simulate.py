"""`spawnwatch simulate`: the MCP child leak, reproduced on purpose."""

from __future__ import annotations

import sys

import click

from spawnwatch.cli.common import EXIT_RUNTIME, duration_option, emit_json, json_option, log, one_line_errors
from spawnwatch.simulate import (
    EXIT, KILL, MODES, SERVERS, SIMULATE, SPAWN, STOP, UP, Record, Settings, SimulationError, run,
)
from spawnwatch.text import human_duration


def describe(record: Record) -> str:
    """One human line per supervisor record."""
    kind = record["kind"]
    if kind == SIMULATE:
        return (
            f"supervisor pid {record['pid']}: {record['mode']}, servers {', '.join(record['servers'])}, "
            f"{record['memory_mb']} MiB each; Ctrl-C ends it and everything it started"
        )
    head = f"{record['time']:10.2f}  {kind:<5}"
    if kind == SPAWN:
        return f"{head}  pid {record['pid']}  {' '.join(record['argv'])}"
    if kind == UP:
        return (
            f"{head}  pid {record['pid']}  {record['server']} answered after {human_duration(record['startup_seconds'])}, "
            f"server pid {record['server_pid']}"
        )
    if kind == KILL:
        orphans = ", ".join(map(str, record["orphaned"]))
        return f"{head}  pid {record['pid']}  {record['signal']}, leaving its server {orphans} orphaned"
    if kind == EXIT:
        if not record["reaped"]:
            how = "never waited for: a zombie"
        elif record["signal"]:
            how = f"killed by {record['signal']}"
        else:
            how = f"exit status {record['code']}"
        return f"{head}  pid {record['pid']}  {record['server']}, {how}"
    if kind == STOP:
        return f"{head}  {record['reason']}: {record['spawned']} children spawned, ending them all"
    return f"{head}  {record.get('message', record)}"


@click.command("simulate")
@click.argument("mode", type=click.Choice(MODES))
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Seconds between spawns, counted from the first server's answer.  [default: 2]",
)
@click.option(
    "--servers",
    type=click.IntRange(1, len(SERVERS)),
    help=f"How many server types to cycle through: the first K of {', '.join(SERVERS)}.  [default: 1]",
)
@click.option(
    "--memory",
    "memory_mb",
    type=click.FloatRange(min=0),
    metavar="MB",
    help="MiB each server holds, every page touched so it shows in RSS.  [default: 20]",
)
@click.option(
    "--children",
    type=click.IntRange(min=1),
    help="Workers of the healthy modes.  [default: 8 for pool, 6 for respawn]",
)
@click.option(
    "--lifetime",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="zombie: children exit after this long; respawn: each lives 1 to 3 times this long.  [default: 1]",
)
@click.option(
    "--max",
    "max_spawns",
    type=click.IntRange(min=1),
    help="Leak modes: stop spawning after this many children (a safety cap).  [default: 40]",
)
@duration_option
@json_option
@one_line_errors
def command(
    mode: str,
    interval: float | None,
    servers: int | None,
    memory_mb: float | None,
    children: int | None,
    lifetime: float | None,
    max_spawns: int | None,
    duration: float | None,
    as_json: bool,
) -> None:
    """Run a leaky MCP supervisor that starts `npm exec` children of small stdio servers.

    Like MetaMCP, the supervisor (node) keeps each child's stdin/stdout pipes open.
    Nothing is fetched: the servers ship with spawnwatch (npm exec --package=file:...).

    \b
    Modes:
      accumulate  one child every INTERVAL, never ended: live children pile up
      orphan      one child every INTERVAL; when its session ends, 2 s after its server
                  answered, only the `npm exec` is SIGKILLed: the node server lives on,
                  reparented to this command
      zombie      one child every INTERVAL; each exits after LIFETIME and is never
                  waited for: zombies of the supervisor pile up
      pool        healthy: CHILDREN workers for the whole run
      respawn     healthy: CHILDREN workers, each replaced when it exits after 1-3 s

    On Ctrl-C, SIGTERM or the end of --duration everything started is ended, orphans
    included, and the zombies reaped.  With --json the first line is
    {"kind": "simulate", "pid": SUPERVISOR_PID, "mode": ...}, then one object per
    spawn, up, kill and exit, and {"kind": "stop", ...}.

    \b
    Examples:
      spawnwatch simulate accumulate                    # a child every 2 s, 20 MiB each
      spawnwatch simulate orphan --servers 3 --interval 1
      spawnwatch simulate zombie --duration 30 --json
      spawnwatch simulate pool --children 8 --memory 50
      spawnwatch simulate respawn --children 6
      sudo spawnwatch watch & spawnwatch simulate accumulate --duration 30
    """
    settings = Settings(
        mode,
        interval=interval,
        servers=servers,
        memory_mb=memory_mb,
        children=children,
        lifetime=lifetime,
        max_spawns=max_spawns,
        duration=duration,
    )

    def show(record: Record) -> None:
        if as_json:
            emit_json(record)
            sys.stdout.flush()  # a reader (a test, `watch` beside it) needs each spawn as it happens
        else:
            click.echo(describe(record))

    try:
        status = run(settings, show)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from exc
    if status != 0:
        raise click.exceptions.Exit(EXIT_RUNTIME)
    if not as_json:
        log("done: everything the supervisor started has ended")
