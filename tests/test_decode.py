"""Decoding and completion of kernel records, without root or BPF."""

from __future__ import annotations

import random
import struct
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from records import encode
from spawnwatch.events import (
    Brief, Exec, ExecBrief, ExecTally, Exit, Fork, Oom, Reap, RecordError, Tally, from_record, to_record,
)
from spawnwatch.probe.argvs import ARGV_TOLD_SLOTS, ToldArgvs
from spawnwatch.probe.layout import Occupancy
from spawnwatch.probe import (
    PAGE_SIZE, KnownProcesses, Probe, ProbeError, SkippedReaps, layout, ring_buffer_pages, table_flags,
)
from spawnwatch.probe.births import HeldForks
from spawnwatch.redact import Redactor, RedactRules


def record(event, flags=0, aside=0):
    return encode(event, flags, aside)


def test_every_kind_round_trips_through_the_kernel_layout():
    events = [
        Fork(1.5, 200, 100, "bash", 7),
        Exec(1.6, 200, 0, "true", 7, ("/bin/true", "a b", "ü"), "/bin/true", False),
        Exit(1.7, 200, 0, "true", 7),
        Reap(1.8, 200, 0, "", 0),
        Oom(1.9, 300, 0, "node", 9, rss_bytes=64 << 20),
        Brief(2.0, 400, 100, "bash", 7, exited_at=2.001, reaped_at=2.0125),
    ]
    for event in events:
        assert layout.decode(record(event)) == (event, 0, 0)
    assert layout.decode(encode(events[2], aside=65736)) == (events[2], 0, 65736)
    tally = Tally(3.0, 0, 100, "bash", 7, exited_at=3.001, reaped_at=3.0125, count=40)
    assert layout.decode(encode(tally, aside=layout.Occupancy(5, 9))) == (tally, 0, layout.Occupancy(5, 9))


def test_a_tally_is_recorded_as_a_tally_and_one_recorded_as_a_pidless_brief_still_replays_as_one():
    tally = Tally(3.0, 0, 100, "bash", 7, exited_at=3.001, reaped_at=3.0125, count=40)
    assert to_record(tally)["kind"] == "tally" and from_record(to_record(tally)) == tally
    recorded_before = {"kind": "brief", "ts": 3.0, "pid": 0, "ppid": 100, "comm": "bash", "cgroup_id": 7,
                       "exited_at": 3.001, "reaped_at": 3.0125, "count": 40}
    assert from_record(recorded_before) == tally
    brief = Brief(2.0, 400, 100, "bash", 7, exited_at=2.001, reaped_at=2.0125)
    assert from_record({**to_record(brief), "count": 1}) == brief and brief.count == 1


def test_exec_truncation_flag_and_missing_argv():
    event = Exec(2.0, 5, 0, "x", 1, ("a",) * 3, "/x", True)
    decoded, flags, _ = layout.decode(record(event))
    assert decoded.argv_truncated and flags & layout.FLAG_ARGV_TRUNCATED
    missing = encode(Exec(2.0, 5, 0, "x", 1, (), "/x", False), layout.FLAG_ARGV_MISSING)
    decoded, flags, _ = layout.decode(missing)
    assert decoded.argv == () and flags & layout.FLAG_ARGV_MISSING


def test_exec_argv_is_bounded_by_argv_size_not_record_padding():
    raw = record(Exec(2.0, 5, 0, "x", 1, ("one", "two"), "/x", False))
    decoded, _, _ = layout.decode(raw + b"garbage\0more\0")
    assert decoded.argv == ("one", "two")


def with_size(raw: bytes, size: int) -> bytes:
    """`raw` with its header's declared size replaced."""
    return raw[:2] + struct.pack("<H", size) + raw[4:]


