"""`spawnwatch simulate`: each mode has the process shape it claims, with real npm
processes, and nothing it started survives it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import psutil
import pytest

from conftest import run
from spawnwatch import simulate
from spawnwatch.simulate import PACKAGE, SUPERVISOR, Settings, Simulation, group_members

MIB = 1024 * 1024


def of_kind(records: list[dict], kind: str) -> list[dict]:
    return [record for record in records if record["kind"] == kind]


def at_least(kind: str, count: int):
    return lambda records: len(of_kind(records, kind)) >= count


def is_npm(proc: psutil.Process) -> bool:
    # npm retitles itself: argv `node /usr/bin/npm exec ...` becomes `npm`, then `npm exec magic`.
    return "npm" in {os.path.basename(word) for word in " ".join(proc.cmdline()).split()}


def running_children(pid: int) -> list[psutil.Process]:
    return [child for child in psutil.Process(pid).children() if child.status() != psutil.STATUS_ZOMBIE]


def spawned_and_running(sim: Simulation) -> list[psutil.Process]:
    """The supervisor's running children that it reported spawning (a child still between
    fork and exec is the supervisor's own image)."""
    spawned = sim.spawned_groups()
    return [child for child in running_children(sim.pid) if child.pid in spawned]


def test_settings_give_the_supervisor_only_the_options_set() -> None:
    assert Settings("pool", children=3, memory_mb=5).args() == ["pool", "--memory", "5", "--children", "3"]
    with pytest.raises(ValueError, match="mode must be one of"):
        Settings("leak")


def test_the_supervisor_writes_the_kinds_declared_in_python() -> None:
    written = set(re.findall(r'kind: "(\w+)"', (PACKAGE / SUPERVISOR).read_text()))
    assert written == {simulate.SIMULATE, simulate.SPAWN, simulate.UP, simulate.KILL, simulate.HANGUP,
                       simulate.EXIT, simulate.ERROR, simulate.STOP}


def test_cli_rejects_a_bad_mode_and_a_server_count_beyond_the_package(spawnwatch_cmd) -> None:
    assert run([*spawnwatch_cmd, "simulate", "leak"]).returncode == 2
    assert run([*spawnwatch_cmd, "simulate", "accumulate", "--servers", "6"]).returncode == 2


def test_cli_without_node_fails_in_one_line(spawnwatch_cmd) -> None:
    result = run([*spawnwatch_cmd, "simulate", "accumulate"], env={**os.environ, "PATH": "/nonexistent"})

    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the simulation needs node and npm on PATH (sudo make setup installs them)"


@pytest.mark.npm
def test_accumulate_keeps_adding_live_npm_children() -> None:
    with Simulation("accumulate", interval=0.7, servers=2, memory_mb=5) as sim:
        sim.wait_for(at_least("spawn", 2))
        first = spawned_and_running(sim)
        sim.wait_for(at_least("spawn", len(sim.spawned_groups()) + 2))
        later = spawned_and_running(sim)

        assert {child.pid for child in first} < {child.pid for child in later}
        assert all(is_npm(child) for child in later)
        assert {record["server"] for record in of_kind(sim.records, "spawn")} == {"magic", "filesystem"}
        assert not of_kind(sim.records, "exit")


@pytest.mark.npm
def test_orphan_leaves_the_node_server_alive_without_its_npm_exec_parent() -> None:
    memory_mb = 80  # more than a bare node server (~41 MiB RSS), so RSS proves it is held
    with Simulation("orphan", interval=1, memory_mb=memory_mb) as sim:
        records = sim.wait_for(at_least("kill", 2))
        kills = of_kind(records, "kill")
        # Its exit record comes once the supervisor reaped it: by then its children were reparented.
        killed = {kill["pid"] for kill in kills}
        sim.wait_for(lambda records: killed <= {exit["pid"] for exit in of_kind(records, "exit")})
        for kill in kills:
            orphan = psutil.Process(kill["orphaned"][0])
            ancestors = {parent.pid for parent in orphan.parents()}

            assert orphan.is_running() and orphan.status() != psutil.STATUS_ZOMBIE
            assert kill["pid"] not in ancestors and sim.pid not in ancestors
            assert orphan.cmdline()[0] == "node" and orphan.cmdline()[1].endswith("/.bin/magic")
            assert orphan.memory_info().rss >= memory_mb * MIB


@pytest.mark.npm
def test_zombie_children_of_the_supervisor_stay_unreaped() -> None:
    with Simulation("zombie", interval=1, lifetime=0.3, memory_mb=5) as sim:
        exits = of_kind(sim.wait_for(at_least("exit", 2)), "exit")
        sim.wait_for(at_least("spawn", len(sim.spawned_groups()) + 1))

        for exit in exits:
            zombie = psutil.Process(exit["pid"])
            assert not exit["reaped"]
            assert zombie.status() == psutil.STATUS_ZOMBIE and zombie.ppid() == sim.pid


@pytest.mark.npm
def test_pool_holds_a_fixed_set_of_workers() -> None:
    with Simulation("pool", children=3, interval=0.7, memory_mb=5) as sim:
        sim.wait_for(at_least("up", 3))
        workers = {child.pid for child in running_children(sim.pid)}
        with pytest.raises(TimeoutError):
            sim.wait_for(lambda records: len(of_kind(records, "spawn")) > 3 or bool(of_kind(records, "exit")), 2)

        assert len(workers) == 3
        assert {child.pid for child in running_children(sim.pid)} == workers


@pytest.mark.npm
def test_respawn_replaces_each_exited_worker() -> None:
    workers = 2
    with Simulation("respawn", children=workers, interval=0.7, lifetime=0.3, memory_mb=5) as sim:
        sim.wait_for(at_least("exit", 3))
        sim.wait_for(lambda records: len(of_kind(records, "spawn")) - len(of_kind(records, "exit")) == workers)
        exited = {record["pid"] for record in of_kind(sim.records, "exit")}

        assert all(record["reaped"] for record in of_kind(sim.records, "exit"))
        assert len(of_kind(sim.records, "spawn")) >= workers + 3
        assert len(running_children(sim.pid)) <= workers
        assert not exited & {child.pid for child in running_children(sim.pid)}


@pytest.mark.npm
def test_cli_json_names_the_supervisor_and_ctrl_c_leaves_nothing_behind(spawnwatch_cmd) -> None:
    cli = subprocess.Popen(
        [*spawnwatch_cmd, "simulate", "accumulate", "--interval", "1", "--memory", "5", "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    records = []
    try:
        for line in cli.stdout:
            records.append(json.loads(line))
            if len(of_kind(records, "up")) == 2:
                break
        spawners = {psutil.Process(record["pid"]).ppid() for record in of_kind(records, "spawn")}
    finally:
        cli.send_signal(signal.SIGINT)
        records += [json.loads(line) for line in cli.stdout]
        status = cli.wait(timeout=60)

    assert status == 0
    assert records[0]["kind"] == "simulate" and records[0]["mode"] == "accumulate"
    assert spawners == {records[0]["pid"]}
    assert of_kind(records, "stop")[0]["reason"] == "SIGTERM"
    assert group_members({record["pid"] for record in of_kind(records, "spawn")}) == []
