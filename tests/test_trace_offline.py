"""Filters, rendering, recordings, preflight and CLI errors, without root."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from spawnwatch.cli import doctor, main
from spawnwatch.events import Exec, Exit, Fork, Oom, Reap, Snapshot, ProcessInfo, replay, to_record
from spawnwatch.filters import CommFilter, SubtreeFilter
from spawnwatch.probe import preflight
from spawnwatch.recording import RecordingError, RecordingWriter, read_records
from spawnwatch.event_lines import EventLines
from spawnwatch.text import human_bytes


def test_subtree_filter_follows_forks_and_forgets_reaped():
    keep = SubtreeFilter(10, existing_descendants=[11])
    assert keep(Exec(1.0, 11, 10, "x", 1))
    assert keep(Fork(1.0, 12, 11, "x", 1))
    assert keep(Fork(1.0, 13, 12, "x", 1))
    assert not keep(Fork(1.0, 20, 1, "x", 1))
    assert keep(Reap(2.0, 13, 12, "x", 1))
    assert not keep(Exec(3.0, 13, 1, "reused", 1))  # pid 13 reused by a stranger


def test_comm_filter_uses_the_kernels_15_characters():
    keep = CommFilter("a-very-long-command-name")
    assert keep(Exit(1.0, 1, 0, "a-very-long-com", 1))
    assert not keep(Exit(1.0, 1, 0, "other", 1))


def test_human_lines_show_argv_and_zombie_time():
    lines = EventLines()
    assert "/bin/true 'a b'" in lines.line(Exec(1.0, 5, 1, "true", 1, ("/bin/true", "a b"), "/bin/true"))
    lines.line(Exit(2.0, 5, 1, "true", 1))
    assert "zombie for 1.5 s" in lines.line(Reap(3.5, 5, 1, "true", 1))
    assert "OOM-killed, rss 64.0 MiB" in lines.line(Oom(4.0, 6, 1, "node", 1, 64 << 20))
    assert human_bytes(1536 * 1024 * 1024) == "1.5 GiB"


def test_exit_times_are_bounded_and_those_let_go_counted():
    lines = EventLines(limit=2)
    for pid in (5, 6, 7):
        lines.line(Exit(2.0, pid, 1, "true", 1))
    assert lines.evicted == 1
    assert "zombie for" not in lines.line(Reap(3.0, 5, 1, "true", 1))  # the oldest went
    assert "zombie for 1.0 s" in lines.line(Reap(3.0, 7, 1, "true", 1))


def test_control_characters_are_escaped_not_obeyed():
    line = EventLines().line(Exec(1.0, 5, 1, "evil\x1b[2J", 1, ("x\nfake line", "\x1b]0;title\x07"), "/x"))
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "\\n" in line and "\\x1b" in line


def test_recordings_round_trip_msgpack_and_jsonl(tmp_path):
    items = [
        Snapshot(1.0, (ProcessInfo(1, 0, 0.1, "init", ("init",)),)),
        Fork(1.5, 2, 1, "sh", 1),
        Exec(1.6, 2, 1, "true", 1, ("true",), "/bin/true"),
    ]
    path = tmp_path / "rec.msgpack"
    with RecordingWriter(path) as writer:
        writer.write({"kind": "ready", "pid": 1})
        for item in items:
            writer.write(to_record(item))
    assert list(replay(read_records(path))) == items
    jsonl = tmp_path / "rec.jsonl"
    jsonl.write_text("".join(json.dumps(to_record(i)) + "\n" for i in items))
    assert list(replay(read_records(jsonl))) == items


def test_corrupt_recording_is_a_clear_error(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x92\x01\x02")  # a msgpack list, not a record
    with pytest.raises(RecordingError, match="not a spawnwatch recording"):
        list(read_records(path))


def test_missing_tracepoints_and_headers_are_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "TRACEFS_ROOTS", (tmp_path,))
    assert not preflight.check_tracefs().ok
    (tmp_path / "events" / "sched" / "sched_process_exit").mkdir(parents=True)
    (tmp_path / "events" / "sched" / "sched_process_exit" / "format").write_text(
        "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n"
    )
    check = preflight.check_tracepoints()
    assert not check.ok and "task:task_newtask" in check.detail and "sched_process_exit" not in check.detail
    assert preflight.tracepoint_fields("sched", "sched_process_exit") == {"group_dead"}
    monkeypatch.setattr(preflight.platform, "release", lambda: "0.0.0-nonexistent")
    headers = preflight.check_headers()
    assert not headers.ok and "linux-headers-0.0.0-nonexistent" in headers.fix


def test_missing_bcc_is_explained(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bcc", None)
    check = preflight.check_bcc()
    assert not check.ok and "python3-bpfcc" in check.fix


def test_trace_cannot_start_is_one_line_exit_3(monkeypatch):
    failing = preflight.Check("tracepoints", False, "missing oom:mark_victim", "upgrade the kernel")
    monkeypatch.setattr(preflight, "first_failure", lambda: failing)
    result = CliRunner().invoke(main, ["trace", "--duration", "1"])
    assert result.exit_code == 3
    assert result.output.strip() == "Error: tracepoints: missing oom:mark_victim; fix: upgrade the kernel"


def test_doctor_reports_failures_with_fixes(monkeypatch):
    checks = (
        lambda: preflight.Check("root", False, "running as uid 1000", "run as root"),
        lambda: preflight.Check("docker", False, "no engine", "start dockerd", required=False),
    )
    monkeypatch.setattr(preflight, "DOCTOR", checks)
    monkeypatch.setattr(doctor, "check_runtimes", lambda settings: [])  # this host's runtimes are not the point
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 3
    assert "fix: run as root" in result.output and "tracing cannot work here yet" in result.output
    result = CliRunner().invoke(main, ["doctor", "--json"])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["name"] for line in lines] == ["root", "docker"] and lines[0]["ok"] is False


def test_help_has_examples():
    result = CliRunner().invoke(main, ["trace", "--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "--pid" in result.output


def test_container_filter_for_alerts():
    from spawnwatch.filters import container_matches
    from spawnwatch.sinks import OnlyContainer

    mcp = {"id": "3f2a9c", "name": "metamcp", "image": "node"}
    assert container_matches(mcp, "metamcp") and container_matches(mcp, "/metamcp")
    assert container_matches(mcp, "3f2a") and not container_matches(mcp, "meta")
    assert not container_matches(None, "metamcp")
    seen = []

    class Keep:
        def send(self, record):
            seen.append(record)

        def close(self):
            pass

    only = OnlyContainer(Keep(), "metamcp")
    for record in ({"kind": "ready", "pid": 1}, {"kind": "alert", "container": mcp},
                   {"kind": "alert", "container": None}, {"kind": "stats"}):
        only.send(record)
    assert [r["kind"] for r in seen] == ["ready", "alert", "stats"]


def test_a_trace_recording_says_at_its_head_that_no_tick_will_come_so_a_replay_reads_it_once(tmp_path):
    import io

    from spawnwatch.consumers.replay import survey
    from spawnwatch.consumers.trace import EventStream
    from spawnwatch.runner import LiveRun

    path = tmp_path / "trace.msgpack"
    ready = {"kind": "ready", "pid": 1, "host": "h", "boot_time": 5.0}
    with RecordingWriter(path) as writer:
        EventStream([], None, as_json=False, out=io.StringIO()).begin(LiveRun(None, None, ready, writer), None)
    (head,) = read_records(path)
    assert head == {**ready, "ticks": False}

    def recording():
        yield head
        raise AssertionError("the survey read past the head")

    assert survey(recording()) == (False, head)
    assert survey(iter([{"kind": "ready", **ready}, {"kind": "tick", "ts": 1.0}])) == (True, ready)