EXEC = Exec(1.1, 10, 0, "node", 1, ("node", "server.js"), "/usr/bin/node", False)
MALFORMED = {
    "empty": b"",
    "shorter than the header": b"\x01" * 10,
    "header cut short": record(Fork(1.0, 10, 1, "sh", 1))[: layout.HEADER.size - 1],
    "unknown kind": b"\x63" + record(Fork(1.0, 10, 1, "sh", 1))[1:],
    "kind 0": b"\x00" + record(Fork(1.0, 10, 1, "sh", 1))[1:],
    "declares more than it has (fork)": with_size(record(Fork(1.0, 10, 1, "sh", 1)), layout.HEADER.size + 1),
    "declares more than it has (exec)": record(EXEC)[:-3],
    "exec without its tail": with_size(record(EXEC), layout.HEADER.size)[: layout.HEADER.size],
    "exec declaring less than its tail": with_size(record(EXEC), layout.HEADER.size + 4),
    "exit without evicted_pid": with_size(record(Exit(1.2, 10, 0, "x", 1)), layout.HEADER.size)[: layout.HEADER.size],
    "oom declaring only a header": with_size(record(Oom(1.3, 10, 0, "x", 1, rss_bytes=4096)), layout.HEADER.size),
    "fork declaring less than a header": with_size(record(Fork(1.0, 10, 1, "sh", 1)), 4),
    "brief without its times": with_size(record(Brief(1.0, 10, 1, "sh", 1, 1.1, 1.2)), layout.HEADER.size),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_records_raise_decode_error_only(raw):
    with pytest.raises(layout.DecodeError):
        layout.decode(raw)


def test_malformed_records_are_counted_apart_from_loss_and_the_batch_goes_on():
    probe = Probe(parent_of=lambda pid: 1)
    good = [record(Fork(1.0, 10, 1, "sh", 1)), record(EXEC), record(Exit(1.2, 10, 0, "node", 1))]
    batch = [good[0], *MALFORMED.values(), good[1], MALFORMED["unknown kind"], good[2]]
    events = probe.decode_batch(batch)
    assert [e.kind.value for e in events] == ["fork", "exec", "exit"]
    assert events[1].argv == ("node", "server.js")
    stats = probe.stats()
    assert stats["decode_errors"] == len(MALFORMED) + 1
    assert stats["lost"] == 0 and set(stats["lost_by_kind"].values()) == {0}
    assert stats["events"] == {"fork": 1, "exec": 1, "exit": 1}


def test_known_processes_fill_parents_and_reaps():
    known = KnownProcesses(parent_of=lambda pid: {100: 1}.get(pid))
    fork = known.complete(Fork(1.0, 200, 100, "sh", 7), 0)
    assert fork.ppid == 100
    exec_ = known.complete(Exec(1.1, 200, 0, "true", 7, ("true",), "/bin/true"), 0)
    assert exec_.ppid == 100
    exit_ = known.complete(Exit(1.2, 200, 0, "true", 7), 0)
    assert exit_.ppid == 100
    reap = known.complete(Reap(1.3, 200, 0, "", 0), 0)
    assert (reap.ppid, reap.comm, reap.cgroup_id) == (100, "true", 7)


def test_clone_parent_takes_the_callers_parent():
    known = KnownProcesses(parent_of=lambda pid: {100: 1}.get(pid))
    # 100 was never seen forking: its parent comes from /proc (here: 1).
    fork = known.complete(Fork(1.0, 200, 100, "sh", 7), layout.FLAG_CLONE_PARENT)
    assert fork.ppid == 1
    known.complete(Fork(1.1, 300, 1, "init", 1), 0)
    # 300 is known to be a child of 1; its CLONE_PARENT child is 1's child too.
    assert known.complete(Fork(1.2, 301, 300, "x", 1), layout.FLAG_CLONE_PARENT).ppid == 1


def test_a_brief_gets_its_parent_like_a_fork_and_leaves_nothing_behind():
    known = KnownProcesses(parent_of=lambda pid: {100: 1}.get(pid))
    brief = known.complete(Brief(1.0, 200, 100, "sh", 7, 1.1, 1.2), layout.FLAG_CLONE_PARENT)
    assert brief.ppid == 1
    assert known.complete(Brief(1.0, 201, 100, "sh", 7, 1.1, 1.2), 0).ppid == 100
    known.complete(Fork(0.5, 202, 100, "sh", 7), 0)  # a former life of a pid a brief then takes
    known.complete(Brief(1.0, 202, 100, "sh", 7, 1.1, 1.2), 0)
    assert known.complete(Reap(2.0, 200, 0, "", 0), 0).comm == ""  # nothing remembered of 200
    assert known.complete(Reap(2.0, 202, 0, "", 0), 0).comm == ""  # nor of 202's former life


SLOTS = 16


class Births:
    """A sw_births array as the kernel side fills it."""

    def __init__(self) -> None:
        self.raw = bytearray(SLOTS * layout.BIRTH.size)
        self.execs: dict[tuple[int, int], tuple[Exec, int]] = {}  # (exec slot, holder) -> its exec and flags

    def hold(self, pid, forked, ppid=100, state=layout.BIRTH_ALIVE, exited=0.0, flags=0, exec_slot=0):
        layout.BIRTH.pack_into(self.raw, pid % SLOTS * layout.BIRTH.size, pid, state, round(forked * 1e9),
                               round(exited * 1e9), 7, ppid, flags, b"worker", exec_slot, 0)

    def hold_exec(self, pid, forked, execed, argv, exited=None, exec_slot=3):
        """`pid` held, exec'd `argv` at `execed` (and exited at `exited`), its exec in `exec_slot`."""
        state = layout.BIRTH_EXECED if exited is None else layout.BIRTH_EXECED_EXITED
        self.hold(pid, forked, state=state, exited=exited or 0.0, exec_slot=exec_slot)
        self.execs[exec_slot, pid] = (Exec(execed, pid, 0, argv[0], 7, argv, argv[0]), 0)

    def clear(self, pid):
        layout.BIRTH.pack_into(self.raw, pid % SLOTS * layout.BIRTH.size, 0, 0, 0, 0, 0, 0, 0, b"", 0, 0)

    def read(self, slot):
        return bytes(self.raw[slot * layout.BIRTH.size : (slot + 1) * layout.BIRTH.size])

    def held_exec(self, exec_slot, pid):
        return self.execs.get((exec_slot, pid))

    def sweep(self, held, cutoff):
        swept = held.sweep(bytes(self.raw), round(cutoff * 1e9), self.read, self.held_exec)
        return [(e.kind.value, e.pid, e.ts, flags) for e, flags in swept]


def test_the_sweep_announces_each_fork_and_exit_held_past_the_cutoff_once():
    births, held = Births(), HeldForks(SLOTS)
    births.hold(20, 1.0, flags=layout.FLAG_CLONE_PARENT)
    births.hold(21, 1.2, state=layout.BIRTH_EXITED, exited=1.3)
    births.hold(22, 5.0)  # young
    assert births.sweep(held, 0.5) == []
    assert births.sweep(held, 2.0) == [("fork", 20, 1.0, layout.FLAG_CLONE_PARENT), ("fork", 21, 1.2, 0),
                                       ("exit", 21, 1.3, 0)]
    assert births.sweep(held, 3.0) == []  # told once
    births.hold(20, 1.0, state=layout.BIRTH_EXITED, exited=3.5)
    assert births.sweep(held, 3.4) == []
    assert births.sweep(held, 4.0) == [("exit", 20, 3.5, 0)]
    assert births.sweep(held, 9.0) == [("fork", 22, 5.0, 0)]
    assert (held.swept_forks, held.swept_exits) == (3, 2)


def test_the_sweep_trusts_only_whole_slots_that_hold_still():
    births, held = Births(), HeldForks(SLOTS)
    births.hold(20, 1.0)
    copied = bytes(births.raw)
    births.clear(20)  # told by the kernel after the copy: the re-read shows it gone
    assert held.sweep(copied, round(2e9), births.read, births.held_exec) == []
    births.hold(20, 1.0)
    layout.BIRTH.pack_into(births.raw, 5 * layout.BIRTH.size, 20, layout.BIRTH_ALIVE, 10**9, 0, 7, 100, 0, b"x", 0, 0)
    layout.BIRTH.pack_into(births.raw, 6 * layout.BIRTH.size, 6, 9, 10**9, 0, 7, 100, 0, b"x", 0, 0)  # no such state
    moving = iter(range(100))

    def never_still(slot):
        return births.read(slot) if slot != 4 else bytes([next(moving)]) + births.read(slot)[1:]

    assert held.sweep(bytes(births.raw), round(2e9), never_still, births.held_exec) == []  # 20's slot is 4, not 5; 6 is torn
    assert [e.pid for e, _ in held.sweep(bytes(births.raw), round(2e9), births.read, births.held_exec)] == [20]


def test_kernel_records_of_an_announced_process_are_not_told_twice():
    births, held = Births(), HeldForks(SLOTS)
    births.hold(20, 1.0)
    births.hold(21, 1.0, state=layout.BIRTH_EXITED, exited=1.1)
    births.hold(22, 1.0)
    births.hold(23, 1.0, state=layout.BIRTH_EXITED, exited=1.1)
    births.sweep(held, 2.0)
    # 20 execs: its flushed fork is dropped, the rest goes as for any process.
    assert held.kernel_event(Fork(1.0, 20, 100, "worker", 7)) == ()
    assert held.kernel_event(Exit(3.0, 20, 0, "true", 7)) == (Exit(3.0, 20, 0, "true", 7),)
    # 21, a zombie, is reaped: its brief is the reap still untold.
    assert held.kernel_event(Brief(1.0, 21, 100, "worker", 7, 1.1, 3.0)) == (Reap(3.0, 21, 0, "", 0),)
    # 22 exited after the sweep, then was reaped: the exit and the reap.
    assert held.kernel_event(Brief(1.0, 22, 100, "worker", 7, 2.5, 3.0)) == (
        Exit(2.5, 22, 0, "worker", 7), Reap(3.0, 22, 0, "", 0))
    # 23 lost its slot: the flush's fork and exit are both dropped, its reap comes.
    assert held.kernel_event(Fork(1.0, 23, 100, "worker", 7)) == ()
    assert held.kernel_event(Exit(1.1, 23, 0, "worker", 7)) == ()
    assert held.kernel_event(Reap(4.0, 23, 0, "", 0)) == (Reap(4.0, 23, 0, "", 0),)
    # New lives of those pids are told whole.
    for event in (Fork(5.0, 20, 1, "x", 7), Exit(6.0, 20, 0, "x", 7), Brief(5.0, 21, 1, "x", 7, 5.1, 5.2)):
        assert held.kernel_event(event) == (event,)


def test_the_sweep_announces_a_held_exec_with_its_fork_and_not_one_its_slot_gave_up():
    births, held = Births(), HeldForks(SLOTS)
    births.hold_exec(20, 1.0, 1.1, ("node", "server.js"), exec_slot=3)
    births.hold_exec(21, 1.0, 1.1, ("node", "server.js"), exited=1.2, exec_slot=4)
    births.hold_exec(22, 1.0, 1.1, ("node", "server.js"), exec_slot=5)
    del births.execs[5, 22]  # its records went out after the copy: they come with the next drain
    assert births.sweep(held, 2.0) == [("fork", 20, 1.0, 0), ("fork", 21, 1.0, 0), ("exec", 20, 1.1, 0),
                                       ("exec", 21, 1.1, 0), ("exit", 21, 1.2, 0)]
    assert births.sweep(held, 3.0) == []  # told once
    # 21's later flush (its pid's slot taken): fork, exec and exit all told already.
    assert held.kernel_event(Fork(1.0, 21, 100, "worker", 7)) == ()
    assert held.kernel_event(Exec(1.1, 21, 0, "node", 7, ("node", "server.js"))) == ()
    assert held.kernel_event(Exit(1.2, 21, 0, "node", 7)) == ()
    # 20 ends held: its exec brief is its exit and reap.
    brief = ExecBrief(1.0, 20, 100, "node", 7, 2.5, 2.6, 1.1, ("node", "server.js"))
    assert held.kernel_event(brief) == (Exit(2.5, 20, 0, "node", 7), Reap(2.6, 20, 0, "", 0))


class FakeProc:
    """/proc's answer to "is this pid a zombie, since when?", changed by the test."""

    def __init__(self) -> None:
        self.zombies: dict[int, float] = {}
        self.asked: list[int] = []

    def zombie_start(self, pid: int) -> float | None:
        self.asked.append(pid)
        return self.zombies.get(pid)


def test_a_swept_exit_is_settled_by_skipped_reaps_and_its_late_free_tells_nothing_more():
    # The kernel skipped 21's free (a recursion miss): its slot keeps it as exited though its
    # parent reaped it.  The sweep tells its fork and exit only; the probe hands the exit to
    # SkippedReaps, with the fork time as its start, as any exit.
    proc = FakeProc()
    proc.zombies = {22: 1.0}  # 22 is a real zombie
    births, held, skipped = Births(), HeldForks(SLOTS), SkippedReaps(proc.zombie_start)
    births.hold(21, 1.0, state=layout.BIRTH_EXITED, exited=1.1)
    births.hold(22, 1.0, state=layout.BIRTH_EXITED, exited=1.1)
    swept = held.sweep(bytes(births.raw), round(2e9), births.read, births.held_exec)
    assert [(e.kind.value, e.pid) for e, _ in swept] == [("fork", 21), ("fork", 22), ("exit", 21), ("exit", 22)]
    assert proc.asked == []  # the sweep asks /proc nothing
    for event, _ in swept:
        if isinstance(event, Exit):
            skipped.exited(event.pid, event.ts, 1.0)
    assert skipped.check(2.0) == [Reap(2.0, 21, 0, "", 0)] and proc.asked == [21, 22]  # swept HOLD_S old: due
    held.reaped_elsewhere(21)
    assert held.sweep(bytes(births.raw), round(3e9), births.read, births.held_exec) == []
    # What the kernel sends of 21 later was told already: a late free's brief ...
    assert held.kernel_event(Brief(1.0, 21, 100, "worker", 7, 1.1, 3.0)) == ()
    # ... while the real zombie's reap comes from the kernel: exit told, the reap still untold.
    assert held.kernel_event(Brief(1.0, 22, 100, "worker", 7, 1.1, 6.0)) == (Reap(6.0, 22, 0, "", 0),)


def test_exits_left_unreaped_are_looked_up_in_proc_and_real_zombies_less_and_less_often():
    proc = FakeProc()
    proc.zombies = {31: 1.0}
    skipped = SkippedReaps(proc.zombie_start)
    skipped.exited(30, 10.0, 1.0)  # its free was skipped: gone from /proc, never reaped by the kernel
    skipped.exited(31, 10.0, 1.0)  # a real zombie
    skipped.exited(32, 10.0, 1.0)
    skipped.told(32)  # reaped as usual
    assert skipped.check(10.1) == [] and proc.asked == []  # younger than HOLD_S
    assert skipped.check(10.4) == [Reap(10.4, 30, 0, "", 0)] and proc.asked == [30, 31]
    for now in (10.65, 10.9, 11.15, 11.4, 11.65, 11.9, 12.15):
        skipped.check(now)
    assert proc.asked == [30, 31, 31, 31]  # at ages 0.4, 0.9 and 1.9 s: the next at 3.9 s
    assert (skipped.settled, skipped.given_up) == (1, 0)


def test_a_pid_reused_by_a_new_zombie_is_not_taken_for_the_old_one():
    proc = FakeProc()
    skipped = SkippedReaps(proc.zombie_start)
    skipped.exited(40, 10.0, 5.0)  # forked at 5.0, seen
    skipped.exited(41, 10.0, None)  # forked before the session: its start is the zombie's the first look finds
    proc.zombies = {40: 9.0, 41: 3.0}  # 40 reaped, its pid reused by a process that is a zombie too
    assert skipped.check(10.3) == [Reap(10.3, 40, 0, "", 0)]
    proc.zombies[41] = 9.5  # 41 reaped, and its pid reused the same way
    assert skipped.check(11.0) == [Reap(11.0, 41, 0, "", 0)]
    skipped.exited(42, 20.0, 5.004)
    proc.zombies[42] = 5.0  # /proc's start has clock-tick precision: the same process
    assert skipped.check(20.3) == [] and skipped.settled == 2


def test_exits_awaited_are_bounded_and_those_given_up_counted():
    proc = FakeProc()
    proc.zombies = dict.fromkeys(range(10), 1.0)
    skipped = SkippedReaps(proc.zombie_start, limit=3)
    for pid in range(10):
        skipped.exited(pid, 5.0, 1.0)
    assert skipped.given_up == 7
    proc.zombies.clear()
    assert [r.pid for r in skipped.check(6.0)] == [7, 8, 9] and proc.asked == [7, 8, 9]
    skipped.evicted(20, 7.0)  # an evicted pid whose exit was given up is awaited again
    assert skipped.given_up == 7 and [r.pid for r in skipped.check(7.0)] == [20]


def test_the_looks_of_exits_reaped_as_usual_do_not_pile_up():
    proc = FakeProc()
    skipped = SkippedReaps(proc.zombie_start)
    skipped.exited(1, 0.0, 1.0)  # its free skipped: gone from /proc
    for pid in range(2, 20_000):  # a storm's exits, each reaped at once: their looks go stale
        skipped.exited(pid, 0.0, 1.0)
        skipped.told(pid)
    assert len(skipped._looks) < 2_000  # the heap of looks is rebuilt, not grown with the storm
    assert skipped.check(1.0) == [Reap(1.0, 1, 0, "", 0)] and proc.asked == [1]


def test_oom_keeps_the_victims_own_cgroup():
    known = KnownProcesses(parent_of=lambda pid: None)
    known.complete(Fork(1.0, 200, 100, "node", 42), 0)
    oom = known.complete(Oom(2.0, 200, 0, "", 1, rss_bytes=10), 0)
    assert (oom.cgroup_id, oom.comm, oom.ppid) == (42, "node", 100)


def test_known_processes_are_bounded_and_each_eviction_counted():
    known = KnownProcesses(parent_of=lambda pid: None, limit=10)
    for pid in range(1, 100):
        known.complete(Fork(1.0, pid, 1, "x", 1), 0)
    assert known.evicted == 89
    assert known.complete(Exec(2.0, 5, 0, "x", 1), 0).ppid == 0  # evicted, /proc knows nothing
    assert known.complete(Exec(2.0, 99, 0, "x", 1), 0).ppid == 1


def test_probe_batch_decoding_counts_and_fills_missing_argv():
    probe = Probe(parent_of=lambda pid: 1, argv_of=lambda pid: ("node", "server.js"))
    raws = [
        record(Fork(1.0, 10, 1, "sh", 1)),
        encode(Exec(1.1, 10, 0, "node", 1, (), "/usr/bin/node", True), layout.FLAG_ARGV_MISSING),
        b"junk",
    ]
    events = probe.decode_batch(raws)
    assert [e.kind.value for e in events] == ["fork", "exec"]
    assert events[1].argv == ("node", "server.js") and not events[1].argv_truncated
    assert probe.stats() == {
        "events": {"fork": 1, "exec": 1},
        "lost": 0,
        "lost_by_kind": {"fork": 0, "exec": 0, "exit": 0, "reap": 0, "oom": 0, "brief": 0, "tally": 0,
                         "exec_brief": 0},
        "missed_by_kind": {"fork": 0, "exec": 0, "exit": 0, "reap": 0, "oom": 0, "brief": 0},
        "decode_errors": 1,
        "dead_slot_collisions": 0,
        "reaps_settled_from_proc": 0,
        "reaps_given_up": 0,
        "resyncs": 0,
        "ring_bytes_taken": 0,
        "swept_forks": 0,
        "swept_exits": 0,
        "swept_tallies": 0,
        "exec_tallies_untold": 0,
        "evicted_by_table": {"known_processes": 0, "exec_argvs": 0, "told_argvs": 0},
    }


def exec_tally_probe() -> tuple[Probe, memoryview]:
    """A Probe whose tallies are on, with a stand-in for the kernel's sw_argv_told array."""
    probe = Probe(parent_of=lambda pid: 1, compact_lives=True)
    kernel_told = memoryview(bytearray(8 * ARGV_TOLD_SLOTS)).cast("Q")
    probe._told_argvs = ToldArgvs(kernel_told)  # what open() maps
    return probe, kernel_told


def test_an_exec_tally_is_told_with_the_command_line_its_hash_names_and_never_another():
    probe, kernel_told = exec_tally_probe()
    argv = ("npm", "exec", "magic")
    first = ExecBrief(1.0, 10, 100, "npm", 7, 1.02, 1.03, 1.01, argv, "/usr/bin/npm")
    events = probe.decode_batch([encode(first, 0, 0xABC)])
    assert events == [first] and kernel_told[0xABC % ARGV_TOLD_SLOTS] == 0xABC  # the kernel may tally it now
    tally = Tally(1.1, 0, 100, "npm", 7, 1.5, 1.6, 40)
    [told] = probe.decode_batch([encode(tally, 0, Occupancy(3, 1, 0xABC))])
    assert told == ExecTally(1.1, 0, 100, "npm", 7, 1.5, 1.6, 40, argv, "/usr/bin/npm")
    # A hash it does not hold (the kernel's slot taken meanwhile): counted, never told as another's.
    assert probe.decode_batch([encode(tally, 0, Occupancy(4, 1, 0xDEF))]) == []
    assert probe.stats()["exec_tallies_untold"] == 1


def test_told_argvs_are_bounded_and_let_the_kernel_tally_only_what_they_hold():
    kernel_told = memoryview(bytearray(8 * ARGV_TOLD_SLOTS)).cast("Q")
    told = ToldArgvs(kernel_told, limit=2)
    for argv_hash in (5, 6, 7):
        told.remember(argv_hash, ("x", str(argv_hash)), "/bin/x", False)
    assert told.evicted == 1 and kernel_told[5] == 0 and kernel_told[6] == 6 and kernel_told[7] == 7
    assert told.named(Tally(1.0, 0, 1, "x", 7, 1.1, 1.2, 3), 5) is None and told.unknown == 1
    assert told.named(Tally(1.0, 0, 1, "x", 7, 1.1, 1.2, 3), 6).argv == ("x", "6")
    assert told.named(Tally(1.0, 0, 1, "x", 7, 1.1, 1.2, 3), 0) == Tally(1.0, 0, 1, "x", 7, 1.1, 1.2, 3)
    # Another hash of the same kernel slot takes it.
    told.remember(6 + ARGV_TOLD_SLOTS, (), "/bin/x", False)
    assert kernel_told[6] == 6 + ARGV_TOLD_SLOTS
    assert told.named(Tally(1.0, 0, 1, "x", 7, 1.1, 1.2, 3), 6 + ARGV_TOLD_SLOTS).argv == ()


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def test_a_zombie_whose_dead_slot_was_taken_is_looked_up_at_once():
    proc = FakeProc()
    later = boottime() + 3600  # exits due their first look in an hour: only an eviction looks now
    proc.zombies = {300: 1.0, 400: 1.1}
    probe = Probe(parent_of=lambda pid: None, zombie_start=proc.zombie_start)
    probe.decode_batch([record(Fork(1.0, 300, 200, "srv", 7)), record(Fork(1.1, 400, 200, "srv", 7)),
                        record(Exit(later, 300, 0, "srv", 7)), record(Exit(later, 400, 0, "srv", 7))])
    assert proc.asked == []
    # 300 + 65536 exits: the kernel tells that 300's slot was taken; 300 is still a zombie.
    events = probe.decode_batch([record(Exit(later, 65836, 0, "other", 1), aside=300)])
    assert [(e.kind.value, e.pid) for e in events] == [("exit", 65836)] and proc.asked == [300]
    # A slot taken from a zombie /proc already shows gone: reaped in the same batch.
    del proc.zombies[400]
    events = probe.decode_batch([record(Exit(later, 65936, 0, "other", 1), aside=400)])
    assert [(e.kind.value, e.pid) for e in events] == [("exit", 65936), ("reap", 400)]
    reap = events[1]
    assert (reap.ppid, reap.comm, reap.cgroup_id) == (200, "srv", 7) and reap.ts < later
    stats = probe.stats()
    assert (stats["reaps_settled_from_proc"], stats["reaps_given_up"], stats["events"]["reap"]) == (1, 0, 1)


def test_the_probe_settles_an_exit_from_proc_by_the_fork_it_saw_and_not_after_a_new_life():
    proc = FakeProc()
    now = boottime()
    probe = Probe(parent_of=lambda pid: None, zombie_start=proc.zombie_start)
    proc.zombies = {500: now - 9.0, 501: now - 9.0}  # the pids' holders in /proc, zombies forked 9 s ago
    events = probe.decode_batch([
        record(Fork(now - 10.0, 500, 200, "srv", 7)),  # 500 forked 10 s ago: the zombie in /proc is another
        record(Exec(now - 10.0, 500, 0, "job", 7, ("job",), "/bin/job", False)),
        record(Exit(now - 5.0, 500, 0, "job", 7)),
        record(Fork(now - 9.0, 501, 200, "srv", 7)),  # 501 forked when /proc's zombie did: still that one
        record(Exit(now - 5.0, 501, 0, "srv", 7)),
        record(Fork(now - 9.0, 502, 200, "srv", 7)),
        record(Exit(now - 5.0, 502, 0, "srv", 7)),
        record(Fork(now - 1.0, 502, 200, "srv", 7)),  # a new life of 502: its former one was reaped
    ])
    assert [(e.kind.value, e.pid) for e in events if isinstance(e, Reap)] == [("reap", 500)]
    assert sorted(proc.asked) == [500, 501]  # none for 502, whose new life runs (/proc: no zombie)


def test_json_contract_of_each_kind():
    exec_ = to_record(Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False))
    assert list(exec_) == ["kind", "ts", "pid", "ppid", "comm", "cgroup_id", "argv", "filename", "argv_truncated",
                          "environ", "environ_unread"]
    assert to_record(Oom(1.0, 2, 1, "x", 5, 4096))["rss_bytes"] == 4096
    assert list(to_record(Fork(1.0, 2, 1, "x", 5))) == ["kind", "ts", "pid", "ppid", "comm", "cgroup_id"]
    assert from_record(exec_) == Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False)
    assert from_record({"kind": "ready", "pid": 1}) is None


