"""Resync after lost events, on synthetic streams: the table is made to agree
with a /proc snapshot, and a leak that grew while events were lost is still
reported, the same live and replayed."""

from __future__ import annotations

from dataclasses import replace

from spawnwatch.config import load
from spawnwatch.events import Resync, from_record, to_record
from spawnwatch.lineage import Lineage
from spawnwatch.pipeline import Pipeline
from spawnwatch.signature import Signer
from streams import BOOT_OFFSET, INIT, SHELL, SUPERVISOR, Stream, host, info
from test_lineage import Recorder
from workloads import NPM_EXEC, SERVER_SIGNATURE, SUPERVISOR_PID

SIGN = Signer(load().signature)


def resync_of(t: float, *processes) -> Resync:
    return Resync(ts=BOOT_OFFSET + t, processes=(INIT, SHELL, SUPERVISOR, *processes))


def test_resync_closes_exits_adds_and_reparents_as_proc_says():
    listener = Recorder()
    table = Lineage(SIGN, listener=listener)
    table.seed(host())
    s = Stream(t=10.0)
    stays = s.spawn(SUPERVISOR_PID, "sleep", "100")
    dies_unseen = s.spawn(SUPERVISOR_PID, "sleep", "1")  # exit and reap lost
    becomes_zombie = s.spawn(SUPERVISOR_PID, "sleep", "2")  # exit lost
    reaped_unseen = s.spawn(SUPERVISOR_PID, "sleep", "3")
    s.exit(reaped_unseen)  # its reap lost
    adopted = s.spawn(stays, "sleep", "4")  # reparented to init while events were lost
    reused = s.spawn(SUPERVISOR_PID, "sleep", "5")  # gone, its pid taken by a new process
    exec_lost = s.fork(SUPERVISOR_PID)  # then ran `sleep 9`, that event lost
    long_name = s.spawn(SUPERVISOR_PID, "a-program-with-a-long-name")  # comm cut at 15 by the kernel
    for event in s.events:
        table.apply(event)
    listener.heard.clear()

    table.resync(resync_of(
        20.0,
        info(stays, SUPERVISOR_PID, 10.0, "sleep", "100"),
        info(becomes_zombie, SUPERVISOR_PID, 10.0, "sleep", "2", zombie=True),
        info(adopted, 1, 10.0, "sleep", "4"),
        info(reused, SUPERVISOR_PID, 15.0, "sleep", "6"),
        info(5000, SUPERVISOR_PID, 12.0, "sleep", "7"),  # forked while events were lost
        info(5001, 5000, 13.0, "sleep", "8"),
        info(exec_lost, SUPERVISOR_PID, 10.0, "sleep", "9"),
        replace(info(long_name, SUPERVISOR_PID, 10.0, "a-program-with-a-long-name"), comm="a-program-with-a-long-name"),
    ))

    assert table.get(stays).alive and table.get(stays).parent is table.get(SUPERVISOR_PID)
    assert table.get(dies_unseen) is None and table.get(reaped_unseen) is None
    assert table.get(becomes_zombie).zombie and table.get(becomes_zombie).exited_at == BOOT_OFFSET + 20.0
    assert table.get(adopted).parent is table.get(1) and table.get(adopted).ppid == 1
    assert table.get(adopted).spawner is table.get(stays)  # who forked it never changes
    new_holder = table.get(reused)
    assert new_holder.alive and new_holder.start == BOOT_OFFSET + 15.0 and new_holder.argv == ("sleep", "6")
    added = table.get(5000)
    assert added.seeded and added.spawner is table.get(SUPERVISOR_PID) and table.get(5001).spawner is added
    assert table.counts["resync_closed"] == 3  # dies_unseen, reaped_unseen, the old holder of `reused`
    assert table.counts["resync_exited"] == 1 and table.counts["resync_added"] == 3
    assert table.counts["resync_reparented"] == 1
    assert table.get(exec_lost).argv == ("sleep", "9") and ("changed", exec_lost) in listener.heard
    assert table.counts["resync_execs"] == 1  # not the long name psutil shows in full
    # Every change was heard, so a detector keeps consistent counts.
    assert {("exited", dies_unseen), ("reaped", dies_unseen), ("reaped", reaped_unseen),
            ("exited", becomes_zombie), ("joined", 5000), ("joined", 5001), ("joined", reused)} <= set(listener.heard)
    assert ("exited", reaped_unseen) not in listener.heard  # its exit was seen before
    # The table agrees with /proc: nothing unreaped that the snapshot does not hold.
    assert {p.pid for p in table.unreaped()} == {
        1, 100, 200, stays, becomes_zombie, adopted, reused, 5000, 5001, exec_lost, long_name,
    }


