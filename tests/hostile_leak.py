"""A real process leaking children that run hostile argv (under a hostile comm, if asked),
for the tests that read back what reaches a terminal: tree, report, watch and top."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

CHILD = "import time\ntime.sleep(300)\n"
# The leak is there before any command starts: one evaluation on the /proc snapshot flags it.
CONFIG = "[rules.accumulating]\nmin_live = 2\nmin_gap_s = 0\nmin_growth = 1\n"


def spawner_source(children: int, gap_s: float, comm: bytes | None) -> str:
    rename = f"ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)  # PR_SET_NAME\n" if comm is not None else ""
    return f"""
import ctypes, os, sys, time
{rename}for _ in range({children}):
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, sys.argv[1], *sys.argv[2:]])
    time.sleep({gap_s})  # each child its own spawn moment
print("ready", flush=True)
time.sleep(300)
"""


@contextmanager
def hostile_leak(scratch: Path, argv: Sequence[str], children: int, gap_s: float,
                 comm: bytes | None = None) -> Iterator[tuple[int, str]]:
    """The spawner's pid once its children run, and the path of a config that flags them at
    once; the spawner and its children killed after."""
    (scratch / "spawner.py").write_text(spawner_source(children, gap_s, comm))
    (scratch / "child.py").write_text(CHILD)
    (scratch / "config.toml").write_text(CONFIG)
    spawner = subprocess.Popen([sys.executable, str(scratch / "spawner.py"), str(scratch / "child.py"), *argv],
                               stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert spawner.stdout.readline() == b"ready\n"
        yield spawner.pid, str(scratch / "config.toml")
    finally:
        os.killpg(spawner.pid, signal.SIGKILL)
        spawner.wait()
