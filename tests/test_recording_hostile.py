"""Recordings are hostile input both ways: `--record FILE` is written by root wherever a user
pointed it, and `--replay FILE` reads what anyone could have forged."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.events import to_record
from spawnwatch.recording import MAX_RECORD_BYTES, read_records
from streams import host, info

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOBODY = 65534
VICTIM_TEXT = "root's file, not to be touched\n"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_refused_record(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "--record" in result.stderr and words in result.stderr, result.stderr
    assert "Traceback" not in result.output


@pytest.mark.root
@pytest.mark.parametrize("command", ["trace", "watch"])
def test_record_refuses_a_symlink_and_leaves_its_target_whole(tmp_path, command):
    victim = tmp_path / "victim"
    victim.write_text(VICTIM_TEXT)
    link = tmp_path / "rec.msgpack"
    link.symlink_to(victim)
    result = run(command, "--record", str(link), "--duration", "0.1", "--state-dir", "") if command == "watch" \
        else run(command, "--record", str(link), "--duration", "0.1")
    assert_refused_record(result, "symlink")
    assert victim.read_text() == VICTIM_TEXT and link.is_symlink()


@pytest.mark.root
def test_record_refuses_a_fifo_without_blocking_on_it(tmp_path):
    fifo = tmp_path / "rec.msgpack"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting: the open alone would succeed
    try:
        result = run("trace", "--record", str(fifo), "--duration", "0.1")
        assert_refused_record(result, "not a regular file")
        assert os.read(reader, 16) == b""
    finally:
        os.close(reader)


@pytest.mark.root
def test_record_refuses_a_file_of_another_user(tmp_path):
    theirs = tmp_path / "rec.msgpack"
    theirs.write_text(VICTIM_TEXT)
    os.chown(theirs, NOBODY, NOBODY)
    os.chmod(theirs, 0o644)
    result = run("trace", "--record", str(theirs), "--duration", "0.1")
    assert_refused_record(result, f"uid {NOBODY}")
    assert theirs.read_text() == VICTIM_TEXT and stat.S_IMODE(theirs.stat().st_mode) == 0o644


@pytest.mark.root
def test_record_refuses_a_hard_link_and_leaves_its_other_name_whole(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text(VICTIM_TEXT)
    link = tmp_path / "rec.msgpack"
    os.link(victim, link)
    result = run("trace", "--record", str(link), "--duration", "0.1")
    assert_refused_record(result, "hard link")
    assert victim.read_text() == VICTIM_TEXT


def replay(path) -> object:
    return run("watch", "--replay", str(path), "--json")


def assert_clear_replay_error(result, words: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and words in result.stderr, result.stderr
    assert "Traceback" not in result.output and len(result.stderr.splitlines()) == 1


def test_replay_of_json_nested_200000_deep_is_a_clear_error(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"kind": "exec", "argv": ' + "[" * 200_000 + "\n")
    assert_clear_replay_error(replay(deep), "nested too deep")


def test_replay_of_msgpack_nested_200000_deep_is_a_clear_error(tmp_path):
    deep = tmp_path / "deep.msgpack"
    deep.write_bytes(b"\x81\xa4kind" + b"\x91" * 200_000 + b"\xc0")  # {"kind": [[[...]]]}
    assert_clear_replay_error(replay(deep), "nested too deep")


def test_replay_refuses_a_json_line_longer_than_a_record_can_be_before_holding_it(tmp_path):
    path = tmp_path / "long.jsonl"
    with open(path, "w") as f:
        f.write('{"kind": "exec", "argv": ["')
        f.truncate(MAX_RECORD_BYTES + 2)  # a sparse file: no disk spent
    assert_clear_replay_error(replay(path), "longer than")


def test_replay_of_a_recording_whose_boot_is_past_any_date_is_a_clear_error(tmp_path):
    fixture = FIXTURES / "accumulate.msgpack"
    forged = tmp_path / "forged.msgpack"
    forged.write_bytes(b"".join(
        msgpack.packb({**record, "boot_time": 1e300} if record["kind"] == "ready" else record)
        for record in read_records(fixture)
    ))
    assert_clear_replay_error(replay(forged), "'boot_time' must be a finite number from 0 to")


def test_replay_of_a_process_started_past_any_time_is_a_clear_error(tmp_path):
    snapshot = to_record(host(600.0, info(4242, 1, 1e300, "node", "server.js")))
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps(snapshot) + "\n")
    assert_clear_replay_error(replay(forged), "'start' must be a finite number from 0 to")
