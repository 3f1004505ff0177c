"""Kernel-side faults forced for real: dead-slot collisions with a tiny dead-slot
table, ring-buffer overflow with a one-page ring and a paused consumer.  Each
test checks its own processes only, so other activity on the host never matters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import psutil
import pytest

from children import FORK_THEN
from live import LiveCommand, Recording, alerts_of, boottime_now, saw_then_evaluated
from spawnwatch.adapters import procfs
from spawnwatch.config import load
from spawnwatch.pipeline import Pipeline
from spawnwatch.probe import PAGE_SIZE, Probe
from spawnwatch.runner import Stop, live_batches, open_probe

pytestmark = pytest.mark.root

FORKLOOP_SOURCE = Path(__file__).resolve().parents[1] / "bench" / "forkloop.c"
ONE_PAGE_KB = PAGE_SIZE // 1024
ZOMBIES = 40

# Forks ZOMBIES children that exit at once, prints their pids, reaps them when told.
# They exec /bin/true first: a child that did nothing else would stay in its birth
# slot (bpf/births.h), never taking a dead slot.
ZOMBIE_PARENT = f"""
import os, sys
pids = []
for _ in range({ZOMBIES}):
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/true", ["true"])
    pids.append(pid)
print(" ".join(map(str, pids)), flush=True)
sys.stdin.readline()
for pid in pids:
    os.waitpid(pid, 0)
print("reaped", flush=True)
sys.stdin.readline()
"""

# Spawns `sleep` children one every INTERVAL s and keeps them (a leak), and, with
# --mixed, also leaves zombies, reaps some children, and orphans a grandchild;
# with --via-shell, each child runs `sh -c 'exec sleep ...'`, two execs as an
# `npm exec` child's are; prints what it made as one JSON line, then sleeps until killed.
SUPERVISOR = FORK_THEN + """
import json, os, sys, time
marker, count, interval, mixed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "--mixed"
via_shell = sys.argv[5] == "--via-shell"

def sleeper():
    if via_shell:
        os.execv("/bin/sh", ["sh", "-c", "exec /bin/sleep " + marker])
    os.execv("/bin/sleep", ["sleep", marker])

made = {"live": [], "zombies": [], "reaped": [], "orphan": None, "orphan_parent": None}
for i in range(count):
    if i:
        time.sleep(interval)
    made["live"].append(fork(sleeper))
if mixed:
    made["zombies"] = [fork(lambda: None) for _ in range(4)]
    made["reaped"] = [fork(lambda: None) for _ in range(4)]
    for pid in made["reaped"]:
        os.waitpid(pid, 0)
    r, w = os.pipe()
    made["orphan_parent"] = fork(lambda: os.write(w, str(fork(sleeper)).encode()))
    os.waitpid(made["orphan_parent"], 0)
    made["orphan"] = int(os.read(r, 32))
print(json.dumps(made), flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def forkloop(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("forkloop") / "forkloop"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(FORKLOOP_SOURCE)], check=True)
    return binary


