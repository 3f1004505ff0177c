"""Detection with the default thresholds on synthetic versions of the issue's workloads.

The same workloads run for real (simulate, make, xargs, a shell loop) in
test_watch_e2e.py; these pin down the rules' arithmetic without root."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spawnwatch.config import load
from spawnwatch.detect import SpawnHistory, charged_child, spawn_moments
from spawnwatch.lineage import Process
from streams import Stream, host, info
from workloads import (
    SERVER_SIGNATURE,
    Schedule,
    SUPERVISOR_PID,
    leak,
    parallel_jobs,
    pool,
    respawning_pool,
    run,
    shell_loop,
)

LEAK_START = 10.0


def firing(alerts):
    return [(t, a) for t, a in alerts if a.state == "firing"]


def first(alerts, rule):
    return next(((t, a) for t, a in alerts if a.rule == rule and a.state == "firing"), (None, None))


@pytest.mark.parametrize(
    "mode, rule",
    [("accumulate", "accumulating"), ("orphan", "orphaned"), ("zombie", "zombie")],
)
def test_each_leak_shape_is_caught_within_20_s_of_the_first_spawn(mode, rule):
    alerts = run(leak(mode, interval=2.0, count=15, start=LEAK_START), until=LEAK_START + 40)
    t, alert = first(alerts, rule)
    assert alert is not None, [a.message for _, a in alerts]
    assert t - LEAK_START <= 20
    assert alert.spawner["pid"] == SUPERVISOR_PID
    assert alert.signature == SERVER_SIGNATURE
    assert {a.rule for _, a in firing(alerts)} == {rule}


def test_accumulating_counts_and_pids():
    _, alert = first(run(leak("accumulate", count=15), until=LEAK_START + 40), "accumulating")
    assert alert.live == alert.spawned >= 9 and alert.exited == 0 and alert.zombies == 0
    assert len(alert.pids) == alert.live
    assert alert.spawner == {"pid": 200, "ppid": 100, "argv": ["python3", "supervisor.py"], "comm": "python3"}


def test_orphaned_counts_the_leaked_descendants_and_charges_the_supervisor():
    alerts = run(leak("orphan", count=15), until=LEAK_START + 40)
    _, alert = first(alerts, "orphaned")
    # the newest child may still be in its session
    assert alert.live <= 1 and alert.exited == alert.spawned - alert.live and alert.zombies == 0
    assert alert.orphans >= 8 and alert.orphans % 2 == 0  # sh and node of each killed child
    assert len(alert.pids) == alert.orphans


def test_zombie_counts():
    _, alert = first(run(leak("zombie", count=15), until=LEAK_START + 40), "zombie")
    assert alert.zombies >= 8 and alert.exited == alert.zombies and alert.live <= 1  # the newest child still runs


def test_a_leak_resolves_when_its_children_are_ended():
    s = leak("accumulate", count=12)
    s.at(s.t + 5)
    for fork in [e for e in s.events if e.kind.value == "fork"][::-1]:  # descendants first
        s.end(fork.pid)
    alerts = run(s)
    assert [a.state for _, a in alerts] == ["firing", "resolved"]
    assert alerts[-1][1].live == 0


@pytest.mark.parametrize(
    "name, stream",
    [
        ("pool of 8 started at once", pool(8)),
        ("pool of 8 started one by one", pool(8, spacing=2.0)),
        ("pool keeping 6 alive, respawned after 1-3 s", respawning_pool(6, duration=300)),
        (
            "make -j4",
            parallel_jobs(lambda i: ("sh", "-c", f"cc -c src/file{i}.c -o build/file{i}.o"), jobs=400, parallel=4,
                          durations=(0.2, 1.5), parent_argv=("make", "-j4")),
        ),
        (
            "xargs -P4",
            parallel_jobs(lambda i: ("gzip", "-9", f"log.{i}"), jobs=600, parallel=4, durations=(0.05, 0.4),
                          parent_argv=("xargs", "-P4", "-n1", "gzip", "-9")),
        ),
        ("shell loop of 500 short commands", shell_loop(500, period=0.01)),
        ("shell loop of 900 commands over 3 minutes", shell_loop(900, period=0.2, argv=("curl", "-s", "localhost"))),
        ("polling loop: sleep 1 for 10 minutes", shell_loop(600, period=1.0, argv=("sleep", "1"))),
    ],
)
def test_healthy_workloads_raise_nothing(name, stream):
    assert run(stream) == []


def test_a_snapshot_with_20_live_children_started_over_minutes_alerts_at_once():
    children = [info(1000 + i, SUPERVISOR_PID, 10.0 + i * 30, "npm exec fs-server") for i in range(20)]
    snapshot = host(700.0, *children)
    alerts = run(Stream(t=700), snapshot=snapshot, until=705)
    t, alert = first(alerts, "accumulating")
    assert t == 700.0
    assert alert.live == 20 and alert.signature == SERVER_SIGNATURE and alert.spawner["pid"] == SUPERVISOR_PID


def test_a_snapshot_of_a_pool_started_in_one_burst_is_quiet():
    children = [info(1000 + i, SUPERVISOR_PID, 10.0 + i * 0.05, "node", "worker.js") for i in range(20)]
    assert run(Stream(t=3600), snapshot=host(3600.0, *children), until=3605) == []


def test_a_big_pool_with_a_few_crash_respawns_is_quiet():
    plan = Schedule(Stream(t=10))
    workers = []
    for _ in range(20):
        plan.at(10, lambda: workers.append(plan.stream.spawn(SUPERVISOR_PID, "node", "worker.js")))
    for i in range(6):
        def crash(i=i):
            plan.stream.end(workers[i])
            plan.stream.spawn(SUPERVISOR_PID, "node", "worker.js")
        plan.at(60 + i * 40, crash)
    assert run(plan.run(), until=400) == []


def test_spawn_rate_needs_a_sustained_rate():
    burst = shell_loop(3000, period=0.005, argv=("crashy",))  # 15 s of 200/s: a burst, not a rate
    assert run(burst) == []
    crash_loop = shell_loop(20 * 240, period=0.05, argv=("crashy",))  # 1200 a minute for 4 minutes
    alerts = run(crash_loop)
    t, alert = first(alerts, "spawn_rate")
    assert alert is not None and t >= 10 + 180
    assert alert.signature == "crashy" and alert.spawned >= 3 * 600


def test_oom_alerts_name_the_group_and_resolve_after_the_hold():
    s = Stream(t=10)
    victims = [s.at(10 + i).spawn(SUPERVISOR_PID, *("npx", "-y", "@21st-dev/magic")) for i in range(3)]
    s.at(20).oom(victims[0])
    s.end(victims[0])
    alerts = run(s, until=100)
    states = [(a.rule, a.state) for _, a in alerts]
    assert states[0] == ("oom", "firing") and states[-1] == ("oom", "resolved")
    assert set(states) == {("oom", "firing"), ("oom", "resolved")}
    assert alerts[0][1].signature == "npm exec magic" and alerts[0][1].pids == (victims[0],)
    assert alerts[-1][0] >= 20 + 60


def test_thresholds_come_from_the_config():
    config = load()
    stricter = replace(config, detect=replace(config.detect, accumulating=replace(config.detect.accumulating, min_live=30)))
    assert run(leak("accumulate", count=15), config=stricter) == []
    off = replace(config, detect=replace(config.detect, zombie=replace(config.detect.zombie, enabled=False)))
    assert run(leak("zombie", count=15), config=off) == []


def test_ignored_signatures_are_never_alerted():
    config = load()
    ignoring = replace(config, detect=replace(config.detect, ignore_signatures=(r"^npm exec fs-",)))
    assert run(leak("accumulate", count=15), config=ignoring) == []


def test_spawn_moments_merge_bursts():
    assert spawn_moments([0, 0.1, 0.2, 5, 5.5, 9], 1.0) == 3
    assert spawn_moments([], 1.0) == 0


def test_spawn_history_counts_sliding_windows_and_forgets():
    history = SpawnHistory(horizon_s=180)
    for t in (1000.2, 1000.7, 1001.0, 1100.0):
        history.add(t)
    history.add(1000.5, -1)
    assert history.count(1000, 1001) == 1 and history.count(1000, 1200) == 3
    history.prune(1181)
    assert history.count(0, 2000) == 1 and len(history) == 1


def test_groups_with_no_members_are_dropped_after_a_while():
    from spawnwatch.pipeline import Pipeline

    pipeline = Pipeline(load())
    pipeline.feed(host())
    for event in shell_loop(50, period=0.1, argv=("true",)).events:
        pipeline.feed(event)
    assert any(g.key.signature == "true" for g in pipeline.detector.groups.values())
    pipeline.advance(10_000.0)
    pipeline.advance(20_000.0)
    assert not any(g.key.signature == "true" for g in pipeline.detector.groups.values())
    assert pipeline.detector.counts["groups_dropped"] >= 1


def test_charged_child_walks_up_through_exited_ancestors():
    def proc(pid, spawner=None, alive=True):
        p = Process(pid=pid, start=0.0, ppid=0, comm="x", argv=(), signature="x", cgroup_id=1, spawner=spawner)
        p.exited_at = None if alive else 1.0
        return p

    supervisor = proc(1)
    npm = proc(2, supervisor, alive=False)
    sh = proc(3, npm, alive=False)
    node = proc(4, sh)
    assert charged_child(node) is npm
    assert charged_child(proc(5, proc(6, None, alive=False))) is None
