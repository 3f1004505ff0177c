"""Logs as SREs collect them, through the real CLI: `--log-format json` lines parse and carry
time, level and component; with stderr the journal's stream (JOURNAL_STREAM), every line
opens with its syslog priority; stdout carries the command's records (alerts) alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

REPLAY = REPO / "tests" / "fixtures" / "accumulate.msgpack"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def spawnwatch(*args: str, stderr_file: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI with stderr in a file (a stream with a device and inode, as the journal's is)."""
    with open(stderr_file, "w") as err:
        done = subprocess.run([sys.executable, "-m", "spawnwatch", *args], stdout=subprocess.PIPE, stderr=err,
                              text=True, timeout=120, env={**os.environ, **(env or {})})
    return done.returncode, done.stdout, stderr_file.read_text()


def journal_stream(path: Path) -> dict[str, str]:
    status = path.stat()
    return {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}


def test_json_logs_carry_time_level_and_component_and_stdout_only_the_records(tmp_path):
    code, stdout, stderr = spawnwatch("--log-format", "json", "watch", "--replay", str(REPLAY), "--json",
                                      stderr_file=tmp_path / "stderr")
    assert code == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert lines, "the session's summary is logged"
    for line in lines:
        assert TIME.fullmatch(line["time"]) and line["level"] == "info" and line["component"] == "watch", line
    assert lines[-1]["msg"].startswith("-- ")
    records = [json.loads(line) for line in stdout.splitlines()]
    assert {r["kind"] for r in records} == {"ready", "alert", "stats"}, "a log line reached stdout"
    assert any(r["kind"] == "alert" for r in records)


def test_a_failure_is_a_json_log_line_with_the_exit_code_of_the_text_one(tmp_path):
    missing = str(tmp_path / "no-such-recording")
    code, stdout, stderr = spawnwatch("--log-format", "json", "watch", "--replay", missing,
                                      stderr_file=tmp_path / "stderr")
    [line] = [json.loads(text) for text in stderr.splitlines()]
    assert code == 2 and stdout == ""
    assert line["level"] == "error" and line["component"] == "watch" and missing in line["msg"]
    text_code, _, text = spawnwatch("watch", "--replay", missing, stderr_file=tmp_path / "text")
    assert text_code == code and "Error: " in text


def test_text_logs_carry_time_level_and_component(tmp_path):
    code, _, stderr = spawnwatch("watch", "--replay", str(REPLAY), "--json", stderr_file=tmp_path / "stderr")
    assert code == 0, stderr
    assert stderr.splitlines() and all(re.match(rf"{TIME.pattern} info watch: ", line) for line in stderr.splitlines())


def test_on_the_journals_stream_every_line_carries_its_priority(tmp_path):
    stderr_file = tmp_path / "stderr"
    stderr_file.touch()
    for log_format in ("text", "json"):
        code, _, stderr = spawnwatch("--log-format", log_format, "watch", "--replay", str(REPLAY), "--json",
                                     stderr_file=stderr_file, env=journal_stream(stderr_file))
        assert code == 0 and stderr.splitlines(), stderr
        assert all(line.startswith("<6>") for line in stderr.splitlines()), stderr  # info
        if log_format == "json":
            assert all(json.loads(line[3:])["level"] == "info" for line in stderr.splitlines())
    code, _, stderr = spawnwatch("watch", "--replay", str(tmp_path / "missing"), stderr_file=stderr_file,
                                 env=journal_stream(stderr_file))
    assert code == 2 and re.match(rf"<3>{TIME.pattern} error watch: .*missing", stderr), stderr


def test_a_journal_stream_that_is_not_stderr_adds_no_priorities(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.touch()
    code, _, stderr = spawnwatch("watch", "--replay", str(REPLAY), "--json", stderr_file=tmp_path / "stderr",
                                 env=journal_stream(elsewhere))
    assert code == 0 and stderr.splitlines(), stderr
    assert all(re.match(rf"{TIME.pattern} info watch: ", line) for line in stderr.splitlines()), stderr
