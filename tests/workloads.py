"""Synthetic versions of the workloads the detection defaults are judged on:
the three leak shapes and the healthy ones of the issue.  Each writes into a
`Stream`; `run` feeds one through a Pipeline the way `watch` does."""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Callable

from spawnwatch.alerts import Alert
from spawnwatch.config import Config, load
from spawnwatch.detect import SocketsOf
from spawnwatch.events import Snapshot
from spawnwatch.pipeline import Pipeline
from streams import BOOT_OFFSET, Stream, host

SUPERVISOR_PID = 200
NPM_EXEC = ("node", "/usr/bin/npm", "exec", "--yes", "--package=file:/tmp/spawnwatch-sim/pkg", "--", "fs-server")
SERVER_SIGNATURE = "npm exec fs-server"
SESSION_S = 2.0  # an orphan-mode `npm exec` lives beside its server this long (supervisor.js SESSION_S)


class Schedule:
    """Callbacks at stream times, run in time order (so concurrent children interleave)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def at(self, t: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (t, next(self._order), action))

    def run(self) -> Stream:
        while self._queue:
            t, _, action = heapq.heappop(self._queue)
            self.stream.at(t)
            action()
        return self.stream


def npm_child(plan: Schedule, t: float, mode: str, linger: float | None = None,
              adopter_reaps_after: float | None = 0.0) -> None:
    """One `npm exec` child of the supervisor with its sh and node descendants, ended per `mode`.
    An orphan-mode server exits `linger` s after its `npm exec` was killed (supervisor.js
    --linger); its sh follows, and its adopter reaps it `adopter_reaps_after` s later (None: never)."""
    s = plan.stream
    box: dict[str, int] = {}

    def start() -> None:
        box["npm"] = s.spawn(SUPERVISOR_PID, *NPM_EXEC)

    def descendants() -> None:
        box["sh"] = s.spawn(box["npm"], "sh", "-c", "'fs-server'")
        box["node"] = s.spawn(box["sh"], "node", "/root/.npm/_npx/1b4999a6280848f8/node_modules/.bin/fs-server")

    def kill_npm_only() -> None:  # orphan: the supervisor kills and reaps the npm child
        s.exit(box["npm"])
        s.reap(box["npm"])
        s.reparent(box["sh"], 1)

    def exit_unreaped() -> None:  # zombie: the whole child ends, the supervisor never waits
        s.end(box["node"])
        s.end(box["sh"])
        s.exit(box["npm"])

    def orphan_exits() -> None:
        s.end(box["node"])
        s.exit(box["sh"])
        if adopter_reaps_after is not None:
            plan.at(s.t + adopter_reaps_after, lambda: s.reap(box["sh"]))

    plan.at(t, start)
    plan.at(t + 0.8, descendants)
    if mode == "orphan":
        plan.at(t + 0.8 + SESSION_S, kill_npm_only)
        if linger is not None:
            plan.at(t + 0.8 + SESSION_S + linger, orphan_exits)
    elif mode == "zombie":
        plan.at(t + 1.2, exit_unreaped)


def leak(mode: str, interval: float = 2.0, count: int = 15, start: float = 10.0, linger: float | None = None,
         adopter_reaps_after: float | None = 0.0) -> Stream:
    plan = Schedule(Stream(t=start))
    for i in range(count):
        npm_child(plan, start + i * interval, mode, linger, adopter_reaps_after)
    return plan.run()


def pool(size: int, start: float = 10.0, spacing: float = 0.0, lifetime: float = 300.0) -> Stream:
    plan = Schedule(Stream(t=start))
    for i in range(size):
        t = start + i * spacing
        box: dict[str, int] = {}
        plan.at(t, lambda box=box: box.setdefault("pid", plan.stream.spawn(SUPERVISOR_PID, "node", "worker.js")))
        plan.at(t + lifetime, lambda box=box: plan.stream.end(box["pid"]))
    return plan.run()


def respawning_pool(size: int = 6, duration: float = 300.0, start: float = 10.0, seed: int = 7) -> Stream:
    """Each worker lives 1-3 s and is replaced at once."""
    rng = random.Random(seed)
    plan = Schedule(Stream(t=start))

    def slot(t: float) -> None:
        def run() -> None:
            pid = plan.stream.spawn(SUPERVISOR_PID, "node", "worker.js")
            end = plan.stream.t + rng.uniform(1, 3)
            plan.at(end, lambda: plan.stream.end(pid))
            if end < start + duration:
                plan.at(end, lambda: slot(end))

        plan.at(t, run)

    for _ in range(size):
        slot(start)
    return plan.run()


def parallel_jobs(argv_of: Callable[[int], tuple[str, ...]], jobs: int, parallel: int, durations: tuple[float, float],
                  parent_argv: tuple[str, ...], start: float = 10.0, seed: int = 3) -> Stream:
    """`make -jN` / `xargs -PN`: a parent running `jobs` commands, `parallel` at a time."""
    rng = random.Random(seed)
    plan = Schedule(Stream(t=start))
    parent = {}
    plan.at(start, lambda: parent.setdefault("pid", plan.stream.spawn(SUPERVISOR_PID, *parent_argv)))
    queue = iter(range(jobs))

    def next_job(t: float) -> None:
        job = next(queue, None)
        if job is None:
            return

        def run() -> None:
            pid = plan.stream.spawn(parent["pid"], *argv_of(job))
            end = plan.stream.t + rng.uniform(*durations)
            plan.at(end, lambda: plan.stream.end(pid))
            plan.at(end, lambda: next_job(end))

        plan.at(t, run)

    for _ in range(parallel):
        next_job(start + 0.01)
    return plan.run()


def shell_loop(commands: int, period: float, argv: tuple[str, ...] = ("true",), start: float = 10.0) -> Stream:
    plan = Schedule(Stream(t=start))
    shell = {}
    plan.at(start, lambda: shell.setdefault("pid", plan.stream.spawn(SUPERVISOR_PID, "bash", "loop.sh")))
    for i in range(commands):
        t = start + 0.01 + i * period

        def run(t=t) -> None:
            pid = plan.stream.spawn(shell["pid"], *argv)
            plan.at(t + period / 2, lambda: plan.stream.end(pid))

        plan.at(t, run)
    return plan.run()


def run(stream: Stream, snapshot: Snapshot | None = None, until: float | None = None,
        config: Config | None = None, sockets_of: SocketsOf | None = None) -> list[tuple[float, Alert]]:
    """(stream time, alert) for every alert `watch` would have sent, evaluating every second;
    the sockets of suspicious groups' processes read through `sockets_of` (None: not read)."""
    pipeline = Pipeline(config or load(), sockets_of=sockets_of)
    alerts: list[tuple[float, Alert]] = []
    first = snapshot or host()
    alerts += [(first.ts - BOOT_OFFSET, a) for a in pipeline.feed(first)]
    last = max([e.ts for e in stream.events], default=first.ts)
    end = BOOT_OFFSET + until if until is not None else last + 10
    ticks = (first.ts + k for k in itertools.count(1))
    tick = next(ticks)
    for event in stream.events:
        while tick < event.ts:
            alerts += [(tick - BOOT_OFFSET, a) for a in pipeline.advance(tick)]
            tick = next(ticks)
        alerts += [(event.ts - BOOT_OFFSET, a) for a in pipeline.feed(event)]
    while tick <= end:
        alerts += [(tick - BOOT_OFFSET, a) for a in pipeline.advance(tick)]
        tick = next(ticks)
    return alerts
