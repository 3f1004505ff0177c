"""`spawnwatch watch` on the real kernel against real workloads.

One `watch --json --record` runs for the whole module.  Each leak mode of
`spawnwatch simulate` must raise its rule with the supervisor as spawner, the
`npm exec magic` signature and counts that match what the supervisor reported;
the healthy modes, `make -j4`, `xargs -P4` and a shell loop must raise nothing
against their processes, once the recording shows `watch` saw them and evaluated
SETTLE_S after they ended.  Last, the recording replays to the same alerts.

Alerts of other processes on the host are ignored: each check looks only at
alerts whose spawner is one of its workload's processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import psutil
import pytest

from live import LiveCommand, Recording, alerts_of, boottime_now, saw_then_evaluated
from spawnwatch.simulate import Simulation

pytestmark = [pytest.mark.root, pytest.mark.npm, pytest.mark.slow]

SIGNATURE = "npm exec magic"  # the simulation's default server, however npm shows it
SETTLE_S = 3.0  # evaluations happen every second: three of them after a healthy workload ends
RECORDED_S = 120.0  # generous bound on watch recording a workload and evaluating SETTLE_S past its end
Record = dict


class Watch(NamedTuple):
    """A `spawnwatch watch --json --record FILE` of the module: what it prints, and what it records."""

    live: LiveCommand
    recorded: Recording


@contextmanager
def watching(tmp: Path, config: Path | None = None) -> Iterator[Watch]:
    recording = tmp / "live.msgpack"
    with LiveCommand("watch", "--json", "--record", str(recording),
                     *(["--config", str(config)] if config is not None else []), ready_timeout=300) as live:
        assert live.records[0]["kind"] == "ready"
        yield Watch(live, Recording(recording))


def alerts_once_settled(watch: Watch, pids: set[int], ended: float) -> list[Record]:
    """The alerts against `pids` once the recording shows watch saw them and evaluated
    SETTLE_S after `ended`: a lagging or dropping watch fails here, not passes."""
    records = watch.recorded.wait_for(saw_then_evaluated(pids, ended + SETTLE_S), timeout=RECORDED_S,
                                      what=f"event of {sorted(pids)[:5]} and an evaluation {SETTLE_S} s after")
    return alerts_of(records, pids)


def waited(watch: Watch, find: Callable[[list[Record]], Record | None], what: str, timeout: float) -> Record:
    """The record `find` picks, once watch printed it."""
    return find(watch.live.wait_for(find, what, timeout))


@pytest.fixture(scope="module")
def watcher(tmp_path_factory):
    with watching(tmp_path_factory.mktemp("watch")) as watch:
        yield watch


@pytest.fixture(scope="module")
def watchers(watcher, tmp_path_factory):
    """The default watch and one without the [detect] servers list, side by side: what is
    healthy must be told apart without the list too."""
    tmp = tmp_path_factory.mktemp("watch-no-servers")
    (tmp / "no-servers.toml").write_text("[detect]\nservers = []\n")
    with watching(tmp, tmp / "no-servers.toml") as bare:
        yield (watcher, bare)


def firing(rule: str, spawner: int) -> Callable[[list[Record]], Record | None]:
    def find(records: list[Record]) -> Record | None:
        return next((r for r in records if r["kind"] == "alert" and r["state"] == "firing"
                     and r["rule"] == rule and r["spawner"]["pid"] == spawner), None)
    return find


def resolved(rule: str, spawner: int) -> Callable[[list[Record]], Record | None]:
    def find(records: list[Record]) -> Record | None:
        return next((r for r in records if r["kind"] == "alert" and r["state"] == "resolved"
                     and r["rule"] == rule and r["spawner"]["pid"] == spawner), None)
    return find


def of_kind(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if r["kind"] == kind]



LEAK_RULES = {"accumulate": "accumulating", "orphan": "orphaned", "zombie": "zombie"}


def check_leak_alert(mode: str, alert: Record, records: list[Record]) -> None:
    """`alert` counts what the supervisor leaking in `mode` reported in `records`."""
    spawned = {r["pid"] for r in of_kind(records, "spawn")}
    assert alert["signature"] == SIGNATURE
    assert alert["spawner"]["comm"] == "node" and any(a.endswith("supervisor.js") for a in alert["spawner"]["argv"])
    assert alert["container"] is None
    assert alert["spawned"] <= len(spawned)
    if mode == "accumulate":
        assert alert["live"] == alert["spawned"] >= 9 and alert["exited"] == 0 and alert["zombies"] == 0
        assert set(alert["pids"]) <= spawned and len(alert["pids"]) == alert["live"]
        assert alert["rss_bytes"] > alert["live"] * 10 * 1024 * 1024  # each server holds 10 MiB
    elif mode == "orphan":
        killed_servers = {pid for r in of_kind(records, "kill") for pid in r["orphaned"]}
        servers = {r["server_pid"] for r in of_kind(records, "up")}
        leaked_servers = set(alert["pids"]) & servers
        assert alert["orphans"] >= 8 and alert["exited"] >= 3
        assert leaked_servers and leaked_servers <= killed_servers
        assert not set(alert["pids"]) & spawned  # the killed npm exec children are gone, not leaked
    else:
        # Each child counted once: live, or exited (a zombie among those). How many are still
        # starting up when the alert fires is the workload's pace, not a count of ours.
        assert alert["zombies"] >= 8 and alert["exited"] >= alert["zombies"] > alert["live"]
        assert alert["spawned"] == alert["live"] + alert["exited"]
        assert set(alert["pids"]) <= spawned and len(alert["pids"]) == alert["zombies"]


def test_each_leak_mode_raises_its_rule_against_the_supervisor(watcher):
    """The three leaks side by side, each against its own supervisor."""
    with ExitStack() as stack:
        sims = {mode: stack.enter_context(Simulation(mode, max_spawns=12, memory_mb=10)) for mode in LEAK_RULES}
        alerts = {mode: waited(watcher, firing(rule, sims[mode].pid), f"{rule} alert for {sims[mode].pid}", timeout=180)
                  for mode, rule in LEAK_RULES.items()}
        records = {mode: sim.records for mode, sim in sims.items()}
    for mode, rule in LEAK_RULES.items():
        check_leak_alert(mode, alerts[mode], records[mode])
        # Only this rule: each shape is told apart from the others.
        assert {a["rule"] for a in alerts_of(watcher.live.snapshot(), {sims[mode].pid})} == {rule}, mode
    # The simulations cleaned up on exit: each condition cleared.
    for mode, rule in LEAK_RULES.items():
        done = waited(watcher, resolved(rule, sims[mode].pid), f"resolved {rule}", timeout=60)
        assert done["signature"] == SIGNATURE
        assert {(a["rule"], a["signature"]) for a in alerts_of(watcher.live.snapshot(), {sims[mode].pid})} == {(rule, SIGNATURE)}


def test_a_leak_already_there_is_reported_from_the_snapshot(watcher):
    # Started after the leak: /proc shows npm's retitled children (`npm exec magic`), and
    # their start times tell that they came one by one.
    with Simulation("accumulate", interval=1.2, max_spawns=10, memory_mb=10) as sim:
        sim.wait_for(lambda records: len(of_kind(records, "up")) >= 10, timeout=120)
        with LiveCommand("watch", "--json", ready_timeout=300) as late:
            late.wait_for(lambda records: alerts_of(records, {sim.pid}), f"an alert against {sim.pid}", timeout=120)
        spawned = {r["pid"] for r in of_kind(sim.records, "spawn")}
    assert late.returncode == 0, late.stderr
    [alert] = alerts_of(late.records, {sim.pid})
    assert (alert["rule"], alert["state"], alert["signature"]) == ("accumulating", "firing", SIGNATURE)
    assert alert["live"] == alert["spawned"] == 10 and set(alert["pids"]) == spawned


def test_a_fixed_pool_and_a_respawning_pool_raise_nothing(watchers):
    """Side by side: a pool held at full size over many evaluations, and one whose workers
    die and are replaced."""
    with Simulation("pool", memory_mb=10) as pool, Simulation("respawn", memory_mb=10) as respawn:
        pool.wait_for(lambda records: len(of_kind(records, "up")) >= 8, timeout=120)
        full = boottime_now()
        # the pool at full size, over many evaluations
        for watcher in watchers:
            watcher.recorded.wait_for(saw_then_evaluated({pool.pid}, full + 10), timeout=RECORDED_S,
                                      what="evaluations of the full pool for 10 s")
        respawn.wait_for(lambda records: len(of_kind(records, "exit")) >= 24, timeout=180)
    ended = boottime_now()
    for sim in (pool, respawn):  # each one's own positive control: seen, then evaluated past its end
        assert [alerts_once_settled(w, {sim.pid}, ended) for w in watchers] == [[], []], sim.settings.mode


class Tracker:
    """The pids of a workload's process tree, polled while it runs (its spawners live long
    enough to be seen: a spawner of many children is never a blink)."""

    def __init__(self, root: int) -> None:
        self.pids = {root}
        self._root = root
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set():
            try:
                self.pids.update(p.pid for p in psutil.Process(self._root).children(recursive=True))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    def stop(self) -> set[int]:
        self._done.set()
        self._thread.join()
        return self.pids


def run_tracked(script: str, cwd: Path) -> set[int]:
    process = subprocess.Popen(["bash", "-c", script], cwd=cwd, stdout=subprocess.DEVNULL)
    tracker = Tracker(process.pid)
    assert process.wait(timeout=300) == 0
    return tracker.stop()


MAKEFILE = """\
SOURCES := $(wildcard src/*.c)
OBJECTS := $(SOURCES:src/%.c=build/%.o)
all: $(OBJECTS)
build/%.o: src/%.c | build
\tgcc -O0 -c $< -o $@
build:
\tmkdir -p build
"""


@pytest.mark.parametrize(
    "name, script",
    [
        ("make -j4", "make -j4 -s"),
        ("xargs -P4", "seq 200 | xargs -P4 -I{} sh -c 'echo {} > /dev/null; sleep 0.05'"),
        ("shell loop", "for i in $(seq 400); do /bin/true; done"),
    ],
)
def test_ordinary_parallel_work_raises_nothing(watchers, tmp_path, name, script):
    (tmp_path / "src").mkdir()
    for i in range(40):
        (tmp_path / "src" / f"unit{i}.c").write_text(f"int unit{i}(int x) {{ return x * {i}; }}\n")
    (tmp_path / "Makefile").write_text(MAKEFILE)
    pids = run_tracked(script, tmp_path)
    ended = boottime_now()
    assert [alerts_once_settled(w, pids, ended) for w in watchers] == [[], []]


def comparable(alert: Record) -> tuple:
    """An alert without what only a live host can tell: memory (also in the message) and containers."""
    return (alert["state"], alert["rule"], alert["signature"], alert["spawner"]["pid"], alert["live"],
            alert["spawned"], alert["exited"], alert["zombies"], alert["orphans"], tuple(alert["pids"]))


def test_the_live_recording_replays_to_the_same_alerts(watcher):
    with Simulation("accumulate", max_spawns=12, memory_mb=10) as sim:  # an alert of its own to replay
        leak = waited(watcher, firing("accumulating", sim.pid), f"accumulating alert for {sim.pid}", timeout=180)
    assert watcher.live.stop() == 0
    assert watcher.live.records[-1]["kind"] == "stats" and watcher.live.records[-1]["lost"] == 0
    # Every bounded cache of the session says what it let go, the pipeline's caches of command lines too.
    evicted = watcher.live.records[-1]["evicted_by_table"]
    assert {"known_processes", "exec_argvs", "signed_argvs", "container_client_argvs", "unmasked_words",
            "unchanged_words", "redacted_argvs"} <= set(evicted), evicted
    replay = subprocess.run(
        [sys.executable, "-m", "spawnwatch", "watch", "--replay", str(watcher.recorded.path), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert replay.returncode == 0, replay.stderr
    replayed = [json.loads(line) for line in replay.stdout.splitlines()]
    assert replayed[-1]["kind"] == "stats"
    # Every alert of the session, the leak modes' and any other process's on this host alike.
    assert [comparable(a) for a in replayed if a["kind"] == "alert"] == [comparable(a) for a in of_kind(watcher.live.records, "alert")]
    assert comparable(leak) in [comparable(a) for a in replayed if a["kind"] == "alert"]
