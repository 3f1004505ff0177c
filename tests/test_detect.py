"""Detection with the default thresholds on synthetic versions of the issue's workloads.

The same workloads run for real (simulate, make, xargs, a shell loop) in
test_watch_e2e.py; these pin down the rules' arithmetic without root."""

from __future__ import annotations

import re
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
    npm_child,
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
@pytest.mark.parametrize("servers", ["listed", "emptied"])
def test_healthy_workloads_raise_nothing(name, stream, servers):
    config = load()
    if servers == "emptied":
        config = replace(config, detect=replace(config.detect, servers=()))
    assert run(stream, config=config) == []


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


# -- workers, servers, hand-offs, severity -----------------------------------------------

POSTMASTER = ("/usr/lib/postgresql/15/bin/postgres", "-D", "/var/lib/postgresql/15/main")
NO_SERVERS = replace(load(), detect=replace(load().detect, servers=()))


def one_per_second(count: int, child, start: float = 10.0) -> Stream:
    """A parent (pid 300) that `child(stream, parent)` is called for once a second."""
    s = Stream(t=start)
    parent = s.spawn(SUPERVISOR_PID, *POSTMASTER, pid=300)
    for i in range(count):
        child(s.at(start + 1 + i), parent)
    return s


@pytest.mark.parametrize("config", [None, NO_SERVERS], ids=["defaults", "without the servers list"])
def test_a_pool_of_forked_workers_growing_one_a_second_is_quiet(config):
    pool_of_backends = one_per_second(16, lambda s, parent: s.fork(parent))  # fork, never exec, stay
    assert run(pool_of_backends, until=60, config=config) == []


def test_forked_workers_count_when_the_config_says_so():
    config = replace(NO_SERVERS, detect=replace(NO_SERVERS.detect, accumulating=replace(
        NO_SERVERS.detect.accumulating, count_workers=True)))
    alerts = run(one_per_second(16, lambda s, parent: s.fork(parent)), until=60, config=config)
    assert {a.rule for _, a in firing(alerts)} == {"accumulating"}
    assert "workers counted" in firing(alerts)[0][1].message


@pytest.mark.parametrize("config", [None, NO_SERVERS], ids=["defaults", "without the servers list"])
def test_children_that_re_exec_their_spawners_program_are_workers(config):
    s = Stream(t=10)
    sshd = s.spawn(SUPERVISOR_PID, "/usr/sbin/sshd", "-D", "-p", "2222", pid=300)
    for i in range(14):  # sshd re-execs itself per connection: `sshd -D -p 2222 -R`
        session = s.at(11 + i).spawn(sshd, "/usr/sbin/sshd", "-D", "-p", "2222", "-R")
        s.fork(session)  # its privilege-separated child
    assert run(s, until=60, config=config) == []


def test_an_exec_of_another_program_by_the_same_interpreter_is_a_launch():
    # `node host.js` starting `node server.js` servers: the interpreter alone is no "same program"
    s = Stream(t=10)
    host_pid = s.spawn(SUPERVISOR_PID, "node", "host.js", pid=300)
    for i in range(15):
        s.at(11 + i * 2).spawn(host_pid, "node", "/opt/mcp/server.js", "--stdio")
    t, alert = first(run(s, until=60), "accumulating")
    assert alert is not None and t - 11 <= 20
    assert alert.signature == "node server.js --stdio" and "each a new program (`node server.js`)" in alert.message


def test_a_leak_under_a_forked_worker_still_fires():
    # The host is itself a fork-only worker of its server; what it launches is still a launch.
    s = Stream(t=10)
    server = s.spawn(SUPERVISOR_PID, "python3", "app.py", pid=300)
    worker = s.fork(server)
    for i in range(15):
        s.at(11 + i * 2).spawn(worker, "npx", "-y", "@21st-dev/magic@latest")
    t, alert = first(run(s, until=60), "accumulating")
    assert alert is not None and alert.spawner["pid"] == worker and t - 11 <= 20


