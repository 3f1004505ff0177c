"""The process table on synthetic streams: identity, reparenting, zombies, retention, bounds."""

from __future__ import annotations

from spawnwatch.config import load
from spawnwatch.lineage import Lineage, LineageSettings
from spawnwatch.signature import Signer
from streams import BOOT_OFFSET, SUPERVISOR, Stream, host, info

SIGN = Signer(load().signature)


class Recorder:
    """A listener that remembers what it heard."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int]] = []

    def joined(self, proc): self.heard.append(("joined", proc.pid))
    def changed(self, proc, old): self.heard.append(("changed", proc.pid))
    def exited(self, proc): self.heard.append(("exited", proc.pid))
    def reaped(self, proc): self.heard.append(("reaped", proc.pid))
    def dropped(self, proc): self.heard.append(("dropped", proc.pid))
    def oom(self, proc, ts): self.heard.append(("oom", proc.pid))


def lineage(settings: LineageSettings = LineageSettings(), **kwargs) -> Lineage:
    table = Lineage(SIGN, settings, **kwargs)
    table.seed(host())
    return table


def feed(table: Lineage, stream: Stream) -> None:
    for event in stream.events:
        table.apply(event)
    stream.events.clear()


def test_snapshot_seeds_parents_and_spawners_from_proc():
    table = lineage()
    supervisor = table.get(200)
    assert supervisor.parent is table.get(100) and supervisor.spawner is table.get(100)
    assert supervisor.seeded and supervisor.signature == "python supervisor.py"
    assert supervisor in table.get(100).children


def test_snapshot_links_a_child_older_than_its_adopting_parent():
    # A subreaper started after the process it later adopted.
    table = Lineage(SIGN)
    table.seed(host(10.0, info(300, 400, 3.0, "node", "x.js"), info(400, 1, 4.0, "tini")))
    assert table.get(300).parent is table.get(400)


def test_fork_then_exec_renames_the_child_and_keeps_its_spawner():
    table = lineage()
    s = Stream(t=6)
    child = s.fork(200)
    feed(table, s)
    assert table.get(child).signature == "python supervisor.py"  # runs its parent's program until exec
    s.exec(child, "npx", "-y", "@21st-dev/magic")
    feed(table, s)
    proc = table.get(child)
    assert proc.signature == "npm exec magic"
    assert proc.spawner is table.get(200) and proc.parent is table.get(200)


def test_a_process_knows_whether_it_exec_d_since_its_fork():
    table = lineage()
    s = Stream(t=6)
    forked_only, execed = s.fork(200), s.fork(200)
    s.exec(execed, "python3", "supervisor.py")  # its parent's own program again
    feed(table, s)
    assert not table.get(forked_only).execed and table.get(execed).execed
    assert not table.get(200).execed  # seeded: /proc cannot tell


def test_oom_kills_reach_the_listener():
    heard = Recorder()
    table = lineage(listener=heard)
    s = Stream(t=6)
    child = s.fork(200)
    s.oom(child)
    feed(table, s)
    assert heard.heard[-1] == ("oom", child)


def test_pid_reuse_makes_a_new_process():
    table = lineage()
    s = Stream(t=6)
    first = s.spawn(200, "sleep", "1", pid=5000)
    s.at(7).end(first)
    s.at(9).spawn(100, "cat", pid=5000)
    feed(table, s)
    proc = table.get(5000)
    assert proc.signature == "cat" and proc.spawner.pid == 100
    assert proc.start == BOOT_OFFSET + 9
    assert table.counts["missed_exits"] == 0


def test_fork_on_a_live_pid_closes_the_old_process_as_a_missed_exit():
    heard = Recorder()
    table = lineage(listener=heard)
    s = Stream(t=6)
    s.spawn(200, "sleep", "100", pid=5000)
    s.at(8).spawn(100, "cat", pid=5000)  # exit and reap of the first were lost
    feed(table, s)
    assert table.counts["missed_exits"] == 1
    assert table.get(5000).signature == "cat"
    assert ("exited", 5000) in heard.heard and ("reaped", 5000) in heard.heard
    assert sum(1 for p in table.unreaped() if p.pid == 5000) == 1


def test_events_older_than_the_pid_holder_are_stale():
    table = lineage()
    s = Stream(t=10)
    s.spawn(200, "cat", pid=5000)
    feed(table, s)
    late = Stream(t=6)  # an exit of an earlier holder of pid 5000, delivered late
    late.exit(5000)
    feed(table, late)
    assert table.get(5000).alive and table.counts["stale"] == 1


def test_exit_makes_a_zombie_until_reap():
    table = lineage()
    s = Stream(t=6)
    child = s.spawn(200, "sleep", "1")
    s.at(7).exit(child)
    feed(table, s)
    proc = table.get(child)
    assert proc.zombie and not proc.alive
    s.at(9).reap(child)
    feed(table, s)
    assert table.get(child) is None and proc.reaped_at == BOOT_OFFSET + 9
    assert proc not in table.get(200).children


def test_a_reap_without_exit_implies_the_exit():
    heard = Recorder()
    table = lineage(listener=heard)
    s = Stream(t=6)
    child = s.spawn(200, "sleep", "1")
    s.at(7).reap(child)
    feed(table, s)
    assert heard.heard[-2:] == [("exited", child), ("reaped", child)]


def test_orphans_are_reparented_to_init_by_default_but_stay_charged_to_their_spawner():
    table = lineage()
    s = Stream(t=6)
    npm = s.spawn(200, "npm", "exec", "--yes", "--package=file:/tmp/x", "--", "srv")
    sh = s.spawn(npm, "sh", "-c", "srv")
    node = s.spawn(sh, "node", "/root/.npm/_npx/ab12cd34ef56/node_modules/.bin/srv")
    s.at(8).exit(npm)
    s.reap(npm)
    feed(table, s)
    orphan = table.get(sh)
    assert orphan.parent is table.get(1) and orphan.ppid == 1
    assert orphan.spawner.pid == npm and not orphan.spawner.alive
    assert table.get(node).parent is orphan


def test_the_reparent_hint_names_the_subreaper():
    table = Lineage(SIGN, reparent_hint=lambda pid: 100)
    table.seed(host())
    s = Stream(t=6)
    npm = s.spawn(200, "npm", "exec", "srv")
    sh = s.spawn(npm, "sh", "-c", "srv")
    s.at(7).exit(npm)
    feed(table, s)
    assert table.get(sh).parent is table.get(100)
    assert table.get(sh) in table.get(100).children


def test_an_adoption_proc_could_not_tell_at_the_exit_is_settled_later():
    # The exit tracepoint fires before the kernel reparents: /proc still names the
    # dying parent then, and the subreaper only afterwards.
    adopters = {}
    table = Lineage(SIGN, reparent_hint=lambda pid: adopters.get(pid))
    table.seed(host())
    s = Stream(t=6)
    npm = s.spawn(200, "npm", "exec", "srv")
    sh = s.spawn(npm, "sh", "-c", "srv")
    adopters[sh] = npm
    s.at(7).exit(npm)
    feed(table, s)
    assert table.get(sh).ppid == 1  # provisional
    adopters[sh] = 100
    table.expire(8.0)
    assert table.get(sh).parent is table.get(100) and table.get(sh) not in table.get(1).children
    adopters[sh] = 1  # settled: never asked again
    table.expire(9.0)
    assert table.get(sh).parent is table.get(100)


def test_exec_before_its_fork_is_placed_by_the_exec_and_the_late_fork_merges():
    table = lineage()
    s = Stream(t=6)
    s.reparent(7000, 200)
    s.exec(7000, "sleep", "5")
    s.fork(200, pid=7000)
    feed(table, s)
    proc = table.get(7000)
    assert proc.signature == "sleep <n>" and proc.spawner.pid == 200
    assert len([p for p in table.processes() if p.pid == 7000]) == 1


def test_a_fork_from_an_unknown_parent_is_kept_and_counted():
    table = lineage()
    s = Stream(t=6)
    child = s.spawn(4242, "sleep", "1")
    feed(table, s)
    assert table.get(child).spawner is None and table.counts["missing_parent"] == 1


def test_events_for_unknown_pids_are_counted_not_invented():
    table = lineage()
    s = Stream(t=6)
    s.exit(9999)
    s.reap(9999)
    feed(table, s)
    assert table.get(9999) is None and table.counts["unknown_pid"] == 2


def test_the_snapshot_race_merges_events_of_processes_already_seeded():
    # Events buffered between attach and snapshot describe processes the snapshot also has.
    table = Lineage(SIGN)
    table.seed(host(10.0, info(300, 200, 6.0, "sleep", "100")))
    s = Stream(t=6)
    s.fork(200, pid=300)
    s.exec(300, "sleep", "100")
    feed(table, s)
    assert len(table) == 4 and table.counts["missed_exits"] == 0


def test_reaped_processes_are_dropped_after_retention():
    heard = Recorder()
    table = lineage(LineageSettings(retention_s=30), listener=heard)
    s = Stream(t=6)
    child = s.spawn(200, "sleep", "1")
    s.at(7).end(child)
    feed(table, s)
    table.expire(BOOT_OFFSET + 30)
    assert any(p.pid == child for p in table.processes())
    table.expire(BOOT_OFFSET + 38)
    assert not any(p.pid == child for p in table.processes())
    assert heard.heard[-1] == ("dropped", child)


def test_a_reaped_spawner_stays_while_processes_it_spawned_are_in_the_table():
    table = lineage(LineageSettings(retention_s=30))
    s = Stream(t=6)
    npm = s.spawn(200, "npm", "exec", "srv")
    sh = s.spawn(npm, "sh", "-c", "srv")
    s.at(7).end(npm)
    feed(table, s)
    table.expire(BOOT_OFFSET + 100)
    npm_proc = table.get(sh).spawner
    assert npm_proc.pid == npm and npm_proc in list(table.processes())
    s.at(101).exit(sh)
    s.reap(sh)
    feed(table, s)
    table.expire(BOOT_OFFSET + 140)  # sh expires, and with it the spawner it held
    assert not any(p.pid in (npm, sh) for p in table.processes())


def test_the_table_is_capped_reaped_entries_first_and_evictions_counted():
    cap = 50
    table = lineage(LineageSettings(max_processes=cap, retention_s=3600))
    s = Stream(t=6)
    for i in range(40):
        s.at(6 + i * 0.1).end(s.spawn(200, "true"))
    long_lived = [s.spawn(200, "sleep", "999") for _ in range(30)]
    feed(table, s)
    assert len(table) == cap
    assert table.counts["evicted"] == 3 + 40 + 30 - cap
    assert all(table.get(pid) is not None for pid in long_lived)  # the reaped went first
    assert table.get(200).spawned <= set(table.processes())


def test_eviction_of_live_processes_unlinks_them_from_their_parent():
    heard = Recorder()
    cap = 20
    table = lineage(LineageSettings(max_processes=cap), listener=heard)
    s = Stream(t=6)
    pids = [s.spawn(200, "sleep", "999") for _ in range(40)]
    feed(table, s)
    assert len(table) == cap
    supervisor = table.get(200)
    assert len(supervisor.children) == len([p for p in pids if table.get(p) is not None])
    assert len(supervisor.spawned) == len(supervisor.children)
    assert ("dropped", pids[0]) in heard.heard
    # A later exit of an evicted process is an unknown pid, not a crash.
    s.exit(pids[0])
    feed(table, s)
    assert table.counts["unknown_pid"] == 1


def test_a_busy_spawner_is_not_the_one_evicted():
    table = lineage(LineageSettings(max_processes=30))
    s = Stream(t=6)
    for _ in range(100):
        s.spawn(200, "sleep", "999")
    feed(table, s)
    assert table.get(200) is not None and table.get(200).alive


def test_seeded_zombies_are_zombies():
    table = Lineage(SIGN)
    table.seed(host(10.0, info(300, 200, 6.0, "npm exec srv", zombie=True)))
    assert table.get(300).zombie
    assert SUPERVISOR.pid == table.get(300).spawner.pid
