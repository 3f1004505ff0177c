"""Every command run by an unprivileged user (`nobody`, through setpriv, as a real
process): what needs root (trace, watch live, report --trace, reap --yes) says so in
one line with the fix and exits 3; doctor gives every check's result and fix and
exits 3; what does not need root (tree, report, reap's dry run, watch --replay,
simulate, --help) works; never a traceback.

The commands run from a world-readable copy of the package (the `unprivileged`
fixture), so these tests hold wherever the checkout is, /root included.
"""

from __future__ import annotations

import json
import subprocess

import psutil
import pytest

from conftest import wait_for

from spawnwatch.adapters.runtimes import containerd, crio, podman
from spawnwatch.events import ProcessInfo, Snapshot, to_record
from spawnwatch.probe import preflight
from spawnwatch.recording import RecordingWriter

pytestmark = pytest.mark.root  # to become nobody

EXIT_CANNOT_TRACE = 3
RUNTIMES = {podman.RUNTIME, containerd.RUNTIME, crio.RUNTIME, "kubernetes"}  # doctor's checks after preflight's


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def assert_needs_root(result) -> None:
    assert_no_traceback(result)
    assert result.returncode == EXIT_CANNOT_TRACE, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: root: running as uid 65534") and "sudo spawnwatch" in result.stderr


def test_doctor_gives_every_checks_result_and_fix_and_exits_3(unprivileged) -> None:
    result = unprivileged.run("doctor")
    assert_no_traceback(result)
    assert result.returncode == EXIT_CANNOT_TRACE and result.stderr == ""
    lines = result.stdout.splitlines()
    # After the preflight checks, one line per container runtime found on this host.
    results = [line.split()[1] for line in lines if line.split()[0] in ("ok", "FAIL", "warn")]
    assert len(results) >= len(preflight.DOCTOR)
    assert set(results[len(preflight.DOCTOR):]) <= RUNTIMES, results
    assert "fix: run as root: sudo spawnwatch ..." in result.stdout
    assert lines[-1] == "tracing cannot work here yet"

    result = unprivileged.run("doctor", "--json")
    assert result.returncode == EXIT_CANNOT_TRACE and result.stderr == ""
    checks = {check["name"]: check for check in map(json.loads, result.stdout.splitlines())}
    preflight_checks = ["root", "tracefs", "tracepoints", "bcc", "kernel headers", "BPF sources", "BPF ring buffer", "BTF", "docker"]
    assert list(checks)[:len(preflight_checks)] == preflight_checks
    assert set(list(checks)[len(preflight_checks):]) <= RUNTIMES, list(checks)
    for name in ("root", "tracefs", "tracepoints", "BPF ring buffer"):  # root's alone to look at or do
        assert checks[name]["ok"] is False and "sudo spawnwatch" in checks[name]["fix"], checks[name]


@pytest.mark.parametrize("args", [
    ("trace", "--duration", "1"),
    ("watch", "--duration", "1"),
    ("report", "--trace", "1"),
    ("reap", "--signature", "sleep 1", "--spawner", "1", "--yes"),
], ids=lambda args: " ".join(args))
def test_what_needs_root_says_so_in_one_line_and_exits_3(unprivileged, args) -> None:
    result = unprivileged.run(*args)
    assert_needs_root(result)
    assert result.stdout == ""


@pytest.mark.parametrize("args", [("--help",), ("reap", "--help"), ("simulate", "--help")],
                         ids=lambda args: " ".join(args))
def test_help_works_unprivileged(unprivileged, args) -> None:
    result = unprivileged.run(*args)
    assert_no_traceback(result)
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr


def test_tree_and_report_work_unprivileged(unprivileged) -> None:
    tree = unprivileged.run("tree", "--json")
    assert_no_traceback(tree)
    assert tree.returncode == 0, tree.stderr
    assert json.loads(tree.stdout)["roots"]
    report = unprivileged.run("report", "--json")
    assert_no_traceback(report)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["host"]["processes"] > 0


def test_a_dry_run_of_reap_works_unprivileged(unprivileged) -> None:
    parent = subprocess.Popen(["sh", "-c", "sleep 1007 & sleep 1007 & sleep 1007 & wait"])
    try:
        wait_for(lambda: len(psutil.Process(parent.pid).children()) == 3, "three sleeps")
        result = unprivileged.run("reap", "--signature", "sleep 1007", "--spawner", str(parent.pid), "--force",
                                  "--json")
        assert_no_traceback(result)
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout)
        assert record["dry_run"] is True and record["refused"] is None
        assert len(record["targets"]) == 2 and len(record["kept"]) == 1
        assert len(psutil.Process(parent.pid).children()) == 3
    finally:
        for child in psutil.Process(parent.pid).children():
            child.kill()
        parent.kill()
        parent.wait()


def test_watch_replays_a_recording_unprivileged(unprivileged) -> None:
    snapshot = Snapshot(10.0, (ProcessInfo(1, 0, 0.5, "init", ("/sbin/init",)),))
    path = unprivileged.root / "session.msgpack"
    with RecordingWriter(path) as writer:
        writer.write(to_record(snapshot))
    path.chmod(0o644)
    result = unprivileged.run("watch", "--replay", str(path), "--json")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["kind"] for line in result.stdout.splitlines()] == ["ready", "stats"]


@pytest.mark.npm
def test_simulate_runs_unprivileged(unprivileged) -> None:
    result = unprivileged.run("simulate", "accumulate", "--duration", "3", "--interval", "1", "--memory", "5", "--json")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "simulate" and "spawn" in kinds and "stop" in kinds
