"""`top`'s consumer: `watch`'s detection on the live stream (or a recording), shown as a
live table on the terminal instead of sent to sinks.

The rows come from the pure view model (spawnwatch.top); this module only reads keys,
keeps what the operator picked (sort, container, the selected group, an open detail)
and lays the rows out with Rich.  Every cell is a `rich.text.Text` built from strings
that went through spawnwatch.text: no markup is parsed, no escape obeyed.
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import sys
import termios
import time
import tty
from typing import Callable

from rich.console import Console, Group as Lines
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spawnwatch import reap, top, tree
from spawnwatch.config import Config
from spawnwatch.consumers.replay import Replay
from spawnwatch.consumers.watch import Detection
from spawnwatch.events import ProcessInfo, Snapshot
from spawnwatch.pipeline import Pipeline
from spawnwatch.runner import LiveRun
from spawnwatch.sinks import Fanout
from spawnwatch.text import printable

STATE_STYLES = {top.QUIET: "green", top.WARNING: "yellow", top.CRITICAL: "bold red"}
REDRAW_EVERY_S = 1.0  # the table at most once a second, unless a key asks for it
KEEP_NEWEST = 1  # `reap`'s default --keep, shown in the dry run
ARROW_UP, ARROW_DOWN = "\x1b[A", "\x1b[B"
ESCAPE = "\x1b"
MAX_KEYS_READ = 64  # bytes of input taken per poll: a pasted flood cannot stall the view


class Keys:
    """The terminal's input, a key at a time, without echo or waiting for Enter (Ctrl-C
    still interrupts).  Restores the terminal's mode on exit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list | None = None

    def __enter__(self) -> "Keys":
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float = 0.0) -> list[str]:
        """The keys pressed since the last read, waiting at most `timeout` seconds for one."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, MAX_KEYS_READ).decode(errors="replace")
        keys: list[str] = []
        while data:
            for sequence in (ARROW_UP, ARROW_DOWN):
                if data.startswith(sequence):
                    keys.append(sequence)
                    data = data[len(sequence):]
                    break
            else:
                keys.append(data[0])
                data = data[1:]
        return keys


class View:
    """What the operator sees and picked; `draw` lays it out on the screen."""

    def __init__(self, live: Live, host: str, source: str, container: str | None) -> None:
        self.live = live
        self.host = host
        self.source = source
        self.sort = "growth"
        self.container = container
        self.selected = 0
        self.selected_key: top.GroupKey | None = None
        self.rows: list[top.Row] = []
        self.detail: list[str] | None = None  # the tree or the reap dry run of the selected group
        self.detail_title = ""
        self.status = ""

    def draw(self) -> None:
        header = Text(top.title(self.host, self.sort, self.container, len(self.rows), self.source), style="bold")
        keys = Text(top.KEYS_HELP + (f"   {self.status}" if self.status else ""), style="dim")
        if self.detail is not None:
            height = max(self.live.console.size.height - 4, 1)
            body = Text("\n".join(self.detail[:height]) or "(nothing)")
            self.live.update(Lines(header, Text(self.detail_title, style="bold"), body, keys), refresh=True)
            return
        table = Table(expand=True, box=None, header_style="bold", pad_edge=False)
        for name, justify in (("STATE", "left"), ("SPAWNER", "left"), ("SIGNATURE", "left"), ("LIVE", "right"),
                              ("TREND", "left"), ("GROWTH", "right"), ("SPAWNS/MIN", "right"), ("RSS", "right"),
                              ("CONTAINER", "left"), ("RULES", "left")):
            # The signature takes what the other columns leave; they keep their full width.
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                             ratio=1 if name == "SIGNATURE" else None, min_width=40 if name == "SIGNATURE" else None)
        height = max(self.live.console.size.height - 4, 1)  # the title, the table's header, the keys
        first = max(self.selected - height + 1, 0)  # scrolled so that the selected row is on the screen
        for index, row in enumerate(self.rows[first:first + height], first):
            table.add_row(
                Text(row.state, style=STATE_STYLES[row.state]), Text(row.spawner), Text(row.signature),
                Text(str(row.live)), Text(row.sparkline), Text(f"{row.growth:+d}"), Text(str(row.per_minute)),
                Text(row.rss), Text(row.container), Text(row.rules),
                style="reverse" if index == self.selected else None,
            )
        self.live.update(Lines(header, table, keys), refresh=True)

    def follow(self) -> None:
        """Keep the selected group selected as the rows move (they are sorted again at every redraw)."""
        keys = [row.key for row in self.rows]
        if self.selected_key in keys:
            self.selected = keys.index(self.selected_key)
        self.select(self.selected)

    def select(self, index: int) -> None:
        self.selected = min(max(index, 0), max(len(self.rows) - 1, 0))
        self.selected_key = self.rows[self.selected].key if self.rows else None

    def chosen(self) -> top.Row | None:
        return self.rows[self.selected] if self.rows else None


class Top:
    """Detection without sinks; its group book and alerts shown on the terminal."""

    wants_snapshot = True
    wants_every_process = False

    def __init__(self, config: Config, view: View, keys: Keys, rss_of: Callable[[int], int] | None = None) -> None:
        self.detection = Detection(config, Fanout([]))
        self.rss_of = rss_of  # a live process's resident memory (none on a replay)
        self.view = view
        self.keys = keys
        self.trend = top.Trend()
        self.evaluations = 0
        self.drawn_at = 0.0
        self.run: LiveRun | None = None

    @property
    def pipeline(self) -> Pipeline:
        return self.detection.pipeline

    def begin(self, run: LiveRun, snapshot: Snapshot | None) -> None:
        self.run = run
        self.view.host = run.ready["host"]
        self.detection.begin(run, snapshot)

    def items(self, batch: list) -> None:
        self.detection.items(batch)

    def batch_done(self, now: float) -> None:
        self.detection.batch_done(now)
        if self.answer(self.keys.read()):
            signal.raise_signal(signal.SIGINT)  # `q` ends the session as Ctrl-C does
        self.show(now)

    def end(self, stats: dict) -> None:
        self.detection.end(stats)

    def show(self, now: float, force: bool = False) -> None:
        """Sample the trend at each evaluation; redraw at most every REDRAW_EVERY_S, or now with `force`."""
        pipeline = self.pipeline
        if pipeline.evaluations != self.evaluations:
            self.evaluations = pipeline.evaluations
            self.trend.sample(pipeline.detector.groups.values(), (key for _, key in pipeline.alerts.active))
        if not force and time.monotonic() - self.drawn_at < REDRAW_EVERY_S:
            return
        self.drawn_at = time.monotonic()
        self.view.rows = self.rows(now, self.view.container)
        self.view.follow()
        self.view.draw()

    def rows(self, now: float, container: str | None) -> list[top.Row]:
        pipeline = self.pipeline
        active = ((a.group, a.latest) for a in pipeline.alerts.active.values())
        return top.rows(pipeline.detector.groups.values(), active, self.trend, now, self.container_of,
                        self.view.sort, container)

    def container_of(self, group: top.Group) -> dict | None:
        if self.run is None or not group.key.cgroup_id:
            return None
        return self.run.resolver(group.key.cgroup_id, group.spawner.pid)

    def answer(self, keys: list[str]) -> bool:
        """Act on the keys pressed; True when one of them asks to quit."""
        view = self.view
        for key in keys:
            if key in ("q", "Q"):
                return True
            if key == ESCAPE:
                view.detail = None
            elif key in (ARROW_UP, "k"):
                view.select(view.selected - 1)
            elif key in (ARROW_DOWN, "j"):
                view.select(view.selected + 1)
            elif key == "s":
                view.sort = top.next_sort(view.sort)
            elif key == "c":
                view.container = top.next_container(view.container, self.rows(self.pipeline.now, None))
            elif key in ("t", "\n", "\r"):
                self.open(self.tree_of, "tree")
            elif key == "r":
                self.open(self.reap_dry_run, "reap dry run")
        if keys:
            self.show(self.pipeline.now, force=True)
        return False

    def open(self, lines_of: Callable[[top.Group], list[str]], what: str) -> None:
        chosen = self.view.chosen()
        group = self.pipeline.detector.groups.get(chosen.key) if chosen is not None else None
        if group is None:
            self.view.status = "no group selected"
            return
        self.view.status = ""
        self.view.detail_title = f"{what} of `{chosen.signature}` spawned by {chosen.spawner}"
        self.view.detail = lines_of(group)

    def tree_of(self, group: top.Group) -> list[str]:
        """The spawner's subtree as `tree` draws it, from the table the session keeps (the
        rules firing are in the table's row)."""
        nodes = tree.build(self.pipeline.lineage, root_pid=group.spawner.pid)
        return tree.render(nodes)

    def reap_dry_run(self, group: top.Group) -> list[str]:
        """What `reap` would end for the group (its default --keep), planned on the table the
        session keeps, and the command that ends it."""
        processes = [ProcessInfo(pid=p.pid, ppid=p.ppid, start=p.start, comm=p.comm, argv=tuple(p.argv),
                                 cgroup_id=p.cgroup_id) for p in self.pipeline.lineage.unreaped() if p.alive]
        signatures = {p.pid: p.signature for p in self.pipeline.lineage.unreaped()}
        selection = reap.Selection(signature=group.key.signature, spawner=group.spawner.pid, keep=KEEP_NEWEST)
        try:
            chosen = reap.plan(processes, selection, lambda p: signatures.get(p.pid, ""), lambda p: None)
        except reap.SelectionError as exc:
            return [printable(str(exc))]
        rss = {t.process.pid: self.rss_of(t.process.pid) for t in chosen.targets} if self.rss_of else {}
        out, _ = reap.render(reap.plan_record(chosen, rss, None, dry_run=True, refused=None))
        command = shlex.join(["sudo", "spawnwatch", "reap", "--signature", group.key.signature,
                              "--spawner", str(group.spawner.pid), "--yes"])
        return [*out, "", f"to end them (reap checks the group again first): {printable(command)}"]


