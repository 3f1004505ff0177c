"""Recording format 2: events and observations as arrays ([code, field, ...]), read back to the
same items and replayed to the same alerts as the same session in format 1 (every record a
map), which still replays as it did; an array is hostile input like a map."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner, Result

from conftest import wait_for
from live import LiveCommand
from recordings import rewritten, write_format1, write_format2
from spawnwatch.cli import main
from spawnwatch.events import (
    ARRAY_CODES, EVENT_TYPES, OBSERVATION_TYPES, Brief, ContainerEvent, Exec, ExecBrief, ExecTally, Exit, Fork, Oom, PidsSample,
    ProcessInfo, Reap, RecordError, Resync, Snapshot, Tally, from_record, replay, to_array, to_record,
)
from spawnwatch.recording import MAX_ARRAY_ITEMS, RecordingError, read_records

FIXTURES = Path(__file__).resolve().parent / "fixtures"
READY = {"kind": "ready", "pid": 4242, "host": "recorded-host", "boot_time": 1_700_000_000.0}

# One of each event and observation, every field away from its default.
EVERY_KIND = [
    Fork(10.0, 100, 1, "sh", 7),
    Exec(10.1, 100, 1, "node", 7, ("node", "server.js"), "/usr/bin/node", True, ("DOCKER_HOST=unix:///x",), True),
    Oom(10.2, 100, 1, "node", 7, 4096),
    Exit(10.3, 100, 1, "node", 7),
    Reap(10.4, 100, 1, "node", 7),
    Brief(10.5, 101, 1, "sh", 7, 10.6, 10.7),
    Tally(10.8, 0, 1, "sh", 7, 10.9, 11.0, 400),
    ExecBrief(11.1, 102, 1, "true", 7, 11.3, 11.4, 11.2, ("/bin/true", "x"), "/bin/true", True),
    ExecTally(11.45, 0, 1, "true", 7, 11.46, 11.47, 300, ("/bin/true", "y"), "/bin/true", True),
    PidsSample(11.5, 7, 12, 100, 3, "/sys/fs/cgroup/app"),
    PidsSample(11.6, 7, 12, None, 0, ""),
    ContainerEvent(11.7, "start", "c0ffee", "web", "nginx:1", "shop", 0, True, ("app=web",), "podman"),
]


def replayed(path: Path) -> Result:
    return CliRunner().invoke(main, ["watch", "--replay", str(path), "--json"])


def test_every_kind_of_event_and_observation_is_covered_here():
    assert {type(item) for item in EVERY_KIND} == {*EVENT_TYPES.values(), *OBSERVATION_TYPES.values()}
    assert set(ARRAY_CODES) == {*EVENT_TYPES, *OBSERVATION_TYPES}
    assert len(set(ARRAY_CODES.values())) == len(ARRAY_CODES)


def test_a_format_2_recording_holds_each_event_as_its_code_then_its_fields_and_reads_back_equal(tmp_path):
    snapshot = Snapshot(9.0, (ProcessInfo(1, 0, 0.5, "init", ("/sbin/init",)),))
    resync = Resync(12.0, (ProcessInfo(1, 0, 0.5, "init", ("/sbin/init",), zombie=True),))
    items = [snapshot, *EVERY_KIND, resync]
    path = write_format2(tmp_path / "every.msgpack", READY, items)
    ready, *records = read_records(path)
    assert ready == {**READY, "format": 2}
    for item, record in zip(items, records):
        if isinstance(item, Snapshot):
            assert type(record) is dict and record["kind"] == to_record(item)["kind"]  # snapshots stay maps
        else:
            values = [list(value) if isinstance(value, tuple) else value
                      for value in (getattr(item, f.name) for f in fields(item))]
            assert record == [ARRAY_CODES[item.kind], *values]
    assert list(replay(read_records(path))) == items


def test_a_format_1_recording_written_by_hand_still_replays_a_pidless_brief_as_a_tally(tmp_path):
    pidless = {**to_record(Brief(10.8, 0, 1, "sh", 7, 10.9, 11.0)), "count": 400}  # a tally before tallies had a kind
    maps = [pidless if type(item) is Tally else to_record(item) for item in EVERY_KIND]
    path = write_format1(tmp_path / "format1.msgpack", READY, maps)
    ready, *records = read_records(path)
    assert "format" not in ready and all(type(record) is dict for record in records)
    assert list(replay(read_records(path))) == EVERY_KIND
    # and its replay says what the same session's in format 2 says, line for line
    format2 = write_format2(tmp_path / "format2.msgpack", READY, EVERY_KIND)
    one, two = replayed(path), replayed(format2)
    assert one.exit_code == two.exit_code == 0, one.output + two.output
    assert one.stdout == two.stdout


@pytest.mark.parametrize("name", sorted(path.stem for path in FIXTURES.glob("*.msgpack")))
def test_each_fixture_replays_alike_in_format_1_and_in_format_2(tmp_path, name):
    format2 = rewritten(FIXTURES / f"{name}.msgpack", tmp_path / f"{name}.msgpack", format=2)
    assert any(type(record) is list for record in read_records(format2))
    one, two = replayed(FIXTURES / f"{name}.msgpack"), replayed(format2)
    assert one.exit_code == two.exit_code == 0, one.output + two.output
    assert one.stdout == two.stdout
    expected = (FIXTURES / f"{name}.expected.jsonl").read_text().splitlines()
    assert [r for r in map(json.loads, two.stdout.splitlines()) if r["kind"] == "alert"] == list(map(json.loads, expected))


def test_an_array_takes_defaults_for_missing_trailing_fields_and_ignores_extra_ones():
    code = ARRAY_CODES[Exec.kind]
    assert from_record([code, 1.0, 2, 1, "sh", 7]) == Exec(1.0, 2, 1, "sh", 7)
    assert from_record([code, 1.0, 2, 1, "sh", 7, ["sh"], "/bin/sh"]) == Exec(1.0, 2, 1, "sh", 7, ("sh",), "/bin/sh")
    written = list(to_array(EVERY_KIND[1]))
    assert from_record([*written, "a field of a later version", [1, 2]]) == EVERY_KIND[1]
    with pytest.raises(RecordError, match="exec event lacks 'comm'"):
        from_record([code, 1.0, 2, 1])


def test_an_array_of_a_kind_code_unknown_here_is_passed_over_as_a_map_of_an_unknown_kind_is():
    assert from_record([999, 1.0, 2]) is None
    assert from_record({"kind": "future", "ts": 1.0}) is None


# Of each field's type: values a map's reader refuses for it, near misses first.
WRONG = {
    "float": ["1.0", -1.0, 1e300, True, None],
    "int": [True, -1, 2**64, 1.0, "7", None],
    "int | None": [False, -1, "7", 1.5],
    "str": [7, None, b"sh", ["sh"]],
    "bool": [1, 0, None, "true"],
    "tuple[str, ...]": ["sh", [1], [["sh"]], None, {"sh": 1}],
}
NESTED = [[[[]]]]


def wrong_arrays():
    for item in EVERY_KIND:
        written = list(to_array(item))
        for position, f in enumerate(fields(item), 1):
            for wrong in [*WRONG[f.type], NESTED]:
                forged = [*written]
                forged[position] = wrong
                yield pytest.param(forged, f"{item.kind.value} event: '{f.name}'",
                                   id=f"{type(item).__name__}-{f.name}-{wrong!r:.20}")


@pytest.mark.parametrize("forged, named", wrong_arrays())
def test_a_wrong_value_at_any_position_is_a_record_error_naming_its_field(forged, named):
    with pytest.raises(RecordError) as raised:
        from_record(forged)  # of exactly its fields: the fast path
    assert str(raised.value).startswith(named)
    with pytest.raises(RecordError) as raised:
        from_record([*forged, "extra"])  # one item more: the field-by-field path
    assert str(raised.value).startswith(named)


@pytest.mark.parametrize("code", [True, 1.0, "fork", [1], None])
def test_an_array_whose_kind_code_is_no_integer_is_a_record_error(code):
    with pytest.raises(RecordError, match="code"):
        from_record([code, 1.0, 2, 1, "sh", 7])


def test_an_empty_array_is_a_record_error():
    with pytest.raises(RecordError, match="code"):
        from_record([])


def recording_of(path: Path, *records: object, ready: dict = {**READY, "format": 2}) -> Path:
    path.write_bytes(b"".join(msgpack.packb(record) for record in (ready, *records)))
    return path


def assert_refused(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_the_replay_of_a_wrong_array_names_the_record_and_the_field(tmp_path):
    fork = list(to_array(Fork(10.0, 100, 1, "sh", 7)))
    forged = recording_of(tmp_path / "forged.msgpack", fork, [*fork[:2], "100", *fork[3:]])
    assert_refused(replayed(forged), "record 3: fork event: 'pid' must be an integer")
    for code in ([], [True, 10.0, 100, 1, "sh", 7], [[1], 10.0]):
        assert_refused(replayed(recording_of(tmp_path / "code.msgpack", code)), "record 2: ")


def test_an_array_in_a_format_1_recording_or_first_in_any_is_refused(tmp_path):
    fork = list(to_array(Fork(10.0, 100, 1, "sh", 7)))
    format1 = recording_of(tmp_path / "format1.msgpack", fork, ready=READY)
    with pytest.raises(RecordingError, match="not a spawnwatch recording .*found list, not a map"):
        list(read_records(format1))
    assert_refused(replayed(format1), "not a spawnwatch recording")
    first = tmp_path / "first.msgpack"
    first.write_bytes(msgpack.packb(fork))
    with pytest.raises(RecordingError, match="not a spawnwatch recording"):
        list(read_records(first))


def test_an_array_longer_than_a_recording_allows_or_nested_past_the_stack_is_a_recording_error(tmp_path):
    fork = list(to_array(Fork(10.0, 100, 1, "sh", 7)))
    long = recording_of(tmp_path / "long.msgpack", [*fork, *[0] * MAX_ARRAY_ITEMS])
    with pytest.raises(RecordingError, match="corrupt recording"):
        list(read_records(long))
    assert_refused(replayed(long), "corrupt recording")
    deep = recording_of(tmp_path / "deep.msgpack")
    with open(deep, "ab") as f:  # [1, 10.0, 100, 1, "sh", [[[...]]]]
        f.write(b"\x96" + b"".join(msgpack.packb(value) for value in fork[:5]) + b"\x91" * 200_000 + b"\xc0")
    assert_refused(replayed(deep), "nested too deep")


def test_a_recording_read_from_json_lines_keeps_its_maps_whatever_format_it_says(tmp_path):
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in [{**READY, "format": 2}, *map(to_record, EVERY_KIND)]))
    assert list(replay(read_records(lines))) == EVERY_KIND
    assert replayed(lines).stdout == replayed(write_format2(tmp_path / "format2.msgpack", READY, EVERY_KIND)).stdout


@pytest.mark.root
@pytest.mark.slow
def test_a_live_recording_replays_to_the_same_alerts_in_format_2_and_rewritten_as_format_1(tmp_path):
    recording = tmp_path / "live.msgpack"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([["--port", "9000"]] * 12))
    leak = Path(__file__).resolve().parent / "secret_leak.py"
    with LiveCommand("watch", "--json", "--record", str(recording), ready_timeout=300) as watch:
        supervisor = subprocess.Popen(["python3", str(leak), "supervise", str(plan), "0.5"],
                                      executable=sys.executable, stdout=subprocess.PIPE, text=True)
        started: list[str] = []
        threading.Thread(target=lambda: started.extend(supervisor.stdout), daemon=True).start()
        try:
            watch.wait_for(lambda records: any(r["kind"] == "alert" and r["spawner"]["pid"] == supervisor.pid
                                               for r in records), "the leak's alert", timeout=120)
            wait_for(lambda: len(started) == 12, "every leaked child started", 60)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            supervisor.wait(timeout=60)
    assert watch.returncode == 0, watch.stderr
    ready, *records = read_records(recording)
    assert ready["format"] == 2 and any(type(record) is list for record in records)
    format1 = rewritten(recording, tmp_path / "format1.msgpack", format=1)
    assert all(type(record) is dict for record in read_records(format1))
    two, one = replayed(recording), replayed(format1)
    assert one.exit_code == two.exit_code == 0, one.output + two.output
    alerts = [r for r in map(json.loads, two.stdout.splitlines()) if r["kind"] == "alert"]
    assert any(a["spawner"]["pid"] == supervisor.pid for a in alerts)
    assert one.stdout == two.stdout