@pytest.mark.parametrize("key, value, error", [
    ("pid", -1, "'pid' must be an integer"), ("ts", float("nan"), "'ts' must be a finite number"),
    ("argv_truncated", 1, "'argv_truncated' must be true or false"), ("comm", 3, "'comm' must be a string"),
    ("argv", ["ok", 2], "'argv' must be a list of strings"), ("cgroup_id", True, "'cgroup_id' must be an integer"),
])
def test_a_whole_record_with_one_bad_value_is_refused_naming_it(key, value, error):
    record = to_record(Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False))
    with pytest.raises(RecordError, match=error):
        from_record({**record, key: value})


def test_a_record_s_whole_seconds_and_missing_defaults_are_taken():
    record = to_record(Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False))
    del record["argv_truncated"]
    assert from_record({**record, "ts": 1}) == Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False)


def test_table_sizes_become_cflags_and_bad_ones_are_refused():
    page_kb = PAGE_SIZE // 1024
    assert table_flags(None, None) == []
    assert table_flags(4 * page_kb, 16) == ["-DSW_RINGBUF_PAGES=4", "-DSW_DEAD_SLOTS=16"]
    assert table_flags(None, None, 64) == ["-DSW_BIRTH_SLOTS=64"]
    assert ring_buffer_pages(16384) == 16384 // page_kb  # the default size is valid
    for kb in (3 * page_kb, page_kb + 1, page_kb // 2):
        with pytest.raises(ProbeError, match="power of two"):
            ring_buffer_pages(kb)
    with pytest.raises(ProbeError, match="dead slots"):
        table_flags(None, 0)
    with pytest.raises(ProbeError, match="birth slots"):
        table_flags(None, None, 0)


def test_ten_thousand_mangled_records_decode_or_raise_decode_error_only():
    rng = random.Random(8)
    valid = [record(Fork(1.0, 10, 1, "sh", 1)), record(EXEC), record(Exit(1.2, 10, 0, "x", 1), aside=7),
             record(Reap(1.3, 10, 0, "", 0)), record(Oom(1.4, 10, 0, "x", 1, rss_bytes=4096)),
             record(Brief(1.5, 10, 1, "x", 1, 1.6, 1.7))]
    outcomes = Counter()
    for _ in range(10_000):
        raw = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            mangle = rng.randrange(5)
            if mangle == 0:
                del raw[rng.randrange(len(raw) + 1):]
            elif mangle == 1 and len(raw) >= 4:
                raw[2:4] = struct.pack("<H", rng.randrange(1 << 16))  # declared size
            elif mangle == 2 and len(raw) >= 2:
                raw[0:2] = struct.pack("<H", rng.randrange(8))  # type
            elif mangle == 3 and raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            else:
                raw += rng.randbytes(rng.randrange(64))
        try:
            layout.decode(bytes(raw))
            outcomes["decoded"] += 1
        except layout.DecodeError:
            outcomes["rejected"] += 1
    assert outcomes["decoded"] > 1000 and outcomes["rejected"] > 1000  # both paths were exercised


def test_a_repeated_command_line_is_decoded_and_redacted_once_and_comes_out_the_same():
    from spawnwatch.config import default_redactor

    redact = default_redactor()
    redacted: list[tuple[str, ...]] = []
    uncached = redact.uncached
    redact.uncached = lambda argv: redacted.append(tuple(argv)) or uncached(argv)  # the probe keeps what it redacts
    probe = Probe(redact=redact)
    argv = ("curl", "-H", "Authorization: Bearer s3cr3t", "https://example.com")
    execs = [Exec(1.0 + pid, pid, 1, "curl", 1, argv, "/usr/bin/curl") for pid in range(10, 15)]
    events = probe.decode_batch([record(e) for e in execs])
    assert [e.argv for e in events] == [redact(argv)] * 5 and "s3cr3t" not in str(events[0].argv)
    assert [e.filename for e in events] == ["/usr/bin/curl"] * 5
    assert redacted == [argv]  # once for the five
    assert probe.stats()["evicted_by_table"]["exec_argvs"] == 0


def test_the_same_argv_bytes_with_another_argc_are_another_argv():
    probe = Probe(redact=Redactor(RedactRules()))
    full = record(Exec(1.0, 10, 1, "sh", 1, ("sh", "-c", "x"), "/bin/sh"))
    # The same bytes, argc cut to 2 (the kernel counts argc and copies argv apart).
    argc_at = layout.HEADER.size
    cut = full[:argc_at] + struct.pack("<I", 2) + full[argc_at + 4:]
    assert [e.argv for e in probe.decode_batch([full, cut, full])] == [("sh", "-c", "x"), ("sh", "-c"), ("sh", "-c", "x")]


def test_command_lines_kept_are_bounded_in_entries_and_key_bytes_and_each_eviction_counted():
    from spawnwatch.probe.argvs import RedactedArgvs

    by_entries = RedactedArgvs(lambda argv: tuple(argv), limit=8, key_bytes=1 << 20)
    for n in range(100):
        assert by_entries(f"prog\0{n}\0".encode(), 2) == ("prog", str(n))
    assert by_entries.evicted == 92
    by_bytes = RedactedArgvs(lambda argv: tuple(argv), limit=1000, key_bytes=4096)
    for n in range(100):
        by_bytes(f"{n:0>1000}\0".encode(), 1)  # 1,001 bytes each: four fit
    assert by_bytes.evicted == 96 and by_bytes._argvs.held <= 4096


@settings(max_examples=3000, deadline=None)
@given(blob=st.binary(max_size=40) | st.lists(st.sampled_from([b"\0", b"a", b"\xc3", b"\xa9", b"\xe2\x82", b"\xf0\x9f\x98",
                                                               b"\xc0\x80", b"\xed\xa0\x80", b"\xff"]),
                                              max_size=12).map(b"".join),
       argc=st.integers(0, 8))
def test_argv_decoded_whole_is_argv_decoded_word_by_word(blob, argc):
    assert layout.argv_words(blob, argc) == tuple(a.decode("utf-8", "replace") for a in blob.split(b"\0")[:argc])
