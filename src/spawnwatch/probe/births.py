"""Forks the kernel side holds back (bpf/births.h), seen from user space.

The kernel sends nothing for a fork until the process does something a record
must say; a process forked, exited and reaped with nothing in between comes as
one Brief (with an exec in between, for `watch`, one ExecBrief).  A process that
lives on without doing anything else (a worker that never execs, a server that
never forks, a zombie nobody reaps) would never be seen: HeldForks sweeps the
kernel's sw_births array, mapped read-only, and announces each fork once it is
HOLD_S old (its held exec with it, its exit too once that is HOLD_S old),
remembering what it announced per slot (so it is bounded by the table).  It also
keeps the kernel's later records about an announced process from telling it
twice: a flushed fork is dropped, a Brief becomes the exit and reap still untold.

A held process the kernel skipped the free of (a recursion miss: it runs from an
RCU callback that may interrupt another of our programs) stays in its slot as
exited, though its parent reaped it: the sweep tells its exit, and the probe's
SkippedReaps, which awaits every exit told, finds it gone from /proc and tells
its reap; the probe says so here (reaped_elsewhere), so that a late free's
record of it tells nothing twice.

Pure: the probe hands it the map's bytes and a way to re-read one slot.
"""

from __future__ import annotations

from typing import Callable, Iterable

from spawnwatch.events import Brief, Event, Exec, Exit, Fork, Reap
from spawnwatch.probe import layout

# How old a held fork is when the sweep announces it.  Nearly every process of a
# fork storm is reaped well within it (fork -> free takes a few ms, the RCU grace
# period included) and so comes as one Brief, never swept; and a process that
# lives on shows up a quarter of a second late, less than a human or any rule's
# window notices.
HOLD_S = 0.25
_HOLD_NS = int(HOLD_S * 1e9)
_SLOT_WORDS = layout.BIRTH.size // 8  # u64 words per slot; its first holds pid and state
_PID_MASK = 0xFFFF_FFFF
_VALID_STATES = (layout.BIRTH_ALIVE, layout.BIRTH_EXITED, layout.BIRTH_EXECED, layout.BIRTH_EXECED_EXITED)
_EXITED_STATES = (layout.BIRTH_EXITED, layout.BIRTH_EXECED_EXITED)
_EXECED_STATES = (layout.BIRTH_EXECED, layout.BIRTH_EXECED_EXITED)
_STABLE_READS = 4  # re-reads of a slot that changes under us before it is left for the next sweep

ReadSlot = Callable[[int], bytes]
# (exec slot, pid) -> the exec that slot holds for the held process `pid`, with its record's
# flags; None once it holds it no longer (its records are on their way).
HeldExec = Callable[[int, int], "tuple[Exec, int] | None"]