def test_a_titled_pool_already_running_is_quiet_from_the_snapshot_alone():
    # /proc shows no exec: the backends' titles name the postmaster's program
    backends = [info(1000 + i, 300, 10.0 + i, f"postgres: app app 127.0.0.1({40000 + i}) idle") for i in range(16)]
    snapshot = host(700.0, info(300, 1, 5.0, *POSTMASTER), *backends)
    assert run(Stream(t=700), snapshot=snapshot, until=710, config=NO_SERVERS) == []


def test_a_known_servers_children_are_exempt_from_accumulating_from_a_snapshot():
    # cron's jobs run programs of their own: only the servers list tells this pile apart
    jobs = [info(1000 + i, 300, 10.0 + i * 60, "/bin/sh", "-c", "/usr/local/bin/backup.sh") for i in range(12)]
    snapshot = host(900.0, info(300, 1, 5.0, "/usr/sbin/cron", "-f"), *jobs)
    assert run(Stream(t=900), snapshot=snapshot, until=910) == []
    t, alert = first(run(Stream(t=900), snapshot=snapshot, until=910, config=NO_SERVERS), "accumulating")
    assert alert is not None and alert.spawner["pid"] == 300


def test_the_servers_exemption_is_said_in_the_rules_that_still_apply():
    s = Stream(t=10)
    cron = s.spawn(SUPERVISOR_PID, "/usr/sbin/cron", "-f", pid=300)
    for i in range(10):
        job = s.at(11 + i).spawn(cron, "/bin/sh", "-c", "job")
        s.exit(job)  # never reaped: cron has a bug
    _, alert = first(run(s, until=40), "zombie")
    assert alert is not None and "exempt from accumulating: cron is a per-connection server" in alert.message


def handoffs(count: int, lives_s: float) -> Stream:
    """containerd runs `containerd-shim-runc-v2 ... start`, which forks the shim daemon and exits
    `lives_s` later (0-2 ms measured)."""
    s = Stream(t=10)
    containerd = s.spawn(SUPERVISOR_PID, "containerd", "--config", "/var/run/docker/containerd/containerd.toml", pid=300)
    for i in range(count):
        t = 11 + i * 1.5
        start = s.at(t).spawn(containerd, "containerd-shim-runc-v2", "-namespace", "moby", "-id", f"{i:064x}", "start")
        daemon = s.spawn(start, "containerd-shim-runc-v2", "-namespace", "moby", "-id", f"{i:064x}")
        s.spawn(daemon, "sleep", "600")
        s.at(t + lives_s).end(start)
        s.reparent(daemon, 1)
    return s


def test_a_daemon_handed_off_at_once_is_no_orphan():
    assert run(handoffs(12, lives_s=0.002), until=60) == []


def test_the_same_tree_left_by_a_launcher_that_lived_on_is_an_orphan_leak():
    alerts = run(handoffs(12, lives_s=1.0), until=60)
    t, alert = first(alerts, "orphaned")
    assert alert is not None and alert.spawner["pid"] == 300 and alert.orphans >= 8
    assert "longer than a hand-off (0.5 s)" in alert.message


def test_orphans_that_exit_under_an_adopter_that_never_reaps_them_stay_in_the_leak():
    # a container's PID 1 that never waits: each server exits 3 s after its `npm exec` was
    # killed, and its sh stays a zombie; never more than 2 (sh and node each) are alive at once
    stream = leak("orphan", count=15, linger=3.0, adopter_reaps_after=None)
    alerts = run(stream, until=LEAK_START + 40)
    t, alert = first(alerts, "orphaned")
    assert alert is not None, [a.message for _, a in alerts]
    assert t - LEAK_START <= 25
    assert alert.spawner["pid"] == SUPERVISOR_PID and alert.signature == SERVER_SIGNATURE
    assert "zombies under their adopter, which has not reaped them" in alert.message
    alive, zombies = (int(n) for n in re.search(r"(\d+) alive, (\d+) zombies", alert.message).groups())
    assert alive <= 4 and alive + zombies == alert.orphans >= 8 and len(alert.pids) == alert.orphans
    shells = {e.pid for e in stream.events if e.kind.value == "exec" and e.argv[0] == "sh"}
    assert set(alert.pids[alive:]) <= shells  # the zombies are the orphans (sh), listed after the living
    assert {a.rule for _, a in firing(alerts)} == {"orphaned"}  # their spawner is dead: not the zombie rule's