def test_a_child_told_before_its_lost_parent_takes_it_as_spawner_at_the_resync():
    # The parent's records were lost; the sweep told its held child, then the resync told
    # the parent: the child is its spawner's, as if the resync had seeded them both.
    listener = Recorder()
    table = Lineage(SIGN, listener=listener)
    table.seed(host())
    s = Stream(t=10.0)
    child = s.spawn(6000, "sleep", "100")  # 6000: a parent the table never heard of
    for event in s.events:
        table.apply(event)
    assert table.get(child).spawner is None and table.counts["missing_parent"] == 1
    table.resync(resync_of(11.0, info(6000, SUPERVISOR_PID, 9.0, "python3", "supervisor.py"),
                           info(child, 6000, 10.0, "sleep", "100")))
    parent = table.get(6000)
    assert table.get(child).spawner is parent and table.get(child).parent is parent
    assert table.get(child) in parent.children and table.get(child) in parent.spawned
    assert ("joined", child) in listener.heard and table.counts["resync_linked"] == 1


def test_a_resync_with_nothing_lost_changes_nothing():
    table = Lineage(SIGN)
    table.seed(host())
    s = Stream(t=10.0)
    child = s.spawn(SUPERVISOR_PID, "sleep", "100")
    for event in s.events:
        table.apply(event)
    before = {p.key: (p.parent, p.spawner, p.alive) for p in table.unreaped()}
    table.resync(resync_of(11.0, info(child, SUPERVISOR_PID, 10.0, "sleep", "100")))
    assert {p.key: (p.parent, p.spawner, p.alive) for p in table.unreaped()} == before
    assert sum(table.counts[k] for k in ("resync_closed", "resync_exited", "resync_added", "resync_reparented",
                                         "resync_linked")) == 0


def leak_with_a_gap() -> list:
    """A supervisor spawns `npm exec` children every 2 s; events of all but the
    first three were lost, the resync's snapshot shows the twelve."""
    s = Stream(t=10.0)
    children = []
    for i in range(3):
        s.at(10.0 + 2 * i)
        children.append(s.spawn(SUPERVISOR_PID, *NPM_EXEC))
    unseen = [info(6000 + i, SUPERVISOR_PID, 16.0 + 2 * i, *NPM_EXEC) for i in range(9)]
    seen = [info(pid, SUPERVISOR_PID, 10.0 + 2 * i, *NPM_EXEC) for i, pid in enumerate(children)]
    return [host(), *s.events, resync_of(34.0, *seen, *unseen)]


def test_a_leak_that_grew_while_events_were_lost_is_reported_live_and_replayed():
    live = Pipeline(load())
    alerts = [a for item in leak_with_a_gap() for a in live.feed(item)]
    [alert] = [a for a in alerts if a.rule == "accumulating"]
    record = alert.to_record()
    assert record["signature"] == SERVER_SIGNATURE and record["spawner"]["pid"] == SUPERVISOR_PID
    assert record["live"] == 12 and len(record["pids"]) == 12

    replayed = Pipeline(load())
    items = [from_record(to_record(item)) for item in leak_with_a_gap()]
    assert isinstance(items[-1], Resync)
    assert [a.to_record() for item in items for a in replayed.feed(item)] == [a.to_record() for a in alerts]
