"""README's first command, `sudo make demo`, as a newcomer runs it: scripts/demo.sh with
the project's interpreter (`make demo` runs it after `make setup-demo`, which `make test`'s
set-up covers): watch attaches, catches `simulate accumulate`'s leak, the tree flags it,
and everything the simulation started is ended.  About 45 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.npm, pytest.mark.slow]


def test_the_demo_catches_the_leak_shows_the_tree_and_cleans_up(tmp_path) -> None:
    env = {**os.environ, "PY": sys.executable,
           # a user's log format must not keep the demo from seeing watch's ready line
           "SPAWNWATCH_LOG_FORMAT": "json",
           # the ledger of this watch in a directory of its own (`make demo` uses the default)
           "SPAWNWATCH_WATCH_STATE_DIR": str(tmp_path / "state")}
    demo = subprocess.Popen([str(REPO / "scripts" / "demo.sh")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        out, err = demo.communicate(timeout=300)
    finally:
        if demo.poll() is None:  # its own cleanup did not run: end what it started
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    said = out + err
    assert demo.returncode == 0, said
    assert "FIRING   accumulating  npm exec magic" in out, said
    assert "!! accumulating" in out, said  # the tree flags the collapsed children
    assert out.rstrip().endswith("done"), said
