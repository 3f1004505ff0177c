"""A Brief (a process forked, exited and reaped in one record) counts exactly as the
fork, exit and reap it stands for: the same alerts at the same times, the same group
counts, and no entry in the process table.  The kernel side that sends it is tested
live in test_brief_kernel.py; `streams.briefed` compacts a stream the way it does."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from spawnwatch.config import load
from spawnwatch.events import Brief, ExecBrief, ExecTally, Fork, Tally
from spawnwatch.filters import SubtreeFilter
from spawnwatch.lineage import Lineage
from spawnwatch.pipeline import Pipeline
from spawnwatch.event_lines import EventLines
from spawnwatch.signature import Signer
from streams import BOOT_OFFSET, Stream, briefed, host, tallied
from workloads import SUPERVISOR_PID, Schedule, leak, run, shell_loop

SIGN = Signer(load().signature)


def fork_loop(children: int, period: float, life: float, parent_argv=("python3", "crashy.py"),
              start: float = 10.0) -> Stream:
    """A parent forking a child every `period` s that exits after `life` s and is reaped at once."""
    plan = Schedule(Stream(t=start))
    parent = {}
    plan.at(start, lambda: parent.setdefault("pid", plan.stream.spawn(SUPERVISOR_PID, *parent_argv)))
    for i in range(children):
        def fork(t=start + 0.01 + i * period) -> None:
            pid = plan.stream.fork(parent["pid"])
            plan.at(t + life, lambda: plan.stream.end(pid))
        plan.at(start + 0.01 + i * period, fork)
    return plan.run()


def orphans_reaped_by_init(count: int) -> Stream:
    """Launchers that fork a helper and exit at once; init reaps each helper 0.1 s later."""
    s = Stream(t=10)
    for i in range(count):
        launcher = s.at(10 + i).spawn(SUPERVISOR_PID, "sh", "launch.sh")
        helper = s.fork(launcher)
        s.end(launcher)
        s.reparent(helper, 1)
        s.at(10 + i + 0.1).end(helper)
    return s


def mixed_leak() -> Stream:
    """An npm leak whose supervisor also forks short-lived helpers all along."""
    s = leak("accumulate", count=15)
    helpers = Stream(t=10)
    helpers._next_pid = 50000  # apart from the leak's pids
    for i in range(300):
        pid = helpers.at(10 + i * 0.1).fork(SUPERVISOR_PID)
        helpers.at(10 + i * 0.1 + 0.02).end(pid)
    s.events = sorted(s.events + helpers.events, key=lambda e: e.ts)
    return s


def a_parent_that_execs_between_forks(rounds: int) -> Stream:
    """A shell that forks short children, then execs python, which forks its own, and so on:
    its children belong to the group of what it runs at their fork."""
    s = Stream(t=10)
    parent = s.spawn(SUPERVISOR_PID, "sh", "run.sh")
    for i in range(rounds):
        s.at(10 + i).exec(parent, *(("python3", "serve.py") if i % 2 else ("sh", "run.sh")))
        for j in range(5):
            child = s.at(10 + i + 0.1 * (j + 1)).fork(parent)
            s.at(10 + i + 0.1 * (j + 1) + 0.01).end(child)
    return s


def as_briefs(stream: Stream) -> Stream:
    compacted = copy.copy(stream)
    compacted.events = briefed(stream.events)
    return compacted


WORKLOADS = {
    "a crash loop of forks, 20 a second for 4 minutes": lambda: fork_loop(20 * 240, period=0.05, life=0.01),
    "a burst of 3000 forks in 15 s": lambda: fork_loop(3000, period=0.005, life=0.002),
    "forks that live 0.2-0.3 s": lambda: fork_loop(600, period=0.1, life=0.24),
    "launchers whose helpers init reaps": lambda: orphans_reaped_by_init(20),
    "an npm leak among short forks": mixed_leak,
    "a shell loop of short commands": lambda: shell_loop(500, period=0.01),
    "a parent that execs between forks": lambda: a_parent_that_execs_between_forks(6),
}


@pytest.mark.parametrize("name", WORKLOADS)
def test_briefs_raise_the_alerts_of_the_events_they_stand_for(name):
    stream = WORKLOADS[name]()
    compacted = as_briefs(stream)
    if name != "a shell loop of short commands":  # its children exec: nothing to compact
        assert sum(isinstance(e, Brief) for e in compacted.events) >= 20
    alerts = run(stream)
    assert run(compacted) == alerts
    if name in ALERTING:
        assert {a.rule for _, a in alerts} == {ALERTING[name]}


ALERTING = {"a crash loop of forks, 20 a second for 4 minutes": "spawn_rate",
            "an npm leak among short forks": "accumulating"}


def final_groups(events: list) -> dict:
    pipeline = Pipeline(load())
    pipeline.feed(host())
    for event in events:
        pipeline.feed(event)
    groups = {key: (g.spawned, g.exited, g.live, g.zombies, g.first_spawn, g.last_spawn, g.history._buckets)
              for key, g in pipeline.detector.groups.items()}
    return groups, {(p.pid, p.start) for p in pipeline.lineage.processes()}


@pytest.mark.parametrize("name", WORKLOADS)
def test_briefs_count_in_their_group_like_a_fork_exit_and_reap_and_take_no_place_in_the_table(name):
    stream = WORKLOADS[name]()
    compacted = briefed(stream.events)
    groups, table = final_groups(stream.events)
    compact_groups, compact_table = final_groups(compacted)
    assert compact_groups == groups
    assert compact_table == table - {(e.pid, e.ts) for e in compacted if isinstance(e, Brief)}


def without_last_spawn(groups: dict) -> dict:
    """A tally's time is its first child's fork: its spawner's last spawn is that second's."""
    return {key: (*counts[:5], counts[6]) for key, counts in groups.items()}


@pytest.mark.parametrize("name", WORKLOADS)
def test_tallies_count_in_their_group_like_the_briefs_they_stand_for(name):
    stream = WORKLOADS[name]()
    compacted, counted = briefed(stream.events), tallied(stream.events)
    tallies = [e for e in counted if isinstance(e, Tally)]
    if name not in ("a shell loop of short commands", "forks that live 0.2-0.3 s",
                    "launchers whose helpers init reaps"):
        assert sum(t.count for t in tallies) >= 20 and len(tallies) < sum(t.count for t in tallies)
    groups, table = final_groups(compacted)
    tallied_groups, tallied_table = final_groups(counted)
    assert without_last_spawn(tallied_groups) == without_last_spawn(groups)
    assert tallied_table == table


@pytest.mark.parametrize("name", WORKLOADS)
def test_tallies_raise_the_alerts_of_the_briefs_they_stand_for_at_most_two_seconds_later(name):
    # A tally comes once its second is over and the sweep after that finds it.
    stream = WORKLOADS[name]()
    counted = copy.copy(stream)
    counted.events = tallied(stream.events)
    alerts, tallied_alerts = run(as_briefs(stream)), run(counted)
    decided = [(a.rule, a.signature, a.state) for _, a in alerts]
    assert [(a.rule, a.signature, a.state) for _, a in tallied_alerts] == decided
    assert all(0 <= t2 - t1 <= 2 for (t1, _), (t2, _) in zip(alerts, tallied_alerts))


def as_exec_briefs(stream: Stream) -> Stream:
    compacted = copy.copy(stream)
    compacted.events = briefed(stream.events, execs=True)
    return compacted


EXEC_WORKLOADS = {**WORKLOADS, "an npm leak": lambda: leak("accumulate", count=15)}


def spawned_in(groups: dict) -> dict:
    """The groups that ever counted a spawn: a child's fork joins its spawner's group and
    its exec leaves it at once (unspawned), which an ExecBrief never joins at all."""
    return {key: counts for key, counts in groups.items() if counts[0] or counts[1]}


@pytest.mark.parametrize("name", EXEC_WORKLOADS)
def test_exec_briefs_raise_the_alerts_and_count_in_the_groups_of_the_events_they_stand_for(name):
    stream = EXEC_WORKLOADS[name]()
    compacted = as_exec_briefs(stream)
    if name == "a shell loop of short commands":
        assert sum(isinstance(e, ExecBrief) for e in compacted.events) >= 400
    assert run(compacted) == run(stream)
    groups, table = final_groups(stream.events)
    compact_groups, compact_table = final_groups(compacted.events)
    assert spawned_in(compact_groups) == spawned_in(groups)
    assert compact_table == table - {(e.pid, e.ts) for e in compacted.events if isinstance(e, Brief)}


@pytest.mark.parametrize("name", EXEC_WORKLOADS)
def test_exec_tallies_count_and_alert_like_the_exec_briefs_they_stand_for(name):
    stream = EXEC_WORKLOADS[name]()
    counted = copy.copy(stream)
    counted.events = tallied(stream.events, execs=True)
    if name == "a shell loop of short commands":
        tallies = [e for e in counted.events if isinstance(e, ExecTally)]
        assert sum(t.count for t in tallies) >= 400 and len(tallies) < 10
    groups, _ = final_groups(briefed(stream.events, execs=True))
    tallied_groups, _ = final_groups(counted.events)
    assert without_last_spawn(tallied_groups) == without_last_spawn(groups)
    alerts, tallied_alerts = run(as_exec_briefs(stream)), run(counted)
    assert [(a.rule, a.signature, a.state) for _, a in tallied_alerts] == [(a.rule, a.signature, a.state)
                                                                           for _, a in alerts]
    assert all(0 <= t2 - t1 <= 2 for (t1, _), (t2, _) in zip(alerts, tallied_alerts))


def group_lives(events: list, checkpoints: list[float]) -> list:
    """At each checkpoint, evaluated then: each group's key and spawn and exit counts,
    with groups empty for 5 s dropped."""
    config = load()
    config = replace(config, detect=replace(config.detect, idle_group_s=5.0))
    pipeline = Pipeline(config, auto_advance=False)
    pipeline.feed(host())
    lives, pending = [], iter(events)
    event = next(pending, None)
    for checkpoint in checkpoints:
        while event is not None and event.ts <= checkpoint:
            pipeline.feed(event)
            event = next(pending, None)
        pipeline.evaluate(checkpoint)
        lives.append(sorted((key, g.spawned, g.exited) for key, g in pipeline.detector.groups.items()))
    return lives


def test_a_group_of_briefs_is_kept_while_they_come_and_dropped_when_they_stop_like_its_events_group():
    # 30 s of forks, 40 s of quiet (the group is dropped), 10 s of forks again (made anew).
    stream = fork_loop(180, period=0.5, life=0.01)
    events = [e for e in stream.events if not BOOT_OFFSET + 40 < e.ts < BOOT_OFFSET + 80]
    checkpoints = [BOOT_OFFSET + t for t in range(10, 100)]
    lives = group_lives(events, checkpoints)
    assert lives == group_lives(briefed(events), checkpoints)
    parent = stream.events[0].pid
    children = [[spawned for key, spawned, _ in moment if key.spawner[0] == parent] for moment in lives]
    assert children[25] == [50] and children[60] == [] and children[85] == [30]  # kept, dropped, counted anew


def table() -> Lineage:
    lineage = Lineage(SIGN)
    lineage.seed(host())
    return lineage


class Heard:
    def __init__(self) -> None:
        self.briefs: list[tuple[int, int]] = []
        self.ends: list[tuple[str, int]] = []

    def joined(self, proc): ...
    def spawned_briefly(self, spawner, brief, argv, signature): self.briefs.append((spawner.pid, brief.pid))
    def changed(self, proc, old): ...
    def exited(self, proc): self.ends.append(("exited", proc.pid))
    def reaped(self, proc): self.ends.append(("reaped", proc.pid))
    def dropped(self, proc): ...
    def oom(self, proc, ts): ...


def brief(pid: int, ppid: int, at: float, exited: float = 0.01, reaped: float = 0.02) -> Brief:
    return Brief(BOOT_OFFSET + at, pid, ppid, "python3", 1, exited_at=BOOT_OFFSET + at + exited,
                 reaped_at=BOOT_OFFSET + at + reaped)


def test_a_brief_is_heard_by_its_spawner_and_never_enters_the_table():
    lineage, heard = table(), Heard()
    lineage.listener = heard
    size = len(lineage)
    assert lineage.apply(brief(5000, SUPERVISOR_PID, 10)) is None
    assert heard.briefs == [(SUPERVISOR_PID, 5000)] and len(lineage) == size and lineage.get(5000) is None


def test_a_brief_whose_fork_came_first_is_that_process_s_exit_and_reap():
    # It lived long enough for the sweep (or an exec elsewhere) to send its fork on its own.
    lineage, heard = table(), Heard()
    lineage.listener = heard
    lineage.apply(Fork(BOOT_OFFSET + 10, 5000, SUPERVISOR_PID, "python3", 1))
    proc = lineage.apply(brief(5000, SUPERVISOR_PID, 10, exited=3, reaped=4))
    assert proc.exited_at == BOOT_OFFSET + 13 and proc.reaped_at == BOOT_OFFSET + 14
    assert heard.ends == [("exited", 5000), ("reaped", 5000)] and heard.briefs == []


def test_a_brief_outliving_its_spawner_is_still_charged_to_it():
    s = Stream(t=10)
    launcher = s.spawn(SUPERVISOR_PID, "sh", "launch.sh")
    lineage, heard = table(), Heard()
    lineage.listener = heard
    for event in s.events:
        lineage.apply(event)
    s.events.clear()
    s.at(10.05).end(launcher)  # reaped before its child's Brief comes
    for event in s.events:
        lineage.apply(event)
    lineage.apply(brief(5000, launcher, 10.01, exited=0.1, reaped=0.2))
    assert heard.briefs == [(launcher, 5000)]


def test_a_brief_of_an_unknown_spawner_or_of_an_earlier_holder_of_its_pid_is_counted_not_placed():
    lineage, heard = table(), Heard()
    lineage.listener = heard
    lineage.apply(brief(5000, 4242, 10))
    assert lineage.counts["missing_parent"] == 1
    lineage.apply(Fork(BOOT_OFFSET + 20, 5001, SUPERVISOR_PID, "python3", 1))
    lineage.apply(brief(5001, SUPERVISOR_PID, 10))  # the pid's holder before the one we know
    assert lineage.counts["stale"] == 1 and lineage.get(5001).alive and heard.briefs == []


def test_trace_follows_a_brief_into_the_subtree_and_prints_its_life():
    follow = SubtreeFilter(SUPERVISOR_PID)
    assert follow(brief(5000, SUPERVISOR_PID, 10)) and not follow(brief(5001, 4242, 10))
    line = EventLines().line(brief(5000, SUPERVISOR_PID, 10, exited=0.25, reaped=0.5))
    assert " brief " in line and "exited 250 ms after its fork, zombie for 250 ms" in line


def test_a_tally_prints_how_many_it_counts():
    tally = Tally(BOOT_OFFSET + 10, 0, SUPERVISOR_PID, "python3", 1, BOOT_OFFSET + 10.5, BOOT_OFFSET + 10.6, 40)
    line = EventLines().line(tally)
    assert " tally " in line and "40 short lives forked in this second" in line
