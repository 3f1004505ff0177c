"""`spawnwatch top`: the groups that matter, live on the terminal."""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import click

from spawnwatch.cli.common import (
    CannotTrace, config_option, duration_option, load_config, one_line_errors, require_root, ring_buffer_option,
)
from spawnwatch.events import RecordError
from spawnwatch.probe import ProbeError
from spawnwatch.recording import RecordingError


@click.command("top")
@duration_option
@config_option
@click.option("--replay", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Play a recording (from `watch --record` or `trace --record`) through the view; no root needed.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              metavar="TIMES", help="With --replay: play the recording this many times faster than it was recorded.")
@click.option("--container", metavar="NAME", help="Start with only the groups of this container (name or id prefix).")
@ring_buffer_option
@one_line_errors
def command(duration: float | None, config_path: str | None, replay: str | None, speed: float,
            container: str | None, ring_buffer_kb: int | None) -> None:
    """Show the spawner groups that matter, live: an alert fires for them, they
    have several live children, or they grew in the last two minutes.

    One row per group (spawner, signature, container): rule state (quiet,
    warning, critical), live members with a sparkline of the last two
    minutes, growth over them, spawns in the last minute, RSS (when a rule
    measured it), container, the rules firing.  Sorted by growth.  It runs
    `watch`'s detection with the same config, and sends no alert anywhere.

    \b
    Keys:
      ↑/↓ or k/j   select a group
      s            sort by growth, live, spawn rate, RSS or state
      c            only one container's groups (each in turn, then all)
      t or Enter   the group's process tree
      r            what `reap` would end for the group (a dry run)
      Esc          back to the table
      q or Ctrl-C  quit

    \b
    Examples:
      sudo spawnwatch top
      sudo spawnwatch top --container metamcp
      spawnwatch top --replay leak.msgpack --speed 10
    """
    if replay and (duration is not None or ring_buffer_kb is not None):
        raise click.UsageError("--replay plays a finished recording: --duration and --ring-buffer-kb do not apply")
    if not replay and speed != 1.0:
        raise click.UsageError("--speed paces a --replay")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.UsageError("top draws on a terminal: run it in one (for a pipe or a file, use `watch --json`)")
    config = load_config(config_path)
    if not replay:
        require_root()
    from spawnwatch.adapters import procfs
    from spawnwatch.consumers.top import Keys, Top, View, replay as play, screen
    from spawnwatch.runner import run_live

    with ExitStack() as stack:
        keys = stack.enter_context(Keys(sys.stdin.fileno()))
        live = stack.enter_context(screen())
        view = View(live, os.uname().nodename, f"replay of {replay}" if replay else "live",
                    container)
        consumer = Top(config, view, keys, rss_of=None if replay else lambda pid: procfs.memory_of([pid]).rss_bytes)
        try:
            if replay:
                try:
                    play(config, replay, consumer, speed)
                except KeyboardInterrupt:
                    pass  # Ctrl-C quits a replay as `q` does
            else:
                run_live(config, consumer, duration, ring_buffer_kb=ring_buffer_kb)
        except ProbeError as exc:
            raise CannotTrace(str(exc)) from exc
        except (RecordingError, RecordError) as exc:
            raise click.ClickException(str(exc)) from exc
