"""Alerts for a terminal: the same fields as the JSON record, laid out to be read."""

from __future__ import annotations

import time
from typing import TextIO

import click

from spawnwatch.text import human_bytes
from spawnwatch.sinks import Record

_STATE_STYLE = {"firing": {"fg": "red", "bold": True}, "resolved": {"fg": "green", "bold": True}}
MAX_ARGV_SHOWN = 120


def render_alert(record: Record, color: bool = False) -> str:
    state = record["state"].upper()
    if color:
        state = click.style(f"{state:<8}", **_STATE_STYLE.get(record["state"], {}))
    else:
        state = f"{state:<8}"
    spawner = record["spawner"]
    argv = " ".join(spawner["argv"]) or f"[{spawner['comm']}]"
    if len(argv) > MAX_ARGV_SHOWN:
        argv = argv[: MAX_ARGV_SHOWN - 1] + "…"
    indent = " " * 18
    lines = [
        f"{time.strftime('%H:%M:%S')} {state} {record['rule']:<13} {record['signature']}",
        f"{indent}spawner  pid {spawner['pid']} (ppid {spawner['ppid']}) {argv}",
    ]
    container = record.get("container")
    if container:
        # A recording made before runtimes were named says no runtime: only Docker's were then.
        where = f"{container.get('runtime') or 'docker'} {container['id']}, image {container['image']}"
        if container.get("pod"):
            where = f"pod {container.get('namespace')}/{container['pod']}, {where}"
        lines.append(f"{indent}container {container['name']} ({where})")
    counts = "  ".join(f"{key} {record[key]}" for key in ("live", "spawned", "exited", "zombies", "orphans"))
    if record["rss_bytes"]:
        counts += f"  rss {human_bytes(record['rss_bytes'])}"
    lines.append(f"{indent}{counts}")
    lines.append(f"{indent}{record['message']}")
    if record["pids"]:
        lines.append(f"{indent}pids {' '.join(map(str, record['pids']))}")
    return "\n".join(lines)


class Human:
    """Alerts only; the session's own messages (ready, stats) go to stderr through the CLI."""

    def __init__(self, stream: TextIO, color: bool = False) -> None:
        self.stream = stream
        self.color = color

    def send(self, record: Record) -> None:
        if record.get("kind") != "alert":
            return
        self.stream.write(render_alert(record, self.color) + "\n\n")
        self.stream.flush()

    def close(self) -> None:
        pass
