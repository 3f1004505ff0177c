"""The probe's half of the kernel's tallies (probe/tallies.py), on a tally array built
here as the kernel lays it out: every child is told once, by the sweep or by the
kernel's record, whichever comes first, and a slot being written is left alone.
The kernel side is tested live in test_brief_kernel.py."""

from __future__ import annotations

from spawnwatch.events import Tally
from spawnwatch.probe import layout
from spawnwatch.probe.tallies import Tallies

SLOTS = 8
NS = 1_000_000_000


class Array:
    """The sw_tallies array, written as the kernel writes it."""

    def __init__(self) -> None:
        self.raw = bytearray(SLOTS * layout.TALLY.size)
        self.words = memoryview(self.raw).cast("I")

    def put(self, slot: int, ppid: int, second: int, gen: int, count: int, seq: int = 2, flags: int = 0) -> None:
        layout.TALLY.pack_into(self.raw, slot * layout.TALLY.size, seq, ppid, second, flags, gen, count,
                               second * NS + 1000, second * NS + 2000, second * NS + 3000, 7, b"worker", 0)

    def read(self, slot: int) -> bytes:
        start = slot * layout.TALLY.size
        return bytes(self.raw[start : start + layout.TALLY.size])

    def sweep(self, tallies: Tallies, now_s: float | None) -> list[Tally]:
        cutoff = None if now_s is None else int(now_s * NS)
        return [tally for tally, _flags, _argv_hash in tallies.sweep(self.words, self.read, cutoff)]


def record(ppid: int, second: int, count: int) -> Tally:
    return Tally(second + 1e-6, 0, ppid, "worker", 7, second + 2e-6, second + 3e-6, count)


occupancy = layout.Occupancy


def test_a_tally_is_swept_once_its_second_is_over_and_only_once():
    array, tallies = Array(), Tallies()
    array.put(3, ppid=100, second=50, gen=1, count=40)
    assert array.sweep(tallies, 50.9) == []  # its second may still gain children
    (tally,) = array.sweep(tallies, 51.0)
    assert (tally.pid, tally.ppid, tally.count, tally.comm, tally.cgroup_id) == (0, 100, 40, "worker", 7)
    assert tally.ts == 50 + 1e-6 and tally.exited_at == 50 + 2e-6 and tally.reaped_at == 50 + 3e-6
    assert array.sweep(tallies, 52.0) == [] and tallies.swept == 1


def test_the_kernel_s_record_of_a_swept_tally_tells_only_the_children_the_sweep_did_not():
    array, tallies = Array(), Tallies()
    array.put(3, ppid=100, second=50, gen=1, count=40)
    assert [t.count for t in array.sweep(tallies, None)] == [40]  # the session ends: every tally
    later = tallies.kernel_tally(record(100, 50, 45), occupancy(3, 1))
    assert later.count == 5 and later.ppid == 100 and not later.pid
    assert tallies.kernel_tally(record(100, 50, 45), occupancy(3, 1)).count == 45  # a record is told once
    assert tallies.kernel_tally(record(100, 50, 40), occupancy(5, 1)).count == 40  # another slot's


def test_a_record_that_tells_nothing_new_is_dropped():
    array, tallies = Array(), Tallies()
    array.put(3, ppid=100, second=50, gen=1, count=40)
    array.sweep(tallies, 51.0)
    assert tallies.kernel_tally(record(100, 50, 40), occupancy(3, 1)) is None


def test_a_record_that_comes_before_the_sweep_is_told_by_the_record():
    array, tallies = Array(), Tallies()
    assert tallies.kernel_tally(record(100, 50, 40), occupancy(3, 1)).count == 40
    array.put(3, ppid=200, second=50, gen=2, count=1)  # what took the slot
    assert [(t.ppid, t.count) for t in array.sweep(tallies, 51.0)] == [(200, 1)]


def test_an_occupancy_whose_record_is_late_is_still_told_once_after_the_next_is_swept():
    array, tallies = Array(), Tallies()
    array.put(3, ppid=100, second=50, gen=1, count=40)
    array.sweep(tallies, 51.0)
    array.put(3, ppid=200, second=51, gen=2, count=3)  # took the slot; gen 1's record not drained yet
    assert [(t.ppid, t.count) for t in array.sweep(tallies, 52.0)] == [(200, 3)]
    assert tallies.kernel_tally(record(100, 50, 41), occupancy(3, 1)).count == 1
    assert tallies.kernel_tally(record(200, 51, 3), occupancy(3, 2)) is None


def test_a_slot_a_program_is_writing_is_left_for_the_next_sweep():
    array, tallies = Array(), Tallies()
    array.put(3, ppid=100, second=50, gen=1, count=40, seq=3)
    assert array.sweep(tallies, 51.0) == []
    array.put(3, ppid=100, second=50, gen=1, count=41, seq=4)
    assert [t.count for t in array.sweep(tallies, 51.0)] == [41]


def test_what_the_sweep_remembers_is_bounded_by_the_slots():
    array, tallies = Array(), Tallies()
    for gen in range(1, 200):  # records of every occupancy lost: nothing comes to clear them
        array.put(3, ppid=100 + gen, second=50 + gen, gen=gen, count=2)
        array.sweep(tallies, 60.0 + gen)
    assert sum(len(told) for told in tallies._told.values()) <= 2
