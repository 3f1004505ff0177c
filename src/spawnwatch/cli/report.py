"""`spawnwatch report`: where the memory went, per container, and what to do about it."""

from __future__ import annotations

import click

from spawnwatch.cli.common import CannotTrace, emit_json, json_option, one_line_errors
from spawnwatch.config import ConfigError, load
from spawnwatch.probe import ProbeError
from spawnwatch.report import investigate, render


@click.command("report")
@click.option(
    "--trace",
    "trace_seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Also trace live events for SECONDS first (needs root): orphans are charged to the child that left them.",
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Thresholds and signature rules (TOML).")
@click.option("--state-dir", metavar="DIR",
              help="Where `watch` keeps its ledger of firing alerts (default: the config's [watch] state_dir).")
@json_option
@one_line_errors
def command(trace_seconds: float | None, config_path: str | None, state_dir: str | None, as_json: bool) -> None:
    """Host memory; per container memory, limit, processes, restarts and its largest
    groups of identical processes; dangling images and unused volumes; the
    containers exited `docker run` clients left running; and the recommended
    actions (limits as a compose snippet, `reap` commands, prunes).

    Works from /proc and the Docker engine (if one answers) without tracing; the
    same detector as `watch` decides which groups are leaks.  Leaked containers
    are no process's children: they are known only to a running `watch`, from
    the ledger it keeps (their memory is read now).  With --json the output is
    one object, the very data of the table.

    \b
    Examples:
      sudo spawnwatch report
      sudo spawnwatch report --trace 10
      spawnwatch report --json | jq '.containers[] | {name, memory_bytes}'
    """
    try:
        config = load(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        report = investigate(config, trace_seconds=trace_seconds, state_dir=state_dir)
    except ProbeError as exc:
        raise CannotTrace(str(exc)) from exc
    if as_json:
        emit_json(report)
    else:
        click.echo(render(report))
