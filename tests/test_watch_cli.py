"""`watch` and its options without root: recordings replayed through the live pipeline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.events import to_record
from spawnwatch.recording import read_records
from test_sinks import Receiver
from workloads import SUPERVISOR_PID

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDINGS = sorted(p.stem for p in FIXTURES.glob("*.msgpack"))


def watch(*args: str):
    return CliRunner().invoke(main, ["watch", *args], catch_exceptions=False)


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("name", RECORDINGS)
def test_replay_gives_the_reviewed_alerts(name):
    result = watch("--replay", str(FIXTURES / f"{name}.msgpack"), "--json")
    assert result.exit_code == 0, result.stderr
    out = records(result)
    assert out[0]["kind"] == "ready" and out[-1]["kind"] == "stats"
    expected = [json.loads(line) for line in (FIXTURES / f"{name}.expected.jsonl").read_text().splitlines()]
    assert [r for r in out if r["kind"] == "alert"] == expected


LEAKED = 15  # children each leak workload of make_recordings.py starts, all ended at its clean-up
# What each recording must raise, stated from its workload (make_recordings.py) and the rules'
# thresholds, not from a run of the pipeline: (state, rule, signature) in order.
STATED = {
    "accumulate": [("firing", "accumulating", "npm exec fs-server"), ("resolved", "accumulating", "npm exec fs-server")],
    "orphan": [("firing", "orphaned", "npm exec fs-server"), ("resolved", "orphaned", "npm exec fs-server")],
    "zombie": [("firing", "zombie", "npm exec fs-server"), ("resolved", "zombie", "npm exec fs-server")],
    "respawn": [],  # a pool whose workers end and are replaced
    "snapshot": [("firing", "accumulating", "npm exec magic")],  # 20 servers already there, 30 s apart
}


def recorded_processes(name: str) -> tuple[dict[int, int], set[int], set[int]]:
    """Of a recording: each process's parent (snapshot and forks), the pids that exited, those reaped."""
    parent, exited, reaped = {}, set(), set()
    for record in read_records(FIXTURES / f"{name}.msgpack"):
        if record["kind"] == "snapshot":
            parent.update((p["pid"], p["ppid"]) for p in record["processes"])
        elif record["kind"] == "fork":
            parent[record["pid"]] = record["ppid"]
        elif record["kind"] == "exit":
            exited.add(record["pid"])
        elif record["kind"] == "reap":
            reaped.add(record["pid"])
    return parent, exited, reaped


def ancestors(parent: dict[int, int], pid: int) -> list[int]:
    """`pid`'s parent, its parent's and so on, as the recording tells them."""
    found: list[int] = []
    while pid in parent and len(found) < 64:
        pid = parent[pid]
        found.append(pid)
    return found


@pytest.mark.parametrize("name", RECORDINGS)
def test_replay_raises_what_each_workload_states(name):
    result = watch("--replay", str(FIXTURES / f"{name}.msgpack"), "--json")
    assert result.exit_code == 0, result.stderr
    alerts = [r for r in records(result) if r["kind"] == "alert"]
    assert [(a["state"], a["rule"], a["signature"]) for a in alerts] == STATED[name]
    parent, exited, _reaped = recorded_processes(name)
    for alert in alerts:
        assert alert["spawner"]["pid"] == SUPERVISOR_PID and alert["spawner"]["argv"] == ["python3", "supervisor.py"]
        if alert["state"] == "resolved":
            assert alert["live"] == alert["zombies"] == alert["orphans"] == 0 and alert["pids"] == []
            assert alert["spawned"] == alert["exited"] == LEAKED
        elif alert["rule"] == "accumulating":
            assert all(parent[pid] == SUPERVISOR_PID for pid in alert["pids"])
            assert alert["live"] == alert["spawned"] == len(alert["pids"]) >= 9  # accumulating's min_live
            assert alert["exited"] == alert["zombies"] == alert["orphans"] == 0
        elif alert["rule"] == "zombie":
            assert all(parent[pid] == SUPERVISOR_PID and pid in exited for pid in alert["pids"])
            assert alert["zombies"] == len(alert["pids"]) >= 8  # zombie's min_zombies
        else:  # orphaned: what the supervisor's killed children left behind, below them
            assert all(parent[pid] != SUPERVISOR_PID and SUPERVISOR_PID in ancestors(parent, pid)
                       for pid in alert["pids"])
            assert alert["orphans"] == len(alert["pids"]) >= 8  # orphaned's min_orphans


def test_replay_stats_count_the_replayed_events():
    result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--json")
    recorded = [r for r in read_records(FIXTURES / "accumulate.msgpack") if r["kind"] == "stats"][0]
    assert records(result)[-1] == recorded


def test_replay_reads_trace_json_lines_too(tmp_path):
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in read_records(FIXTURES / "orphan.msgpack")))
    result = watch("--replay", str(lines), "--json")
    assert [r["rule"] for r in records(result) if r["kind"] == "alert"] == ["orphaned", "orphaned"]


def test_a_replay_reports_the_recorded_reap_counters_and_passes_over_names_older_recordings_used(tmp_path):
    lines = tmp_path / "events.jsonl"
    events = [r for r in read_records(FIXTURES / "orphan.msgpack") if r["kind"] != "stats"]
    stats = {"kind": "stats", "events": {}, "lost": 0, "dead_slot_collisions": 3, "reaps_settled_from_proc": 5,
             "reaps_given_up": 1, "evicted_by_table": {"known_processes": 2},
             # names of the same counts before they were one (still in older recordings)
             "dead_slot_settled": 2, "dead_slot_given_up": 1, "skipped_reaps_settled": 3, "swept_reaps": 4}
    lines.write_text("".join(json.dumps(r) + "\n" for r in events + [stats]))
    result = watch("--replay", str(lines), "--json")
    assert result.exit_code == 0, result.stderr
    replayed = records(result)[-1]
    assert (replayed["dead_slot_collisions"], replayed["reaps_settled_from_proc"], replayed["reaps_given_up"]) == (3, 5, 1)
    assert replayed["evicted_by_table"] == {"known_processes": 2}
    assert not {"dead_slot_settled", "dead_slot_given_up", "skipped_reaps_settled", "swept_reaps"} & set(replayed)
    assert "dead-slot collisions 3, reaps settled from /proc 5 (given up 1)" in result.stderr