class HeldForks:
    """The sweep of the kernel's held forks and what it announced: one entry per
    slot at most, so bounded by the table's size."""

    def __init__(self, slots: int = layout.BIRTH_SLOTS) -> None:
        self.slots = slots
        # slot -> (pid, fork time as decoded, exit announced too, reap told from /proc)
        self._announced: dict[int, tuple[int, float, bool, bool]] = {}
        self.swept_forks = 0
        self.swept_exits = 0

    def kernel_event(self, event: Event) -> tuple[Event, ...]:
        """What to pass on of a record the kernel sent: it may tell of a process
        the sweep already announced."""
        slot = event.pid % self.slots
        entry = self._announced.get(slot)
        if entry is None or entry[0] != event.pid or not isinstance(event, (Fork, Brief, Exec, Exit, Reap)):
            return (event,)  # nearly every record: its process was never announced
        _pid, forked, exit_told, reap_told = entry
        if isinstance(event, Exec):
            return () if exit_told else (event,)  # with an exit told: the announced exec, flushed with it
        if isinstance(event, Exit):
            if not exit_told:
                return (event,)
            del self._announced[slot]  # the exit of a flush whose fork was dropped
            return ()
        if isinstance(event, Fork) and event.ts == forked:
            if not exit_told:
                del self._announced[slot]  # flushed: from now on it goes as any other process
            return ()  # with an exit told, the flush's exit follows: dropped too
        del self._announced[slot]
        if not isinstance(event, Brief) or event.ts != forked:
            return (event,)  # a reap, or a new life of the pid
        if reap_told:
            return ()  # its free ran late after all
        reap = Reap(ts=event.reaped_at, pid=event.pid, ppid=0, comm="", cgroup_id=0)
        if exit_told:
            return (reap,)
        return (Exit(ts=event.exited_at, pid=event.pid, ppid=0, comm=event.comm, cgroup_id=event.cgroup_id), reap)

    def reaped_elsewhere(self, pid: int) -> None:
        """`pid`'s reap was told from /proc: if it is an exit the sweep announced,
        its free's record, should it come after all, tells nothing more."""
        slot = pid % self.slots
        entry = self._announced.get(slot)
        if entry is not None and entry[0] == pid and entry[2]:
            self._announced[slot] = (pid, entry[1], True, True)

    def sweep(self, births: bytes, cutoff_ns: int, read_slot: ReadSlot, held_exec: HeldExec) -> list[tuple[Event, int]]:
        """(event, flags) for each held fork (and the exec it holds), and held exit, as old
        as `cutoff_ns` and not announced yet, sorted by time.  `births` is the array as
        copied before the ring was drained: a slot found there that still holds its process
        (re-read after the drain with `read_slot`) was told by no record of that drain."""
        announced = []
        for slot in self._occupied(births):
            if not self._untold(slot, layout.BIRTH.unpack_from(births, slot * layout.BIRTH.size), cutoff_ns):
                continue
            raw = _stable(read_slot, slot)
            fields = layout.BIRTH.unpack(raw) if raw is not None else None
            if fields is None or not self._untold(slot, fields, cutoff_ns):
                continue  # told meanwhile, or the kernel keeps writing it: the next sweep sees it
            pid, state, forked_ns, exited_ns, cgroup_id, ppid, flags, comm, exec_slot, _reserved = fields
            forked = forked_ns / 1e9
            entry = self._announced.get(slot)
            fork_told = entry is not None and entry[:2] == (pid, forked)
            if not fork_told:
                execed = None
                if state in _EXECED_STATES:
                    execed = held_exec(exec_slot, pid)
                    if execed is None:
                        continue  # told meanwhile
                announced.append((Fork(forked, pid, ppid, layout.text(comm), cgroup_id), flags))
                if execed is not None:
                    announced.append(execed)
                self.swept_forks += 1
            exited = state in _EXITED_STATES and exited_ns <= cutoff_ns
            if exited and not (fork_told and entry[2]):
                announced.append((Exit(exited_ns / 1e9, pid, 0, layout.text(comm), cgroup_id), 0))
                self.swept_exits += 1
            self._announced[slot] = (pid, forked, exited, False)
        announced.sort(key=lambda pair: pair[0].ts)
        return announced

    def _untold(self, slot: int, fields: tuple, cutoff_ns: int) -> bool:
        """Whether a slot's content is a whole held process, as old as the cutoff,
        with a fork or exit not announced yet."""
        pid, state, forked_ns, exited_ns = fields[:4]
        if not pid or pid % self.slots != slot or state not in _VALID_STATES or forked_ns > cutoff_ns:
            return False  # empty, torn, or young
        entry = self._announced.get(slot)
        if entry is None or entry[:2] != (pid, forked_ns / 1e9):
            return True
        return state in _EXITED_STATES and exited_ns <= cutoff_ns and not entry[2]

    def _occupied(self, births: bytes) -> Iterable[int]:
        """Slots whose tag word is set, found without a Python loop over the empty ones."""
        tags = memoryview(births).cast("Q")[::_SLOT_WORDS].tolist()
        return {(tag & _PID_MASK) % self.slots for tag in filter(None, tags)}


def _stable(read_slot: ReadSlot, slot: int) -> bytes | None:
    """The slot's bytes once two reads in a row agree (the kernel may be writing it)."""
    last = read_slot(slot)
    for _ in range(_STABLE_READS):
        again = read_slot(slot)
        if again == last:
            return again
        last = again
    return None
