"""`trace`'s consumer: every event, filtered, with its container, as a line or a JSON object."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from spawnwatch.events import Event, Resync, Snapshot, to_record
from spawnwatch.filters import container_matches
from spawnwatch.event_lines import EVENT_HEADER, EventLines
from spawnwatch.runner import LiveRun, stats_line
from spawnwatch.sinks.jsonl import write_json_line


class EventStream:
    wants_snapshot = False
    wants_every_process = True  # a trace shows each process

    def __init__(self, filters: list[Callable[[Event], bool]], container: str | None, as_json: bool,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.filters = filters
        self.container = container
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.lines = EventLines()
        self.run: LiveRun | None = None

    def begin(self, run: LiveRun, snapshot: Snapshot | None) -> None:
        self.run = run
        # A trace evaluates nothing: its replay does so on the events' clock, and need not
        # read the whole recording first to learn there is no tick in it.
        run.record({**run.ready, "ticks": False})
        if self.as_json:
            write_json_line(run.ready, self.out)
        else:
            print(EVENT_HEADER, file=self.out)
        self.out.flush()

    def items(self, batch: list[Event | Resync]) -> None:
        for item in batch:
            if isinstance(item, Resync):
                self.run.record_item(item)  # for the recording's replay; too big for the stream
                continue
            if not all(f(item) for f in self.filters):
                continue
            where = self.run.resolver(item.cgroup_id, item.pid)
            if self.container is not None and not container_matches(where, self.container):
                continue
            self.run.record_item(item)
            if self.as_json:
                write_json_line({**to_record(item), "container": where}, self.out)
            else:
                print(self.lines.line(item, where["name"] if where else "-"), file=self.out)

    def batch_done(self, now: float) -> None:
        self.out.flush()

    def end(self, stats: dict) -> None:
        stats["evicted_by_table"] = {**stats.get("evicted_by_table", {}), "exit_times": self.lines.evicted}
        if self.as_json:
            write_json_line(stats, self.out)
        print(stats_line(stats), file=self.err)
