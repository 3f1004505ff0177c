"""`spawnwatch doctor`: can tracing work on this host, and if not, what to do."""

from __future__ import annotations

from dataclasses import asdict

import click

from spawnwatch.cli.common import EXIT_CANNOT_TRACE, emit_json, json_option
from spawnwatch.probe import preflight


@click.command("doctor")
@json_option
def command(as_json: bool) -> None:
    """Check root, tracefs, tracepoints, bcc, kernel headers, BPF ring buffer, BTF, Docker.

    Prints each result and, for each failure, the fix.  Exits 0 only when
    tracing can work (BTF and Docker are optional); 3 otherwise.

    \b
    Examples:
      sudo spawnwatch doctor
      sudo spawnwatch doctor --json | jq 'select(.ok == false)'
    """
    results = [check() for check in preflight.DOCTOR]
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
