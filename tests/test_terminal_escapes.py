"""No escape sequence a local user puts in argv or comm reaches root's terminal raw.

A real process with hostile argv (OSC title, clear screen, concealed text, a CR that
rewrites its line, a bidi override, a C1 CSI) and a hostile comm leaks children that
exec with the same argv; `tree`, `report` and `watch` (the human alert view) run in
a real pseudo-terminal, and the bytes that reach it are read back.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from hostile_leak import hostile_leak
from spawnwatch.text import printable

HOSTILE_ARGV = ["\x1b]0;PWNED\x07", "\x1b[2J\x1b[H", "fake\rline", "\u202eevil", "\x1b[8mhidden", "\x9b31m"]
HOSTILE_COMM = b"\x1b[2Jspawn\x1b]0;"  # 15 bytes: comm's limit
LEAKED = 6

# What click.style writes (state, flagged tree lines): the only escapes allowed through.
OUR_STYLES = re.compile(rb"\x1b\[(?:0|1|31|32)m")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    with hostile_leak(tmp_path_factory.mktemp("hostile"), HOSTILE_ARGV, LEAKED, 0.03, comm=HOSTILE_COMM) as leak:
        yield leak


def in_a_terminal(args: list[str], until: bytes | None = None, timeout: float = 90.0) -> bytes:
    """Everything `spawnwatch ARGS` writes to a pseudo-terminal (stdout and stderr); with
    `until`, interrupted (as Ctrl-C would) once those bytes have come."""
    master, slave = pty.openpty()
    command = subprocess.Popen([sys.executable, "-m", "spawnwatch", *args], stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if until is not None and until in out:
                    command.send_signal(signal.SIGINT)
                    until = None
            elif command.poll() is not None:
                break
        else:
            command.kill()
            pytest.fail(f"spawnwatch {' '.join(args)} gave no {until!r} within {timeout} s: {out[-2000:]!r}")
    finally:
        os.close(master)
        command.wait(30)
    return out


def assert_nothing_raw_reached_the_terminal(out: bytes) -> None:
    text = OUR_STYLES.sub(b"", out).decode("utf-8", "replace").replace("\r\n", "\n")
    assert "PWNED" in text  # the hostile process was shown...
    raw = sorted({c for c in text if not (c.isprintable() or c == "\n")})
    assert not raw, f"raw control characters reached the terminal: {raw}"  # ...and nothing of it obeyed


@pytest.mark.root
def test_tree_shows_hostile_argv_and_comm_escaped(hostile):
    pid, config = hostile
    out = in_a_terminal(["tree", "--pid", str(pid), "--config", config])
    assert_nothing_raw_reached_the_terminal(out)
    assert re.search(rf"  x{LEAKED}  .*  !! accumulating".encode(), out)


@pytest.mark.root
def test_report_shows_hostile_argv_and_comm_escaped(hostile):
    pid, config = hostile
    out = in_a_terminal(["report", "--config", config])
    assert_nothing_raw_reached_the_terminal(out)
    assert f"by {printable(HOSTILE_COMM.decode())} ({pid})".encode() in out


@pytest.mark.root
def test_the_human_alert_view_of_watch_shows_hostile_argv_and_comm_escaped(hostile):
    """A live watch, interrupted once it has shown the alert: about 5 s (the probe's load)."""
    pid, config = hostile
    out = in_a_terminal(["watch", "--config", config, "--state-dir", ""], until=f"spawner  pid {pid} ".encode())
    assert_nothing_raw_reached_the_terminal(out)
    assert f"{printable(HOSTILE_COMM.decode())} (pid {pid}) keeps spawning".encode() in out