class Supervisor:
    """SUPERVISOR in its own session, killed with everything it made."""

    def __init__(self, count: int, interval: float, mixed: bool, via_shell: bool = False) -> None:
        self.marker = f"600.{uuid.uuid4().int % 10**12:012d}"  # a duration only this test's sleepers have
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUPERVISOR, self.marker, str(count), str(interval), "--mixed" if mixed else "-",
             "--via-shell" if via_shell else "-"],
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.pid = self.proc.pid

    def made(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()


def storm(forkloop: Path, seconds: float = 1.0, mode: str = "") -> int:
    """The heaviest fork churn for `seconds` (children that exec in bench/forkloop.c's `mode`);
    the pid of the (reaped) loop."""
    loop = subprocess.Popen([str(forkloop), str(seconds), *([mode] if mode else [])], stdout=subprocess.DEVNULL)
    loop.wait(timeout=60)
    return loop.pid


def pump(probe: Probe, pipeline: Pipeline, until: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Feed the probe's events to the pipeline until `until()` holds (generous deadline)."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}; probe stats {probe.stats()}")
        for event in probe.poll(0.05):
            pipeline.feed(event)


@pytest.mark.parametrize("dead_slots", [16, None], ids=["16 dead slots", "default dead slots"])
def test_zombies_whose_dead_slot_was_taken_are_settled_from_proc(dead_slots):
    with open_probe(dead_slots=dead_slots) as probe:
        pipeline = Pipeline(load(), reparent_hint=procfs.parent_pid)
        pipeline.feed(procfs.snapshot())
        table = pipeline.lineage
        parent = subprocess.Popen([sys.executable, "-c", ZOMBIE_PARENT], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            children = [int(pid) for pid in parent.stdout.readline().split()]
            assert len(children) == ZOMBIES
            pump(probe, pipeline, lambda: all(table.get(pid) and table.get(pid).zombie for pid in children),
                 "every child a zombie in the table")
            for _ in range(6):  # a few more polls, as a live session would make
                for event in probe.poll(0.05):
                    pipeline.feed(event)
            # Still zombies in /proc: nothing settled them early, whatever took their slots.
            assert all(table.get(pid) and table.get(pid).zombie for pid in children)
            assert all(procfs.zombie_start(pid) is not None for pid in children)
            parent.stdin.write("reap\n")
            parent.stdin.flush()
            assert parent.stdout.readline() == "reaped\n"
            pump(probe, pipeline, lambda: all(table.get(pid) is None for pid in children),
                 "every reaped child gone from the table (no phantom zombie)")
        finally:
            parent.stdin.close()
            parent.wait(timeout=30)
        stats = probe.stats()
    if dead_slots == 16:
        # 40 zombies at once in 16 slots: at least 24 exits found their slot held, and their
        # reaps, which the kernel side could not tell, came from /proc.
        assert stats["dead_slot_collisions"] >= ZOMBIES - dead_slots
        assert stats["reaps_settled_from_proc"] >= ZOMBIES - dead_slots
    else:
        assert stats["dead_slot_collisions"] == 0  # every zombie kept its dead slot
    assert stats["reaps_given_up"] == 0


def test_overflow_is_counted_per_kind_and_the_table_resynced_from_proc(forkloop):
    with open_probe(ring_buffer_kb=ONE_PAGE_KB) as probe:
        pipeline = Pipeline(load(), reparent_hint=procfs.parent_pid)
        pipeline.feed(procfs.snapshot())
        # The consumer pauses: nothing polls while a storm overflows the one-page ring
        # and the supervisor spawns, leaves zombies, reaps and orphans.
        storm_pid = storm(forkloop)
        with Supervisor(count=6, interval=0.05, mixed=True) as supervisor:
            made = supervisor.made()
            for batch in live_batches(probe, Stop(1.5)):
                for item in batch:
                    pipeline.feed(item)
            stats = probe.stats()
            table = pipeline.lineage

            def children_in_table(pid: int) -> set[int]:
                return {p.pid for p in table.unreaped() if p.ppid == pid}

            assert children_in_table(supervisor.pid) == {c.pid for c in psutil.Process(supervisor.pid).children()}
            for pid in made["live"]:
                proc = table.get(pid)
                assert proc.alive and proc.spawner.pid == supervisor.pid
                assert proc.argv == ("sleep", supervisor.marker)
            assert all(table.get(pid).zombie for pid in made["zombies"])
            assert all(table.get(pid) is None for pid in made["reaped"] + [made["orphan_parent"]])
            orphan = table.get(made["orphan"])
            assert orphan.alive and orphan.ppid == procfs.parent_pid(made["orphan"]) != made["orphan_parent"]
            assert table.get(storm_pid) is None and children_in_table(storm_pid) == set()
    assert stats["lost_by_kind"]["fork"] > 0 and stats["lost"] == sum(stats["lost_by_kind"].values())
    assert stats["resyncs"] >= 1
    assert pipeline.counts()["resync_added"] > 0


def test_watch_reports_a_leak_that_grew_while_its_events_were_lost(forkloop, tmp_path):
    recording = tmp_path / "gap.msgpack"
    with LiveCommand("watch", "--json", "--ring-buffer-kb", str(ONE_PAGE_KB), "--record", str(recording)) as watch:
        os.kill(watch.proc.pid, signal.SIGSTOP)  # a paused consumer
        try:
            # The one-page ring is full (watch counts a fork-only storm's children in the kernel,
            # so they exec, each its own command line): the whole leak below is lost.  Its
            # children exec twice, as an `npm exec` child does: a child that exec'd once and
            # does nothing more needs no record until the sweep reads it from its slot.
            storm(forkloop, mode="exec-distinct")
            with Supervisor(count=12, interval=1.1, mixed=False, via_shell=True) as supervisor:
                supervisor.made()
                os.kill(watch.proc.pid, signal.SIGCONT)
                records = watch.wait_for(lambda rs: any(
                    r["kind"] == "alert" and r["rule"] == "accumulating" and r["spawner"]["pid"] == supervisor.pid
                    for r in rs), timeout=60)
        finally:
            os.kill(watch.proc.pid, signal.SIGCONT)
    [alert] = [r for r in records if r["kind"] == "alert" and r["spawner"]["pid"] == supervisor.pid]
    assert alert["state"] == "firing" and alert["live"] == 12
    stats = watch.stats
    assert stats["lost_by_kind"]["fork"] > 0 and stats["lost"] == sum(stats["lost_by_kind"].values())
    assert stats["resyncs"] >= 1
    assert watch.returncode == 0
    # The resync is recorded: the replay raises the same alerts.
    replay = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(recording), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]

    def alerts(rs: list[dict]) -> list[tuple]:
        return [(a["state"], a["rule"], a["signature"], a["spawner"]["pid"], a["live"], tuple(a["pids"]))
                for a in rs if a["kind"] == "alert"]

    assert alerts(replayed) == alerts(watch.records)
    assert replayed[-1]["resyncs"] == stats["resyncs"]


def test_a_small_ring_delivers_every_record_once_in_order_across_many_wraps(forkloop):
    """A 128 KiB ring drained every few ms wraps several times under a fork storm:
    each child of the loops shows its fork and exit once each and in that order, or
    its one Brief (records crossing the ring's end included), and one is missing
    only where the kernel counted it lost or its program skipped.  (Reaps are left
    out: one comes after an RCU grace period, by when a busy host may have reused
    the pid.)"""
    ring_kb = 128
    wrapped_thrice = 3 * ring_kb * 1024
    with open_probe(ring_buffer_kb=ring_kb) as probe:
        loops: set[int] = set()
        forks = 0
        lives: list[list[str]] = []
        life_of: dict[int, list[str]] = {}

        def take(events: list) -> None:
            for event in events:
                if event.kind.value in ("fork", "brief") and event.ppid in loops:
                    life_of[event.pid] = []
                    lives.append(life_of[event.pid])
                if event.kind.value in ("fork", "exit", "brief") and event.pid in life_of:
                    life_of[event.pid].append(event.kind.value)

        # A storm of a second at a time until the ring has wrapped 3 times (read, not estimated).
        while probe.stats()["ring_bytes_taken"] < wrapped_thrice and len(loops) < 10:
            loop = subprocess.Popen([str(forkloop), "1"], stdout=subprocess.PIPE, text=True)
            loops.add(loop.pid)
            while loop.poll() is None:
                take(probe.poll(0.005))
            forks += int(loop.stdout.read())
        # Each child's exit came before its loop's waitpid returned; a child whose free the
        # kernel skipped is still held in its slot: the drain announces it, as the sweep would.
        take(probe.drain())
        stats = probe.stats()
    assert stats["ring_bytes_taken"] >= wrapped_thrice, stats  # the ring wrapped 3 times at least
    assert all(life in (["fork", "exit"], ["fork"], ["brief"]) for life in lives), [
        life for life in lives if life not in (["fork", "exit"], ["brief"])]
    # A child whose brief was lost is missing whole; one whose reap was skipped is told by the sweep.
    missing = {"fork": forks - len(lives), "exit": sum(life == ["fork"] for life in lives)}
    allowed = {"fork": stats["lost_by_kind"]["fork"] + stats["lost_by_kind"]["brief"] + stats["missed_by_kind"]["fork"],
               "exit": stats["lost_by_kind"]["exit"] + stats["missed_by_kind"]["exit"]}
    assert all(missing[kind] <= allowed[kind] for kind in missing), (missing, stats)


def test_a_fork_storm_whose_loops_reap_every_child_raises_no_alert(forkloop, tmp_path):
    """Two loops forking children that exit at once, each reaped by its loop: healthy.
    Under such a storm the kernel skips some runs of sched_process_free (recursion
    misses); a child whose free was skipped must not linger as a zombie of its loop
    (it did: 29 such phantoms raised a zombie alert on forkloop)."""
    recording = Recording(tmp_path / "storm.msgpack")
    with LiveCommand("watch", "--json", "--record", str(recording.path)):
        loops = [subprocess.Popen([str(forkloop), "12"], stdout=subprocess.DEVNULL) for _ in range(2)]
        for loop in loops:
            loop.wait(timeout=120)
        pids = {loop.pid for loop in loops}
        # watch saw the loops' children, and evaluated the zombie rule for 3 s after the storm
        records = recording.wait_for(saw_then_evaluated(pids, boottime_now() + 3), timeout=120,
                                     what="the loops' children and an evaluation 3 s after the storm")
    alerts = [(r["rule"], r["spawner"]["comm"], r["message"]) for r in alerts_of(records, pids)]
    assert alerts == []