def screen(stdout: object = None) -> Live:
    """The alternate screen, redrawn only when asked."""
    console = Console(file=stdout or sys.stdout, highlight=False, markup=False, emoji=False)
    return Live(console=console, screen=True, auto_refresh=False, transient=True)


def replay(config: Config, path: str, consumer: Top, speed: float) -> None:
    """The recording through the same view (consumers.replay), at `speed` times its pace;
    then held until the operator quits."""
    recording = Replay(config, path)
    pipeline = consumer.detection.pipeline = recording.pipeline
    consumer.view.host = recording.origin.host
    started_at = first = None
    evaluations = pipeline.evaluations
    for _ in recording.steps():
        if pipeline.evaluations == evaluations:
            continue
        evaluations = pipeline.evaluations
        if first is None:
            first, started_at = pipeline.now, time.monotonic()
        if pace(consumer, started_at + (pipeline.now - first) / speed):
            return
    consumer.view.status = "end of the recording"
    consumer.show(pipeline.now, force=True)
    while not consumer.answer(consumer.keys.read(timeout=1.0)):
        pass


def pace(consumer: Top, until: float) -> bool:
    """Show the view and answer keys until the wall clock reaches `until`; True to quit."""
    while True:
        consumer.show(consumer.pipeline.now)
        left = until - time.monotonic()
        if consumer.answer(consumer.keys.read(timeout=max(0.0, min(left, 0.25)))):
            return True
        if left <= 0:
            return False

