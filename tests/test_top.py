"""`spawnwatch top`: the view model on synthetic streams, and the real command in a real
pseudo-terminal (pexpect), its screen read back as a terminal shows it (pyte): on a replay
of a recording and on a live leak.  Children run hostile argv: the screen shows escapes,
and none of the bytes that reach the terminal obeys them."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from spawnwatch.config import load
from spawnwatch.events import to_record
from spawnwatch.pipeline import Pipeline
from spawnwatch.recording import RecordingWriter
from spawnwatch import top
from hostile_leak import hostile_leak
from streams import BOOT_OFFSET, SUPERVISOR, Stream, host

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

SPAWNWATCH = str(Path(sys.executable).with_name("spawnwatch"))
HOSTILE_ARGV = ("\x1b]0;PWNED\x07", "\x1b[2J", "\u202eevil", "\x9b31m")
# What the terminal must never receive: the hostile sequences, raw.
RAW = (b"\x1b]0;PWNED", b"\x1b[2J", "\u202e".encode(), "\x9b".encode())
ROWS, COLUMNS = 40, 200


def pty_env() -> dict[str, str]:
    """Without COLUMNS and LINES (pytest-xdist's workers set 80x24): top sizes itself from the pty."""
    env = {name: value for name, value in os.environ.items() if name not in ("COLUMNS", "LINES")}
    return {**env, "TERM": "xterm-256color"}


def leaking_stream(children: int = 10, gap_s: float = 2.0) -> Stream:
    """The supervisor keeps spawning `node server.js <hostile>` and never ends one;
    a pool of 3 workers spawned at once stays as it is."""
    s = Stream(t=6.0)
    for _ in range(3):
        s.spawn(SUPERVISOR.pid, "gunicorn", "worker")
    for k in range(children):
        s.at(10.0 + k * gap_s).spawn(SUPERVISOR.pid, "node", "server.js", *HOSTILE_ARGV)
    return s


def evaluated(stream: Stream, until: float) -> tuple[Pipeline, top.Trend]:
    """The pipeline after the stream, evaluated every second as `watch` does, the trend sampled at each evaluation."""
    pipeline, trend = Pipeline(load()), top.Trend()
    pipeline.feed(host())
    events = iter(stream.events)
    pending = next(events, None)
    for second in range(6, int(until) + 1):
        while pending is not None and pending.ts <= BOOT_OFFSET + second:
            pipeline.feed(pending)
            pending = next(events, None)
        pipeline.evaluate(BOOT_OFFSET + second)
        trend.sample(pipeline.detector.groups.values(), (key for _, key in pipeline.alerts.active))
    return pipeline, trend


def shown(pipeline: Pipeline, trend: top.Trend, **options) -> list[top.Row]:
    active = ((a.group, a.latest) for a in pipeline.alerts.active.values())
    return top.rows(pipeline.detector.groups.values(), active, trend, pipeline.now, **options)


def test_the_growing_group_comes_first_with_its_alert_state_and_trend():
    pipeline, trend = evaluated(leaking_stream(), until=30)
    rows = shown(pipeline, trend)
    leak, pool = rows[0], rows[1]
    assert leak.signature.startswith("node server.js") and pool.signature == "gunicorn worker"
    assert (leak.live, leak.state, leak.rules) == (10, "warning", "accumulating")
    # sampled from its second live child on: 2, 2, 3, 3, ... 10
    assert leak.growth == 8 and leak.sparkline[-1] == "█" and leak.sparkline[0] == "▂"
    assert leak.per_minute == 10 and leak.spawner == "python3 (200)"
    assert (pool.live, pool.growth, pool.state) == (3, 0, "quiet")
    assert [r.signature for r in shown(pipeline, trend, sort="live")] == [leak.signature, pool.signature]


def test_every_cell_is_safe_for_a_terminal():
    pipeline, trend = evaluated(leaking_stream(), until=30)
    for row in shown(pipeline, trend):
        for cell in (row.spawner, row.signature, row.sparkline, row.container, row.rules, row.rss):
            assert cell.isprintable(), cell
    assert "\\x1b]<n>;PWNED\\x07" in shown(pipeline, trend)[0].signature
    # the host's name comes from the recording, the source from a file's name
    assert top.title("\x1b]0;host\x07", "growth", "\x1b[2J", 2, "replay of /tmp/\x1b[8m.msgpack").isprintable()


def test_the_container_key_shows_each_container_in_turn_then_all():
    s = leaking_stream()
    s.cgroup_id = 7
    for k in range(2):
        s.at(30.0 + k).spawn(SUPERVISOR.pid, "sleep", "infinity")
    pipeline, trend = evaluated(s, until=35)
    names = {1: {"id": "a" * 64, "name": "web"}, 7: {"id": "b" * 64, "name": "\x1b[2Jjobs"}}
    container_of = lambda group: names[group.key.cgroup_id]  # noqa: E731
    everything = shown(pipeline, trend, container_of=container_of)
    assert top.next_container(None, everything) == "\x1b[2Jjobs"  # by name
    assert top.next_container("\x1b[2Jjobs", everything) == "web"
    assert top.next_container("web", everything) is None
    only = shown(pipeline, trend, container_of=container_of, container="\x1b[2Jjobs")
    assert [r.signature for r in only] == ["sleep infinity"] and only[0].container == "\\x1b[2Jjobs"


def test_the_trend_keeps_a_bounded_number_of_groups_and_samples():
    pipeline, _ = evaluated(leaking_stream(), until=30)
    trend = top.Trend(samples=5, max_groups=1)
    for _ in range(10):
        trend.sample(pipeline.detector.groups.values())
    assert len(trend) == 1 and len(trend.of(next(iter(trend._live)))) == 5
    assert top.sparkline([0, 4, 8]) == "▁▄█" and top.sparkline([]) == ""


class Terminal:
    """A command in a real pty, its output kept raw and fed to an emulated screen."""

    def __init__(self, *args: str) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.child = pexpect.spawn(args[0], list(args[1:]), dimensions=(ROWS, COLUMNS), env=pty_env())

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def pump(self, timeout: float = 0.2) -> None:
        try:
            data = self.child.read_nonblocking(1 << 16, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            time.sleep(timeout)  # nothing more will come
            return
        self.raw += data
        self.stream.feed(data)

    def wait_for(self, wanted: str, timeout: float, then: str = "") -> str:
        """The screen once a line shows `wanted` (and `then` after it: a row drawn whole)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if any(wanted in line and then in line.partition(wanted)[2] for line in self.text().splitlines()):
                return self.text()
        raise AssertionError(f"{wanted!r} not on the screen within {timeout} s:\n{self.text()}\n{bytes(self.raw[-2000:])!r}")

    def selected(self) -> str:
        """The line drawn in reverse video: the selected row."""
        for y, line in enumerate(self.screen.display):
            if self.screen.buffer[y][0].reverse:
                return line
        return ""

    def select(self, wanted: str, timeout: float = 30.0) -> None:
        """Move the selection down (`j`) until the selected row shows `wanted`."""
        deadline = time.monotonic() + timeout
        while wanted not in self.selected():
            assert time.monotonic() < deadline, f"no row with {wanted!r} selected:\n{self.text()}"
            self.child.send("j")
            for _ in range(3):
                self.pump()

    def quit(self, timeout: float = 30.0) -> int:
        self.child.send("q")
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            self.pump()
        assert not self.child.isalive(), f"still running {timeout} s after q:\n{self.text()}"
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)


def live_and_growth(line: str) -> tuple[int, int]:
    """A row's LIVE and GROWTH columns, on each side of the sparkline."""
    found = re.search(r" (\d+) +[▁▂▃▄▅▆▇█]+ +([+-]\d+) ", line)
    assert found, line
    return int(found[1]), int(found[2])


def assert_nothing_hostile_obeyed(terminal: Terminal) -> None:
    for sequence in RAW:
        assert sequence not in terminal.raw, sequence
    assert "PWNED" not in terminal.screen.title


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "leak.msgpack"
    with RecordingWriter(path) as writer:
        writer.write({"kind": "ready", "pid": 4242, "host": "fixture-host", "boot_time": 1.7e9})
        writer.write(to_record(host()))
        for event in leaking_stream(children=10, gap_s=1.0).events:
            writer.write(to_record(event))
        writer.write({"kind": "stats", "lost": 0})
    return path


def test_top_plays_a_recording_in_a_pty(recording):
    """About 3 s: the recording's 24 s played 10 times faster, then held until q."""
    terminal = Terminal(SPAWNWATCH, "top", "--replay", str(recording), "--speed", "10")
    try:
        screen = terminal.wait_for("end of the recording", timeout=60)
        leak = next(line for line in screen.splitlines() if "node server.js" in line)
        assert leak.split()[:3] == ["warning", "python3", "(200)"] and "accumulating" in leak
        assert "\\x1b]<n>;PWNED\\x07" in leak and live_and_growth(leak) == (10, 8)
        assert screen.index("node server.js") < screen.index("gunicorn worker")  # by growth
        terminal.child.send("r")  # the leaking group is selected: the first row
        dry_run = terminal.wait_for("to end them", timeout=30)  # its last line: the whole view drawn
        assert "ending 9 members and 0 descendants, keeping 1" in dry_run
        assert "sudo spawnwatch reap --signature" in dry_run and "--spawner 200" in dry_run
        terminal.child.send("\x1bt")
        tree = terminal.wait_for("x3", timeout=30)
        assert "x10" in tree and "x3" in tree  # the spawner's children, collapsed
        terminal.child.send("\x1b")
        terminal.wait_for("SPAWNS/MIN", timeout=30)
        assert terminal.quit() == 0
        assert_nothing_hostile_obeyed(terminal)
    finally:
        terminal.close()


@pytest.fixture
def live_leak(tmp_path):
    with hostile_leak(tmp_path, HOSTILE_ARGV, 4, 0.05) as leak:
        yield leak


@pytest.mark.root
@pytest.mark.slow
def test_top_shows_a_live_leak_in_a_pty(live_leak):
    """About 20 s on this VM (the probe's compile), most of it before the first screen;
    its bounds are generous for a host loaded by other sessions."""
    spawner, config = live_leak
    terminal = Terminal(SPAWNWATCH, "top", "--config", config)
    try:
        screen = terminal.wait_for(f"({spawner})", timeout=240, then="accumulating")
        leak = next(line for line in screen.splitlines() if f"({spawner})" in line)
        assert leak.split()[0] in ("warning", "critical") and "accumulating" in leak and "\\x1b]<n>;PWNED\\x07" in leak
        assert live_and_growth(leak)[0] == 4
        terminal.child.send("s" * 4)
        terminal.wait_for("sort: state", timeout=30)
        terminal.select(f"({spawner})")  # other groups of this busy host may come first
        terminal.child.send("r")
        dry_run = terminal.wait_for("to end them", timeout=30)
        assert "ending 3 members and 0 descendants, keeping 1" in dry_run
        assert terminal.quit() == 0
        assert_nothing_hostile_obeyed(terminal)
    finally:
        terminal.close()
