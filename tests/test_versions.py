"""What a spawnwatch says it is (`--version`), and the format every recording carries: an
older recording replays, a newer one is refused with a message, never misread."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner, Result

from conftest import run

from spawnwatch.cli import main
from spawnwatch.recording import read_records
from spawnwatch.records import FORMAT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CHECKOUT = Path(__file__).resolve().parents[1]


def test_version_says_the_package_the_commit_bcc_and_the_kernel(spawnwatch_cmd):
    shown = run([*spawnwatch_cmd, "--version"], timeout=60)
    assert shown.returncode == 0, shown.stderr
    head = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    bcc = importlib.import_module("bcc")
    assert shown.stdout.splitlines() == [
        f"spawnwatch {importlib.import_module('spawnwatch').__version__}",
        f"commit: {head}",
        f"bcc: {bcc.__version__}",
        f"kernel: {os.uname().release}",
    ]


def replay(path: Path) -> Result:
    return CliRunner().invoke(main, ["watch", "--replay", str(path), "--json"])


def test_recordings_from_before_formats_were_numbered_replay():
    # Their alerts are checked by the fixtures' own tests; here, that they are still read.
    for fixture in sorted(FIXTURES.glob("*.msgpack")):
        (ready, *_) = read_records(fixture)
        assert ready["kind"] == "ready" and "format" not in ready
    assert replay(FIXTURES / "accumulate.msgpack").exit_code == 0


def with_format(source: Path, target: Path, found: object, as_json: bool = False) -> Path:
    records = list(read_records(source))
    records[0] = {**records[0], "format": found}
    if as_json:
        target.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        target.write_bytes(b"".join(msgpack.packb(r) for r in records))
    return target


@pytest.mark.parametrize("as_json", [False, True], ids=["msgpack", "json-lines"])
def test_a_recording_of_a_newer_format_is_refused_with_a_clear_message(tmp_path, as_json):
    newer = replay(with_format(FIXTURES / "accumulate.msgpack", tmp_path / "newer", FORMAT + 1, as_json))
    assert newer.exit_code == 1 and f"recording format {FORMAT + 1} is newer" in newer.stderr, newer.output
    assert isinstance(newer.exception, SystemExit) and '"kind": "alert"' not in newer.stdout


def test_a_recording_of_this_format_replays_and_a_bad_format_is_an_error(tmp_path):
    assert replay(with_format(FIXTURES / "accumulate.msgpack", tmp_path / "same", FORMAT)).exit_code == 0
    bad = replay(with_format(FIXTURES / "accumulate.msgpack", tmp_path / "bad", "2"))
    assert bad.exit_code == 1 and "'format' must be a positive integer" in bad.stderr, bad.output
    assert isinstance(bad.exception, SystemExit)


@pytest.mark.root
def test_a_recording_says_its_format_in_its_first_record(tmp_path, spawnwatch_cmd):
    recording = tmp_path / "trace.msgpack"
    traced = run([*spawnwatch_cmd, "trace", "--duration", "1", "--record", str(recording)], timeout=300)
    assert traced.returncode == 0, traced.stderr
    first = next(read_records(recording))
    assert first["kind"] == "ready" and first["format"] == FORMAT