def test_the_human_view_of_a_replay():
    result = watch("--replay", str(FIXTURES / "zombie.msgpack"))
    assert result.exit_code == 0
    assert "FIRING" in result.stdout and "RESOLVED" in result.stdout and "does not reap" in result.stdout
    assert "{" not in result.stdout  # records are JSON only with --json
    assert re.match(r"\S+Z info watch: -- ", result.stderr.rstrip().splitlines()[-1])


def test_config_overrides_thresholds(tmp_path):
    config = tmp_path / "quiet.toml"
    config.write_text("[rules.accumulating]\nmin_live = 50\n")
    result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--json", "--config", str(config))
    assert result.exit_code == 0
    assert not [r for r in records(result) if r["kind"] == "alert"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[rules.accumulating]\nmin_lives = 5\n", "unknown key 'rules.accumulating.min_lives'"),
        ("[rules.zombie]\nmin_age_s = 'soon'\n", "'rules.zombie.min_age_s' must be a number"),
        ("[rules.zombie]\nmin_zombies = -1\n", "'rules.zombie.min_zombies' must be an integer from 1 to 1000000, not -1"),
        ("[rules.pids]\nshare = 1.5\n", "'rules.pids.share' must be a number from 0.01 to 1, not 1.5"),
        ("[rules.pids]\nsample_every_s = 0\n", "'rules.pids.sample_every_s' must be a number from 0.1 to 3600, not 0"),
        ("[detect]\nignore_signatures = ['(']\n", "bad regex"),
        ("[rules\n", "not valid TOML"),
        ("[[signature.masks]]\npattern = 'x'\n", "signature.masks[0]"),
    ],
)
def test_bad_config_files_are_one_line_usage_errors(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--config", str(config))
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_replay_excludes_record_and_duration(tmp_path):
    result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--record", str(tmp_path / "x"))
    assert result.exit_code == 2 and "--replay" in result.stderr


def test_a_corrupt_recording_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\x93\x01\x02\x03")  # a msgpack array, not a record
    result = watch("--replay", str(bad))
    assert result.exit_code == 1 and "not a spawnwatch recording" in result.stderr


def test_the_webhook_receives_the_alerts_of_a_replay():
    receiver = Receiver()
    try:
        result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--json", "--webhook", receiver.url())
        assert result.exit_code == 0
        alerts = [r for r in records(result) if r["kind"] == "alert"]
        assert [body for _, body in receiver.bodies] == alerts
    finally:
        receiver.close()


def test_a_webhook_must_be_http():
    result = watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--webhook", "file:///etc/passwd")
    assert result.exit_code == 2 and "--webhook" in result.stderr


def test_a_snapshot_only_recording_alerts_at_once(tmp_path):
    from streams import host, info

    children = [info(3000 + i, 200, 10.0 + i * 20, "npm exec magic") for i in range(20)]
    path = tmp_path / "snapshot.jsonl"
    path.write_text(json.dumps(to_record(host(600.0, *children))) + "\n")
    result = watch("--replay", str(path), "--json")
    [alert] = [r for r in records(result) if r["kind"] == "alert"]
    assert alert["rule"] == "accumulating" and alert["live"] == 20 and len(alert["pids"]) == 20


def spawnwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spawnwatch", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_every_option_can_come_from_the_environment_named_after_its_flag():
    replay = str(FIXTURES / "accumulate.msgpack")
    result = spawnwatch("watch", env={"SPAWNWATCH_WATCH_REPLAY": replay, "SPAWNWATCH_WATCH_JSON": "1"})
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["kind"] == "ready" and lines[-1]["kind"] == "stats"
    # The command line wins over the environment.
    bad = spawnwatch("watch", "--replay", replay, env={"SPAWNWATCH_WATCH_REPLAY": "/nonexistent"})
    assert bad.returncode == 0, bad.stderr
    assert "SPAWNWATCH_WATCH_METRICS_ADDRESS" in spawnwatch("watch", "--help").stdout


def test_quiet_and_verbose_set_what_goes_to_stderr():
    replay = str(FIXTURES / "accumulate.msgpack")
    normal = spawnwatch("watch", "--replay", replay, "--json")
    assert re.match(r"\S+Z info watch: -- ", normal.stderr)  # the session's summary, time, level, component
    quiet = spawnwatch("-q", "watch", "--replay", replay, "--json")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == normal.stdout.replace(
        str(json.loads(normal.stdout.splitlines()[0])["pid"]), str(json.loads(quiet.stdout.splitlines()[0])["pid"]), 1)


def test_replayed_alerts_are_dated_and_placed_as_the_live_session_was():
    lines = records(watch("--replay", str(FIXTURES / "accumulate.msgpack"), "--json"))
    assert lines[0]["host"] == "fixture-host" and lines[0]["boot_time"] == 1_790_000_000.0
    alerts = [line for line in lines if line["kind"] == "alert"]
    assert alerts and all(a["host"] == "fixture-host" for a in alerts)
    # Boot at 1,790,000,000 s after the epoch is 2026-09-21T14:13:20Z; the leak fired 1,028 s after boot.
    assert alerts[0]["time"] == "2026-09-21T14:30:28.000Z"
