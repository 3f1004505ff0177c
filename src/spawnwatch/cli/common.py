"""Flags and error handling shared by the subcommands."""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import replace
from typing import Any, Callable

import click

from spawnwatch.config import Config, ConfigError, load
from spawnwatch.redact import RedactRules
from spawnwatch.probe.preflight import check_root
from spawnwatch.sinks.jsonl import write_json_line
from spawnwatch.sinks.log import ROOT, LineFormatter, stderr_is_journal

EXIT_RUNTIME = 1
EXIT_CANNOT_TRACE = 3


class CannotTrace(click.ClickException):
    """Tracing is impossible on this host; the message says why and how to fix it."""

    exit_code = EXIT_CANNOT_TRACE


def require_root() -> None:
    """For what only root may do here (signal other users' processes): exit 3 with the fix."""
    check = check_root()
    if not check.ok:
        raise CannotTrace(check.problem())


def json_option(f: Callable) -> Callable:
    return click.option(
        "--json", "as_json", is_flag=True, help="One JSON object per line on stdout (same data as the human view)."
    )(f)


def duration_option(f: Callable) -> Callable:
    return click.option(
        "--duration",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Stop after this many seconds (default: until Ctrl-C or SIGTERM).",
    )(f)


def config_option(f: Callable) -> Callable:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="TOML file overriding the default thresholds, signature and redaction rules (see data/default-config.toml).",
    )(f)


def show_secrets_option(f: Callable) -> Callable:
    return click.option(
        "--show-secrets",
        is_flag=True,
        help="Keep argv as the processes got it: output and recordings then carry API keys, tokens and "
        "passwords in clear. By default they are replaced by <redacted> (the config's [redact] rules).",
    )(f)


def load_config(path: str | None, show_secrets: bool = False) -> Config:
    """The config (a bad one is a usage error); with `show_secrets`, rules that redact nothing."""
    try:
        config = load(path)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    return replace(config, redact=RedactRules()) if show_secrets else config


def ring_buffer_option(f: Callable) -> Callable:
    def check(_ctx: click.Context, param: click.Parameter, kb: int | None) -> int | None:
        from spawnwatch.probe import ProbeError, ring_buffer_pages

        if kb is not None:
            try:
                ring_buffer_pages(kb)
            except ProbeError as exc:
                raise click.BadParameter(str(exc), param=param) from exc
        return kb

    return click.option(
        "--ring-buffer-kb",
        type=click.IntRange(min=1),
        default=None,
        callback=check,
        metavar="KIB",
        help="Size of the kernel's event ring buffer, a power of two of pages (default 16384 KiB);"
        " raise it if `lost` grows under huge fork storms.",
    )(f)


def emit_json(record: dict[str, Any]) -> None:
    write_json_line(record, sys.stdout)


class _Stderr(logging.Handler):
    """Log lines on stderr, looked up at each line (so a test runner's capture sees them),
    keeping stdout machine-readable."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


LOGGER = logging.getLogger(ROOT)
_STDERR = _Stderr()
LOGGER.addHandler(_STDERR)
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False
_structured = False


def configure_logging(level: int, log_format: str, command: str) -> None:
    """`level` -q: warnings and errors only; default: what the session does; -vv: debugging
    details.  `log_format` text or json; journald priorities when stderr is the journal."""
    global _structured
    journal = stderr_is_journal(os.environ, _stderr_fd())
    _STDERR.setFormatter(LineFormatter(log_format, command, journal))
    LOGGER.setLevel(level)
    _structured = journal or log_format != "text"


def errors_are_log_lines() -> bool:
    """True when a failure must reach a log collector as a log line (json, the journal),
    not as click's bare `Error: ...` for a person at a terminal."""
    return _structured


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):  # a test runner's capture has no descriptor
        return -1


def log(message: str) -> None:
    """What the session does (info): on stderr, unless -q."""
    LOGGER.info(message)


def one_line_errors(f: Callable) -> Callable:
    """Turn expected failures into one line on stderr and a documented exit code, never a traceback."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (`| head`): not an error
        except OSError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
