"""bench/forkstorm.py's contract without running a storm: its options and its exit code
(non-zero when an event was lost or the replay disagreed with the live session)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def bench_module(name: str):
    """A fixture's body: bench/<name>.py imported as the module `name`, for as long as it is used."""
    spec = importlib.util.spec_from_file_location(name, PROJECT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def forkstorm():
    yield from bench_module("forkstorm")


def test_defaults_take_five_alternations_against_this_vm_s_drift(forkstorm) -> None:
    options = forkstorm.parse_args([])
    assert (options.duration, options.alternations, options.processes) == (10.0, 5, 1_000_000)
    assert options.loops >= 1


def test_options_are_read(forkstorm) -> None:
    options = forkstorm.parse_args(["--duration", "2.5", "--alternations", "5", "--processes", "70000", "--loops", "1"])
    assert (options.duration, options.alternations, options.processes, options.loops) == (2.5, 5, 70000, 1)


@pytest.mark.parametrize("option", ["--duration", "--alternations", "--processes", "--loops"])
def test_a_count_or_duration_of_zero_is_refused(forkstorm, option: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        forkstorm.parse_args([option, "0"])
    assert exited.value.code == 2
    assert f"{option} must be above 0" in capsys.readouterr().err


def test_exit_code_is_non_zero_when_an_event_is_lost(forkstorm) -> None:
    assert forkstorm.exit_code(lost=0, replay_matches=True) == 0
    assert forkstorm.exit_code(lost=1, replay_matches=True) == forkstorm.LOST != 0
    assert forkstorm.exit_code(lost=0, replay_matches=False) == forkstorm.REPLAY_DIFFERS != 0
    assert forkstorm.exit_code(lost=3, replay_matches=False) == forkstorm.LOST  # the loss is what matters first


def test_without_root_it_says_so_and_exits_1(forkstorm, monkeypatch, capsys) -> None:
    monkeypatch.setattr(forkstorm.os, "geteuid", lambda: 1000)
    assert forkstorm.main(["--duration", "1"]) == 1
    assert "run it as root" in capsys.readouterr().err


@pytest.fixture(scope="module")
def capture_cost(forkstorm):
    yield from bench_module("capture_cost")  # it imports forkstorm, which the fixture above registered


def test_capture_cost_builds_the_capture_up_from_a_no_op_to_every_string(capture_cost) -> None:
    assert capture_cost.STEPS[0] == "no-op" and capture_cost.STEPS[-1] == "every string"
    assert capture_cost.parse_args([]).rounds == 3
    # each step is a stop in the one program: a step past the last would be the last again
    program = capture_cost.PROGRAM
    assert [f"STEP < {n}" in program for n in range(1, len(capture_cost.STEPS))] == [True] * (len(capture_cost.STEPS) - 1)
    assert f"STEP < {len(capture_cost.STEPS)}" not in program


@pytest.mark.parametrize("option", ["--rounds", "--duration", "--loops"])
def test_capture_cost_refuses_a_count_or_duration_of_zero(capture_cost, option: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        capture_cost.parse_args([option, "0"])
    assert exited.value.code == 2
    assert f"{option} must be above 0" in capsys.readouterr().err


def test_capture_cost_without_root_says_so_and_exits_1(capture_cost, monkeypatch, capsys) -> None:
    monkeypatch.setattr(capture_cost.os, "geteuid", lambda: 1000)
    assert capture_cost.main(["--duration", "1"]) == 1
    assert "run it as root" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sidebyside(forkstorm):
    yield from bench_module("sidebyside")  # it imports forkstorm, which the fixture above registered


def test_side_by_side_takes_source_trees_and_refuses_anything_else(sidebyside, tmp_path, capsys) -> None:
    options = sidebyside.parse_args([str(PROJECT), str(PROJECT), "--rounds", "2"])
    assert options.trees == [PROJECT, PROJECT] and (options.rounds, options.duration) == (2, 10.0)
    assert sidebyside.tree_env(PROJECT)["PYTHONPATH"] == str(PROJECT / "src")
    with pytest.raises(SystemExit) as exited:
        sidebyside.parse_args([str(PROJECT), str(tmp_path)])
    assert exited.value.code == 2
    assert f"{tmp_path} is not a spawnwatch source tree" in capsys.readouterr().err


def test_side_by_side_runs_a_fork_storm_by_default_or_either_exec_storm(sidebyside, capsys) -> None:
    project = str(PROJECT)
    assert sidebyside.parse_args([project]).mode == "fork"
    assert [sidebyside.parse_args([project, "--mode", mode]).mode for mode in ("exec", "exec-distinct")] == [
        "exec", "exec-distinct"]
    with pytest.raises(SystemExit):
        sidebyside.parse_args([project, "--mode", "clone"])


def test_side_by_side_without_root_says_so_and_exits_1(sidebyside, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sidebyside.os, "geteuid", lambda: 1000)
    assert sidebyside.main([str(PROJECT)]) == 1
    assert "run it as root" in capsys.readouterr().err


def test_side_by_side_replays_a_recording_with_each_tree_without_root(sidebyside, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sidebyside.os, "geteuid", lambda: 1000)
    project = str(PROJECT)
    recording = PROJECT / "tests" / "fixtures" / "accumulate.msgpack"
    assert sidebyside.main([project, "--replay", str(recording), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert f"{project}: replay median " in out and "the same alerts from every tree: yes" in out


def test_side_by_side_refuses_a_replay_of_no_file(sidebyside, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        sidebyside.parse_args([str(PROJECT), "--replay", str(tmp_path / "none.msgpack")])
    assert exited.value.code == 2 and "is not a file" in capsys.readouterr().err


def test_side_by_side_replays_one_recording_per_tree(sidebyside, monkeypatch, capsys, tmp_path) -> None:
    from spawnwatch.events import from_record
    from spawnwatch.recording import RecordingWriter, read_records

    project = str(PROJECT)
    format1 = PROJECT / "tests" / "fixtures" / "accumulate.msgpack"
    format2 = tmp_path / "accumulate-format2.msgpack"  # the same session, its events as arrays
    with RecordingWriter(format2) as writer:
        for record in read_records(format1):
            item = from_record(record) if record["kind"] not in ("snapshot", "resync") else None
            if record["kind"] == "ready":
                writer.write({**record, "format": 2})
            elif item is not None:
                writer.write_item(item)
            else:
                writer.write(record)
    monkeypatch.setattr(sidebyside.os, "geteuid", lambda: 1000)
    assert sidebyside.main([project, project, "--replay", str(format1), str(format2), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{project} on accumulate.msgpack: replay median " in out
    assert f"{project} on accumulate-format2.msgpack: replay median " in out
    assert "the same alerts from every tree: yes" in out


def test_side_by_side_refuses_recordings_that_are_neither_one_nor_one_per_tree(sidebyside, capsys) -> None:
    recording = str(PROJECT / "tests" / "fixtures" / "accumulate.msgpack")
    with pytest.raises(SystemExit) as exited:
        sidebyside.parse_args([str(PROJECT), "--replay", recording, recording])
    assert exited.value.code == 2 and "2 recordings for 1 trees" in capsys.readouterr().err


def test_the_floor_s_consumers_are_run_by_the_alternations_and_refuse_an_unknown_level(forkstorm, capsys) -> None:
    assert list(forkstorm.CONSUMERS)[:3] == ["attach", "kernel", "probe"]  # the floor first, as the summary reads
    # the exec storms measure the same floor under watch
    assert forkstorm.EXEC_CONSUMERS == ("attach", "kernel", "probe", "watch")
    assert set(forkstorm.EXEC_CONSUMERS) <= set(forkstorm.CONSUMERS)
    assert forkstorm.CONSUMERS["kernel"] == [forkstorm.PARTIAL_CONSUMER, "kernel"]
    spec = importlib.util.spec_from_file_location("partial_consumer", forkstorm.PARTIAL_CONSUMER)
    partial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(partial)
    assert partial.main(["detect"]) == 2
    assert "usage: partial_consumer.py {attach,kernel,probe}" in capsys.readouterr().err
    # `attach` puts its no-op on every tracepoint the probe's programs use, read from their source
    assert set(partial.probe_tracepoints()) == {
        "syscalls:sys_enter_execve", "syscalls:sys_enter_execveat", "sched:sched_process_exec",
        "sched:sched_process_exit", "sched:sched_process_free", "task:task_newtask", "oom:mark_victim",
    }


def test_a_recording_s_processes_count_each_tally_s_children_in_either_format(forkstorm, tmp_path) -> None:
    from spawnwatch.events import Brief, ExecBrief, Exit, Fork, Tally, to_record
    from spawnwatch.recording import RecordingWriter

    events = [Fork(1.0, 10, 1, "sh", 0), Exit(1.1, 10, 1, "sh", 0), Brief(1.2, 11, 1, "sh", 0, 1.3, 1.4),
              Tally(1.5, 0, 1, "sh", 0, 1.6, 1.7, 30), ExecBrief(1.8, 12, 1, "true", 0, 1.9, 2.0, 1.85, ("true",))]
    format1, format2 = tmp_path / "format1.msgpack", tmp_path / "format2.msgpack"
    with RecordingWriter(format1) as writer:
        writer.write({"kind": "ready", "pid": 1})
        for event in events:
            writer.write(to_record(event))
        # a tally as a brief without a pid: recorded before tallies had their kind
        writer.write({**to_record(Brief(2.1, 0, 1, "sh", 0, 2.2, 2.3)), "count": 400})
        writer.write({"kind": "tick", "ts": 3.0})
    with RecordingWriter(format2) as writer:
        writer.write({"kind": "ready", "pid": 1, "format": 2})
        for event in events:
            writer.write_item(event)
        writer.write({"kind": "tick", "ts": 3.0})
    assert forkstorm.events_and_processes(format1) == (6, 433)
    assert forkstorm.events_and_processes(format2) == (5, 33)


def test_a_recording_s_head_is_its_records_before_its_first_event_in_either_format(forkstorm, tmp_path) -> None:
    from spawnwatch.events import Fork
    from spawnwatch.recording import RecordingWriter, read_records

    ready = {"kind": "ready", "pid": 1, "format": 2}
    recording = tmp_path / "trace.msgpack"
    with RecordingWriter(recording) as writer:
        writer.write(ready)
        writer.write_item(Fork(1.0, 10, 1, "sh", 0))
        writer.write({"kind": "tick", "ts": 3.0})
    assert list(read_records(forkstorm.recording_head(recording, tmp_path / "head.msgpack"))) == [ready]


@pytest.fixture(scope="module")
def time_to_alert():
    yield from bench_module("time_to_alert")


def test_time_to_alert_runs_every_leak_shape_within_two_minutes_by_default(time_to_alert, capsys) -> None:
    options = time_to_alert.parse_args([])
    assert (options.shapes, options.timeout) == (["accumulate", "orphan", "zombie"], 120.0)
    assert time_to_alert.parse_args(["--shapes", "zombie", "--timeout", "30"]).shapes == ["zombie"]
    with pytest.raises(SystemExit) as exited:
        time_to_alert.parse_args(["--timeout", "0"])
    assert exited.value.code == 2
    assert "--timeout: must be above 0" in capsys.readouterr().err


def test_time_to_alert_prints_the_target_beside_each_measurement_and_fails_on_a_silent_shape(time_to_alert) -> None:
    caught = time_to_alert.Measurement("accumulate", "accumulating", 17.94)
    silent = time_to_alert.Measurement("zombie", "zombie", None)
    assert time_to_alert.table([caught, silent]).splitlines()[2:] == [
        "| accumulate | accumulating | 17.9 s | 20 s |",
        "| zombie | zombie | never | 20 s |",
    ]
    assert time_to_alert.exit_code([caught]) == 0
    assert time_to_alert.exit_code([caught, silent]) == time_to_alert.NEVER != 0


def test_time_to_alert_without_root_says_so_and_exits_1(time_to_alert, monkeypatch, capsys) -> None:
    monkeypatch.setattr(time_to_alert.os, "geteuid", lambda: 1000)
    assert time_to_alert.main([]) == 1
    assert "run it as root" in capsys.readouterr().err
