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
import logging

import click

from spawnwatch.cli.common import LOGGER, configure_logging, errors_are_log_lines
from spawnwatch.sinks.log import FORMATS

ENV_PREFIX = "SPAWNWATCH"

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
    "top": "top",
    "completion": "completion",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        command = importlib.import_module(f"spawnwatch.cli.{module}").command
        name_env_after_flags(command, f"{ENV_PREFIX}_{name.upper()}")
        return command

    def invoke(self, ctx: click.Context) -> object:
        """A failure as one log line when logs go to a collector (json, the journal); click's
        `Error: ...` otherwise.  Same exit code either way."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not errors_are_log_lines():
                raise
            LOGGER.error(exc.format_message())
            raise click.exceptions.Exit(exc.exit_code) from exc


def name_env_after_flags(command: click.Command, prefix: str) -> None:
    """Each option's environment variable is named after its long flag (--json:
    SPAWNWATCH_WATCH_JSON), not after the Python name click would use (as_json),
    and --help shows it."""
    for param in command.params:
        long = next((o for o in param.opts if o.startswith("--")), None)
        if isinstance(param, click.Option) and long and param.envvar is None:
            param.envvar = f"{prefix}_{long[2:].replace('-', '_').upper()}"
            param.show_envvar = True


def show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from spawnwatch.adapters.build import version_lines

    click.echo("\n".join(version_lines()))
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=show_version,
              help="Show the version, the commit it was built from, bcc's version and the kernel's, and exit.")
@click.option("-v", "--verbose", count=True, help="Say more on stderr (-vv: debugging details).")
@click.option("-q", "--quiet", is_flag=True, help="Say only warnings and errors on stderr.")
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              envvar=f"{ENV_PREFIX}_LOG_FORMAT", show_envvar=True,
              help="Log lines on stderr as text or JSON, each with time, level and component "
              "(alerts stay on stdout). Under systemd, lines carry journald priorities.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, log_format: str) -> None:
    """Catch processes that keep spawning identical children and never clean them up.

    Every option can also come from the environment, as
    SPAWNWATCH_<COMMAND>_<OPTION> (SPAWNWATCH_WATCH_METRICS_ADDRESS=:9464,
    SPAWNWATCH_WATCH_JSON=1); the command line wins.

    \b
    Start here:
      spawnwatch doctor            can tracing work on this host?
      spawnwatch trace --json      raw fork/exec/exit/reap/oom events
      spawnwatch watch             alerts on leaking spawners
      spawnwatch top               the leaking groups, live on the terminal
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    configure_logging(level, log_format, ctx.invoked_subcommand or "spawnwatch")
