"""The kernel's tallies of short lives (bpf/tallies.h), seen from user space.

When `watch` asks, the kernel counts a child that lived and was reaped with
nothing in between (what a Brief tells, or with one exec, an ExecBrief) in its
spawner's tally instead of sending a record: a slot per spawner on each CPU,
holding the children it forked in one second.  The kernel sends a Tally (how
many, no pids) when another second's or another spawner's child takes its slot;
one that no child comes to take would stay in the slot untold, so the sweep
reads the mapped array and tells each tally once its second is over.  The kernel
may still send a tally the sweep told: its record's occupancy (slot and gen)
finds what the sweep told of it, and only the children told by neither go on.

Pure: the probe hands it the array's words and a way to read one slot.
"""

from __future__ import annotations

from typing import Callable

from spawnwatch.events import Tally, replaced
from spawnwatch.probe import layout
from spawnwatch.probe.layout import Occupancy

TALLY_SLOTS = 256  # SW_TALLY_SLOTS's default: slots per CPU
_NS_PER_S = 1_000_000_000
_GEN_MASK = 0xFFFF_FFFF
_WORDS = layout.TALLY.size // 4  # u32 words per slot
_GEN_WORD, _COUNT_WORD = 4, 5  # of a slot (layout.TALLY_FIELDS)
_STABLE_READS = 4  # reads of a slot the kernel keeps writing before it is left for the next sweep

ReadSlot = Callable[[int], bytes]


class Tallies:
    """What the sweep told of each tally slot: bounded by the slots (at most two
    occupancies each, see `_told`)."""

    def __init__(self) -> None:
        # slot -> {gen: children told}.  An occupancy's record comes once another
        # takes the slot; by the sweep after the one that told the next occupancy,
        # that record has been drained, so only the newest two need keeping.
        self._told: dict[int, dict[int, int]] = {}
        self._last_told: dict[int, tuple[int, int]] = {}  # slot -> (gen, count) its sweep last told
        self.swept = 0  # tallies told by the sweep (the kernel's records apart)

    def kernel_tally(self, tally: Tally, occupancy: Occupancy) -> Tally | None:
        """What to pass on of a tally the kernel sent: the children the sweep did not tell."""
        slot, gen = occupancy.slot, occupancy.gen
        told = self._told.get(slot)
        already = told.pop(gen, 0) if told else 0
        if told is not None and not told:
            del self._told[slot]
            self._last_told.pop(slot, None)
        if already >= tally.count:
            return None
        return replaced(tally, count=tally.count - already) if already else tally

    def sweep(self, words: memoryview, read_slot: ReadSlot, cutoff_ns: int | None) -> list[tuple[Tally, int, int]]:
        """(tally, flags, the hash of the command line its children exec'd or 0) for each
        occupied slot with children untold, whose second ended by `cutoff_ns` (when None,
        every one: the session ends).  `words` is the array as u32 words, read in place."""
        found = []
        last_told = self._last_told
        gens, counts = words[_GEN_WORD::_WORDS].tolist(), words[_COUNT_WORD::_WORDS].tolist()
        for slot, (gen, count) in enumerate(zip(gens, counts)):
            if not count or last_told.get(slot) == (gen, count):
                continue  # empty, or told as it is (nearly every slot)
            fields = _stable(words, read_slot, slot)
            if fields is None:
                continue
            _seq, ppid, second, flags, gen, count, first_ns, exited_ns, reaped_ns, cgroup_id, comm, argv_hash = fields
            if cutoff_ns is not None and (second + 1) * _NS_PER_S > cutoff_ns:
                continue  # its second may still gain children
            told = self._told.setdefault(slot, {})
            already = told.get(gen, 0)
            if count > already:
                found.append((Tally(first_ns / 1e9, 0, ppid, layout.text(comm), cgroup_id, exited_ns / 1e9,
                                    reaped_ns / 1e9, count - already), flags, argv_hash))
                self.swept += 1
            told[gen] = count
            for old in sorted(told, key=lambda g: (gen - g) & _GEN_MASK)[2:]:
                del told[old]
            last_told[slot] = (gen, count)
        found.sort(key=lambda pair: pair[0].ts)
        return found


def _stable(words: memoryview, read_slot: ReadSlot, slot: int) -> tuple | None:
    """A slot's fields as no program was writing them: its seq (odd while a program
    writes), read on its own before and after the copy, the same even number."""
    seq_word = slot * _WORDS
    for _ in range(_STABLE_READS):
        seq = words[seq_word]
        fields = layout.TALLY.unpack(read_slot(slot))
        if seq % 2 == 0 and words[seq_word] == seq == fields[0]:
            return fields
    return None
