"""Hostile argv under the real kernel: one `watch --json --record` while a local user execs
what it likes, and a leak runs beside it.

- an exec with 1 MiB of argv, one with invalid UTF-8, one with terminal escapes, one whose
  argument held a NUL (the kernel ends a word there: no NUL reaches spawnwatch);
- a flood: tests/hostile_flood.c execs itself 10,000 times, each with eight distinct ~500-byte
  arguments of the shapes that made redaction quadratic (a name search restarting inside a
  run of letters, a URL scheme without its `@`): the kernel side reads 4 KiB of each.

The leak (tests/secret_leak.py, a supervisor that never waits for its children) must still
raise its alert, and every flood exec must reach the recording or be counted lost.  Before
redaction was linear, each flood exec cost the consumer ~0.2 s: the alert never came.
About 60 s here, on a machine shared with other test runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import wait_for
from live import LiveCommand
from spawnwatch.events import replay, to_record
from spawnwatch.recording import read_records

pytestmark = [pytest.mark.root, pytest.mark.slow]

LEAK = Path(__file__).resolve().parent / "secret_leak.py"
CHILDREN = 12
FLOOD = 10_000
MARK = "hostile-flood-"
FLOOD_SOURCE = Path(__file__).resolve().parent / "hostile_flood.c"


def execs_of(records: list[dict], first_word: str) -> list[dict]:
    """The execs whose first argument starts with `first_word`: told on their own, or with
    a short life (watch's exec_brief)."""
    return [r for r in records if r["kind"] in ("exec", "exec_brief") and len(r["argv"]) > 1
            and r["argv"][1].startswith(first_word)]


def test_hostile_argv_and_a_flood_of_long_execs_neither_blind_watch_nor_hide_a_leak(tmp_path):
    flood_binary = tmp_path / "hostile_flood"
    subprocess.run(["gcc", "-O2", "-static", "-o", str(flood_binary), str(FLOOD_SOURCE)], check=True)
    recording = tmp_path / "hostile.msgpack"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([["--port", "9000"]] * CHILDREN))
    with LiveCommand("watch", "--json", "--record", str(recording), ready_timeout=300) as watch:
        supervisor = subprocess.Popen(["python3", str(LEAK), "supervise", str(plan), "1.0"],
                                      executable=sys.executable, stdout=subprocess.PIPE, text=True)
        started: list[str] = []
        threading.Thread(target=lambda: started.extend(supervisor.stdout), daemon=True).start()
        try:
            # One word holds 128 KiB at most: 16 of 64 KiB make the 1 MiB.
            subprocess.run(["/bin/true", "hostile-mebibyte", *["m" * (1 << 16)] * 16], check=True)
            subprocess.run([b"/bin/true", b"hostile-utf8", b"\xff\xfe\xc0\x80-bad"], check=True)
            subprocess.run(["/bin/true", "hostile-escape", "\x1b[2J\x1b]0;pwned\x07\x1b[31m"], check=True)
            with pytest.raises(ValueError, match="null"):
                subprocess.run(["/bin/true", "hostile-nul", "a\0b"])  # no NUL can even be handed to execve
            subprocess.run(["sh", "-c", "exec /bin/true hostile-nul \"$(printf 'a\\000b')\""], check=True)
            subprocess.run([str(flood_binary), str(FLOOD)], check=True, timeout=300)

            def firing(records: list[dict]) -> dict | None:
                return next((r for r in records if r["kind"] == "alert" and r["state"] == "firing"
                             and r["spawner"]["pid"] == supervisor.pid), None)

            watch.wait_for(firing, "the leak's alert beside the flood", timeout=120)
            alert = firing(watch.snapshot())
            assert alert["rule"] == "accumulating" and alert["live"] >= 9
            wait_for(lambda: len(started) == CHILDREN, "every leaked child started", 60)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(timeout=60)
    assert watch.returncode == 0, watch.stderr
    stats = watch.stats
    assert stats["decode_errors"] == 0 and "Traceback" not in watch.stderr

    records = [to_record(item) for item in replay(read_records(recording))]  # each event as its --json map
    [mebibyte] = execs_of(records, "hostile-mebibyte")
    assert mebibyte["argv_truncated"] and sum(len(word.encode()) + 1 for word in mebibyte["argv"]) <= 4096
    [utf8] = execs_of(records, "hostile-utf8")
    assert utf8["argv"][2] == "\ufffd\ufffd\ufffd\ufffd-bad"  # invalid bytes replaced, as JSON and msgpack take them
    [escape] = execs_of(records, "hostile-escape")
    assert escape["argv"][2] == "\x1b[2J\x1b]0;pwned\x07\x1b[31m"  # data kept as is: renderers neutralise it
    [nul] = execs_of(records, "hostile-nul")
    assert "\0" not in "".join(nul["argv"]) and nul["argv"][2].startswith("a")

    seen = {r["argv"][1] for r in execs_of(records, MARK)}
    lost_execs = stats["lost_by_kind"].get("exec", 0) + stats["lost_by_kind"].get("exec_brief", 0)
    assert len(seen) + lost_execs >= FLOOD, f"{len(seen)} flood execs seen, {lost_execs} counted lost"
