"""Log lines on stderr, one per record, each with its time, level and component:
`text` for a person (`2026-12-07T05:40:00.123Z info watch: ...`), `json` for a log
collector (`{"time", "level", "component", "msg"}`), as exporters' `--log.format` offers.
When stderr is the journal's stream, each line opens with its syslog priority (`<3>`:
error), sd-daemon(3)'s convention, so journald files it at that level.  Alerts never
come here: they are stdout's."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping

from spawnwatch.text import printable

FORMATS = ("text", "json")
ROOT = "spawnwatch"
# sd-daemon.h's SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def stderr_is_journal(environ: Mapping[str, str], stderr_fd: int) -> bool:
    """True when systemd connected stderr to the journal: it says so in JOURNAL_STREAM
    (`DEVICE:INODE` of that stream, systemd.exec(5)); once stderr is redirected the
    two differ, and the prefixes would be noise in a file or a pipe."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and device.isdigit() and inode.isdigit() and len(device) + len(inode) < 64):
        return False
    try:
        status = os.fstat(stderr_fd)
    except OSError:
        return False
    return (int(device), int(inode)) == (status.st_dev, status.st_ino)


class LineFormatter(logging.Formatter):
    """`component`: the subsystem a logger is named for (spawnwatch.adapters.engine:
    adapters.engine); the package's own logger speaks for the command that runs."""

    def __init__(self, log_format: str, command: str, journal: bool) -> None:
        super().__init__()
        if log_format not in FORMATS:
            raise ValueError(f"log format {log_format!r}: not one of {', '.join(FORMATS)}")
        self.log_format = log_format
        self.command = command
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}: {self.formatException(record.exc_info)}"
        component = self.command if record.name == ROOT else record.name.removeprefix(f"{ROOT}.")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        level = record.levelname.lower()
        if self.log_format == "json":
            line = json.dumps({"time": stamp, "level": level, "component": component, "msg": message})
        else:
            line = f"{stamp} {level} {component}: {printable(message)}"
        return f"<{PRIORITIES.get(record.levelno, 6)}>{line}" if self.journal else line
