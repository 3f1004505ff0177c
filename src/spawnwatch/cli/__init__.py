"""The `spawnwatch` command: one module per subcommand, each parsing, calling one library
function and rendering.

Exit codes (every subcommand):
  0  success (for `watch`: ran to the end; alerts are output, not errors)
  1  a runtime failure (the error is printed on one line to stderr)
  2  usage error (click's own)
  3  tracing cannot start here: not root, bcc or kernel headers missing, a tracepoint missing
"""

from __future__ import annotations

import importlib

import click

from spawnwatch import __version__

# (command name, module under spawnwatch.cli); imported lazily so `--help` stays fast
# and a command's heavy imports (bcc, docker) load only when it runs.
COMMANDS = {
    "trace": "trace",
    "doctor": "doctor",
    "simulate": "simulate",
    "report": "report",
    "reap": "reap",
    "watch": "watch",
    "tree": "tree",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"spawnwatch.cli.{module}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spawnwatch")
def main() -> None:
    """Catch processes that keep spawning identical children and never clean them up.

    \b
    Start here:
      spawnwatch doctor            can tracing work on this host?
      spawnwatch trace --json      raw fork/exec/exit/reap/oom events
    """
