"""Alerts for a terminal: the same fields as the JSON record, laid out to be read.
Every field may hold what a local user put in argv or a container's name: each goes
through the text module, so none reaches the terminal as escapes it would obey."""

from __future__ import annotations

import time
from typing import TextIO

import click

from spawnwatch.records import ALERT
from spawnwatch.text import command_line, human_bytes, printable
from spawnwatch.sinks import Record

_STATE_STYLE = {"firing": {"fg": "red", "bold": True}, "resolved": {"fg": "green", "bold": True}}
MAX_ARGV_SHOWN = 120
MAX_SIGNATURE_SHOWN = 160
MAX_NAME_SHOWN = 80  # a container's name, id or image, as an engine answered


def render_alert(record: Record, color: bool = False) -> str:
    state = record["state"].upper()
    if color:
        state = click.style(f"{state:<8}", **_STATE_STYLE.get(record["state"], {}))
    else:
        state = f"{state:<8}"
    spawner = record["spawner"]
    argv = command_line(spawner["argv"], spawner["comm"], MAX_ARGV_SHOWN)
    indent = " " * 18
    lines = [
        f"{time.strftime('%H:%M:%S')} {state} {record['rule']:<13} {printable(record['signature'], MAX_SIGNATURE_SHOWN)}",
        f"{indent}spawner  pid {spawner['pid']} (ppid {spawner['ppid']}) {argv}",
    ]
    container = record.get("container")
    if container:
        # A recording made before runtimes were named says no runtime: only Docker's were then.
        where = (f"{printable(container.get('runtime') or 'docker', MAX_NAME_SHOWN)}"
                 f" {printable(container['id'], MAX_NAME_SHOWN)},"
                 f" image {printable(container['image'] or '-', MAX_NAME_SHOWN)}")
        if container.get("pod"):
            pod = f"{container.get('namespace')}/{container['pod']}"
            where = f"pod {printable(pod, MAX_NAME_SHOWN)}, {where}"
        lines.append(f"{indent}container {printable(container['name'], MAX_NAME_SHOWN)} ({where})")
    counts = "  ".join(f"{key} {record[key]}" for key in ("live", "spawned", "exited", "zombies", "orphans"))
    if record["rss_bytes"]:
        counts += f"  rss {human_bytes(record['rss_bytes'])}"
    lines.append(f"{indent}{counts}")
    lines.append(f"{indent}{printable(record['message'])}")
    if record["pids"]:
        lines.append(f"{indent}pids {' '.join(map(str, record['pids']))}")
    return "\n".join(lines)


class Human:
    """Alerts only; the session's own messages (ready, stats) go to stderr through the CLI."""

    def __init__(self, stream: TextIO, color: bool = False) -> None:
        self.stream = stream
        self.color = color

    def send(self, record: Record) -> None:
        if record.get("kind") != ALERT:
            return
        self.stream.write(render_alert(record, self.color) + "\n\n")
        self.stream.flush()

    def close(self) -> None:
        pass