def test_orphans_their_adopter_reaps_leave_no_zombies_in_the_leak():
    assert run(leak("orphan", count=15, linger=3.0, adopter_reaps_after=0.0), until=LEAK_START + 40) == []


def lingering_orphans(adopter_reaps_after: float | None) -> Stream:
    """One child a second; the first one's sh and node live on, the others' exit 3 s
    after their `npm exec` was killed: 8 processes alive at every evaluation, and one
    sh that exited 0.2 s before it."""
    plan = Schedule(Stream(t=LEAK_START))
    for i in range(24):
        npm_child(plan, LEAK_START + i, "orphan", linger=None if i == 0 else 3.0, adopter_reaps_after=adopter_reaps_after)
    return plan.run()


def test_an_orphan_init_reaps_is_no_zombie_even_when_an_evaluation_falls_before_its_reap():
    nine = replace(load(), detect=replace(load().detect, orphaned=replace(load().detect.orphaned, min_orphans=9)))
    assert run(lingering_orphans(adopter_reaps_after=0.5), until=LEAK_START + 40, config=nine) == []
    _, alert = first(run(lingering_orphans(adopter_reaps_after=None), until=LEAK_START + 40, config=nine), "orphaned")
    assert alert is not None and "8 alive" in alert.message


def test_severity_rises_with_the_evidence():
    alerts = run(leak("accumulate", interval=0.5, count=60), until=LEAK_START + 60)
    accumulating = [a for _, a in firing(alerts) if a.rule == "accumulating"]
    assert [a.severity for a in accumulating][:1] == ["warning"]
    critical = [a for a in accumulating if a.severity == "critical"]
    assert critical and critical[0].live >= 50 and critical[0].message.startswith("critical: ")
    assert critical[0].to_record()["severity"] == "critical"


def test_the_new_keys_come_from_the_config_file(tmp_path):
    path = tmp_path / "precision.toml"
    path.write_text(
        '[detect]\nservers = ["myserver*"]\n'
        "[rules.accumulating]\ncount_workers = true\ncritical_live = 20\n"
        "[rules.orphaned]\nhandoff_s = 0.1\n"
    )
    config = load(path)
    assert config.detect.servers == ("myserver*",)
    assert config.detect.accumulating.count_workers and config.detect.accumulating.critical_live == 20
    assert config.detect.orphaned.handoff_s == 0.1
    assert "sshd" in load().detect.servers and not load().detect.accumulating.count_workers


def test_daemons_adopted_by_init_are_not_init_s_leak_in_a_snapshot():
    # /proc shows every handed-off daemon (one containerd shim per container) as init's child
    shims = [info(1000 + i, 1, 10.0 + i * 1.5, "/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id",
                  f"{i:064x}", "-address", "/run/containerd/containerd.sock") for i in range(12)]
    assert run(Stream(t=700), snapshot=host(700.0, *shims), until=710, config=NO_SERVERS) == []


def test_every_rule_of_the_registry_has_its_settings_and_config_table():
    from dataclasses import fields

    from spawnwatch.detect import RULES, DetectSettings

    settings = {f.name: f.default for f in fields(DetectSettings)}
    for name, rule in RULES.items():
        assert isinstance(settings[name], rule.settings)
        assert isinstance(getattr(load().detect, name), rule.settings)  # built from [rules.<name>]


def test_zombies_of_init_are_adopted_orphans_not_its_leak():
    zombies = [info(1000 + i, 1, 10.0 + i, "containerd-shim", zombie=True) for i in range(11)]
    assert run(Stream(t=700), snapshot=host(700.0, *zombies), until=710) == []


def test_the_zombie_pids_are_in_one_order_whatever_the_set_order():
    # Seeded zombies share the snapshot's time: ties are broken by start and pid.
    zombies = [info(1000 + i, SUPERVISOR_PID, 10.0 + (i * 7) % 11, "npm exec magic", zombie=True) for i in range(11)]
    _, alert = first(run(Stream(t=700), snapshot=host(700.0, *zombies), until=710), "zombie")
    assert alert is not None
    starts = {z.pid: z.start for z in zombies}
    assert list(alert.pids) == sorted(alert.pids, key=lambda pid: (starts[pid], pid))
