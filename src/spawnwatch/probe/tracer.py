"""The loaded BPF programs and their ring buffer: drained on a timer, records
decoded and completed into spawnwatch events, held forks and tallies swept."""

from __future__ import annotations

import mmap
import select
import time
from collections import Counter
from typing import Callable

from spawnwatch.config import default_redactor
from spawnwatch.events import Brief, Event, Exec, ExecBrief, ExecTally, Exit, Tally, replaced
from spawnwatch.probe import layout, preflight
from spawnwatch.probe.argvs import RedactedArgvs, ToldArgvs
from spawnwatch.probe.births import HOLD_S, HeldForks
from spawnwatch.probe.known import KnownProcesses, ParentOf
from spawnwatch.probe.program import (
    EMITTING_PROGRAMS, PAGE_SIZE, ProbeError, feature_flags, program_text, recursion_misses, table_flags,
    compact_flags,
)
from spawnwatch.probe.reaps import SkippedReaps, ZombieStart
from spawnwatch.probe.ring import RingReader
from spawnwatch.probe.tallies import Tallies
from spawnwatch.redact import Redactor
from spawnwatch.signature import ENGINE_CLIENTS


def mapped_array(table, value_size: int, writable: bool = False) -> mmap.mmap:
    """A BPF_F_MMAPABLE array's values, mapped in place (whole pages), read-only unless `writable`."""
    size = -(-table.max_entries * value_size // PAGE_SIZE) * PAGE_SIZE
    return mmap.mmap(table.map_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0))


ArgvOf = Callable[[int], "tuple[str, ...] | None"]
EnvironOf = Callable[[int], "tuple[str, ...] | None"]  # procfs.engine_environ

# A sweep copies and scans every held-fork slot: a fixed cost (on a slow host, as
# much as decoding a thousand records), so it runs at most every SWEEP_INTERVAL_S,
# and a held fork is announced HOLD_S to HOLD_S + SWEEP_INTERVAL_S after it forked.
SWEEP_INTERVAL_S = HOLD_S

RESYNC_INTERVAL_S = 1.0  # at most one /proc resync a second during a storm that keeps losing events


class Probe:
    """The loaded BPF programs and their ring buffer.

    `parent_of` and `argv_of` answer from /proc what neither the kernel side
    nor the events seen so far can: the parent of a process that started
    before we attached, the argv of an exec that began before we attached;
    `zombie_start`, whether an exited process is still a zombie (SkippedReaps:
    without it no reap is settled from /proc).
    Every exec's argv, from either, leaves through `redact` (by default the
    default config's rules); so does, for the exec of a docker client, what
    `environ_of` reads of its environment (the engine it talks to: unread when
    it answers None).  `ring_buffer_kb`, `dead_slots` and `birth_slots`
    size the kernel-side tables (default: bpf/spawnwatch.h's).  With
    `compact_lives`, what would come as Briefs comes counted per spawner and
    second (the pids unsaid), and a process that exec'd once in its short life
    comes whole in one ExecBrief, as detection needs them and a storm affords."""

    def __init__(
        self,
        parent_of: ParentOf | None = None,
        argv_of: ArgvOf | None = None,
        redact: Redactor | None = None,
        zombie_start: ZombieStart | None = None,
        ring_buffer_kb: int | None = None,
        dead_slots: int | None = None,
        birth_slots: int | None = None,
        compact_lives: bool = False,
        environ_of: EnvironOf | None = None,
    ) -> None:
        self._argv_of = argv_of
        self._environ_of = environ_of
        self._redact = redact if redact is not None else default_redactor()
        self._argvs = RedactedArgvs(self._redact.uncached)
        self._known = KnownProcesses(parent_of)
        self._skipped_reaps = SkippedReaps(zombie_start) if zombie_start else None
        self._table_flags = table_flags(ring_buffer_kb, dead_slots, birth_slots)
        self._held = HeldForks(birth_slots or layout.BIRTH_SLOTS)
        self._births: mmap.mmap | None = None
        self._exec_slots: mmap.mmap | None = None
        self._tallies = Tallies() if compact_lives else None
        self._tally_slots: mmap.mmap | None = None
        self._tally_words: memoryview | None = None
        self._argv_told: mmap.mmap | None = None
        self._argv_told_words: memoryview | None = None
        self._told_argvs = ToldArgvs(None)
        self._lost_counts: mmap.mmap | None = None
        self._lost: memoryview | None = None  # the counts, each loaded as one word
        self._next_sweep_ns = 0
        self._bpf = None
        self._ring: RingReader | None = None
        self._ring_bytes_taken = 0  # at close: the ring's position then
        self._wakeups: select.epoll | None = None
        self._counts: Counter[type] = Counter()  # by class: an enum member's hash and value run Python code
        self._decode_errors = 0
        self._lost_at_resync = 0
        self._next_resync = 0.0
        self._resyncs = 0

    def __enter__(self) -> "Probe":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        failure = preflight.first_failure()
        if failure is not None:
            raise ProbeError(failure.problem())
        from bcc import BPF

        try:
            self._bpf = BPF(
                text=program_text().encode(),
                cflags=feature_flags() + self._table_flags + (compact_flags() if self._tallies else [])
                + ["-Wno-macro-redefined"],
            )
        except Exception as exc:  # bcc raises bare Exception; its details went to stderr
            raise ProbeError(f"could not load the BPF programs: {str(exc).splitlines()[0]}") from exc
        ring = self._bpf[b"sw_events"]
        self._ring = RingReader(ring.map_fd, ring.max_entries)
        # Records go without a wakeup (bpf/spawnwatch.h) but an OOM kill's: edge-triggered,
        # a wait lasts its timeout even while records sit in the ring, unless one asks.
        self._wakeups = select.epoll()
        self._wakeups.register(ring.map_fd, select.EPOLLIN | select.EPOLLET)
        self._births = mapped_array(self._bpf[b"sw_births"], layout.BIRTH.size)
        self._exec_slots = mapped_array(self._bpf[b"sw_exec_slots"], layout.EXEC_SLOT_SIZE)
        if self._tallies is not None:
            tallies = self._bpf[b"sw_tallies"]
            self._tally_slots = mapped_array(tallies, layout.TALLY.size)
            self._tally_words = memoryview(self._tally_slots)[: tallies.max_entries * layout.TALLY.size].cast("I")
            told = self._bpf[b"sw_argv_told"]
            self._argv_told = mapped_array(told, 8, writable=True)
            self._argv_told_words = memoryview(self._argv_told)[: told.max_entries * 8].cast("Q")
            self._told_argvs = ToldArgvs(self._argv_told_words)
        self._lost_counts = mapped_array(self._bpf[b"sw_lost_stats"], 8)
        self._lost = memoryview(self._lost_counts).cast("Q")

    def close(self) -> None:
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups = None
        if self._ring is not None:
            self._ring_bytes_taken = self._ring.position
            self._ring.close()
            self._ring = None
        if self._births is not None:
            self._births.close()
            self._births = None
        if self._exec_slots is not None:
            self._exec_slots.close()
            self._exec_slots = None
        if self._tally_words is not None:
            self._tally_words.release()
            self._tally_slots.close()
            self._tally_words, self._tally_slots = None, None
        if self._argv_told_words is not None:
            self._argv_told_words.release()
            self._argv_told.close()
            self._argv_told_words, self._argv_told = None, None
        if self._lost is not None:
            self._lost.release()
            self._lost_counts.close()
            self._lost, self._lost_counts = None, None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def poll(self, timeout: float = 0.05) -> list[Event]:
        """Wait up to `timeout` s (an OOM kill wakes us early), drain, decode,
        then, every SWEEP_INTERVAL_S, the held forks HOLD_S old that no record
        told (and the reaps of their exits /proc already shows, as the exits
        are HOLD_S old too)."""
        assert self._bpf is not None, "Probe.open() first"
        now_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        sweeping = now_ns >= self._next_sweep_ns
        births = self._births_now() if sweeping else b""  # before the drain: what it leaves held, no record told
        self._wakeups.poll(timeout)
        events = self.decode_batch(self._ring.take())
        if sweeping:
            self._next_sweep_ns = now_ns + int(SWEEP_INTERVAL_S * 1e9)
            cutoff_ns = now_ns - int(HOLD_S * 1e9)
            events += self._swept(births, cutoff_ns) + self._swept_tallies(cutoff_ns)
        return events + self._settled(time.clock_gettime(time.CLOCK_BOOTTIME))

    def drain(self) -> list[Event]:
        """Everything already in the ring and every fork still held, without
        waiting (at shutdown, or before /proc is read for a resync)."""
        assert self._bpf is not None, "Probe.open() first"
        cutoff_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        births = self._births_now()
        events = self.decode_batch(self._ring.take()) + self._swept(births, cutoff_ns)
        # A held process the kernel told whole while the sweep read its slot was left to
        # its record, which came after the take: at the end of a session no poll follows.
        events += self.decode_batch(self._ring.take())
        return events + self._swept_tallies(None)

    def _births_now(self) -> bytes:
        return self._births[: self._held.slots * layout.BIRTH.size]

    def _birth(self, slot: int) -> bytes:
        start = slot * layout.BIRTH.size
        return self._births[start : start + layout.BIRTH.size]

    def _held_exec(self, index: int, pid: int) -> tuple[Exec, int] | None:
        """The exec that slot `index` holds for the held process `pid` (births.py's HeldExec)."""
        start = index * layout.EXEC_SLOT_SIZE
        if layout.exec_slot_holder(self._exec_slots, start) != pid:
            return None
        try:
            event, flags, _aside = layout.decode(self._exec_slots[start : start + layout.EXEC_SLOT_SIZE], self._argvs)
        except layout.DecodeError:
            return None
        if layout.exec_slot_holder(self._exec_slots, start) != pid:
            return None  # released while read: its record is on its way
        return self._completed_exec(event, flags), flags

    def _swept(self, births: bytes, cutoff_ns: int) -> list[Event]:
        held = self._held.sweep(births, cutoff_ns, self._birth, self._held_exec)
        return [self._complete(event, flags) for event, flags in held]

    def _tally(self, slot: int) -> bytes:
        start = slot * layout.TALLY.size
        return self._tally_slots[start : start + layout.TALLY.size]

    def _swept_tallies(self, cutoff_ns: int | None) -> list[Event]:
        if self._tallies is None:
            return []
        told = []
        for tally, flags, argv_hash in self._tallies.sweep(self._tally_words, self._tally, cutoff_ns):
            tally = self._told_argvs.named(tally, argv_hash)
            if tally is not None:
                told.append(self._complete(tally, flags))
        return told

    def decode_batch(self, records: list[bytes]) -> list[Event]:
        """Records -> completed events (less what the sweep already announced),
        then the reaps the kernel will not tell that /proc settled (SkippedReaps).
        Undecodable records are counted and skipped."""
        events: list[Event] = []
        append, decode, kernel_event, complete = events.append, layout.decode, self._held.kernel_event, self._complete
        argvs = self._argvs
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        for raw in records:
            try:
                event, flags, aside = decode(raw, argvs)
            except layout.DecodeError:
                self._decode_errors += 1
                continue
            kind = type(event)
            if kind is Tally:  # `aside`, its occupancy: the children the sweep did not tell pass
                event = self._tallies.kernel_tally(event, aside) if self._tallies is not None else event
                if event is not None:
                    event = self._told_argvs.named(event, aside.argv_hash)
                if event is not None:
                    append(complete(event, flags))
                continue
            if kind is ExecBrief or kind is Exec:  # `aside`, its command line's hash
                if kind is Exec:
                    event = self._completed_exec(event, flags)
                if aside:
                    self._told_argvs.remember(aside, event.argv, event.filename, event.argv_truncated)
            for told in kernel_event(event):  # a loop, not a comprehension: no frame made per record
                append(complete(told, flags if told is event else 0))
            if aside and kind is Exit and self._skipped_reaps is not None:  # an exit's EvictedPid
                self._skipped_reaps.evicted(aside, now)
        return events + self._settled(now)

    def _completed_exec(self, event: Exec, flags: int) -> Exec:
        """An exec, its argv decoded and redacted already, with what /proc adds: its argv
        when the kernel could not read it, the environment of an engine's client."""
        found = self._argv_of(event.pid) if flags & layout.FLAG_ARGV_MISSING and self._argv_of else None
        if found:
            event = replaced(event, argv=self._redact(found), argv_truncated=False)
        if event.comm in ENGINE_CLIENTS and self._environ_of is not None:
            environ = self._environ_of(event.pid)
            event = replaced(event, environ=self._redact(environ) if environ else (), environ_unread=environ is None)
        return event

    def _settled(self, now: float) -> list[Event]:
        if self._skipped_reaps is None:
            return []
        reaps = self._skipped_reaps.check(now)
        for reap in reaps:
            self._held.reaped_elsewhere(reap.pid)
        return [self._complete(reap, 0) for reap in reaps]

    @property
    def redact(self) -> Redactor:
        """The rules its execs' argv pass through: a /proc read of the same session uses them too."""
        return self._redact

    def _complete(self, event: Event, flags: int) -> Event:
        kind = type(event)
        self._counts[kind] += 1
        if self._skipped_reaps is not None and kind not in _WHOLE_LIVES:
            if kind is Exit:
                self._skipped_reaps.exited(event.pid, event.ts, self._known.start(event.pid))
            else:
                self._skipped_reaps.told(event.pid)
        return self._known.complete(event, flags)

    def lost_by_kind(self) -> dict[str, int]:
        """Events the kernel side could not reserve (ring full), by kind."""
        if self._lost is None:
            return dict.fromkeys(layout.TYPE_NAMES.values(), 0)
        return {name: self._lost[number] for number, name in layout.TYPE_NAMES.items()}

    def lost(self) -> int:
        """Events the kernel side could not reserve (ring full), all kinds."""
        return sum(self.lost_by_kind().values())

    def missed_by_kind(self) -> dict[str, int]:
        """Events whose program the kernel skipped (see EMITTING_PROGRAMS), by kind."""
        # A tally or an exec brief comes from the programs of the kinds above: no run of its own to miss.
        missed = dict.fromkeys((kind.value for number, kind in layout.TYPE_KINDS.items()
                                if number not in (layout.TALLY_TYPE, layout.EXEC_BRIEF_TYPE)), 0)
        if self._bpf is not None:
            for program, kind in EMITTING_PROGRAMS.items():
                missed[kind.value] += recursion_misses(self._bpf.funcs[program].fd)
        return missed

    def dead_slot_collisions(self) -> int:
        """Exits whose dead slot was held by another zombie (see SkippedReaps)."""
        if self._bpf is None:
            return 0
        return sum(sum(per_cpu) for per_cpu in self._bpf[b"sw_dead_pids_stats"].values())

    def resync_due(self, last: bool = False) -> bool:
        """True when the kernel lost events since the last resync: the caller then
        rebuilds the process table from /proc.  At most once every
        RESYNC_INTERVAL_S, unless `last` (the session ends: the table must agree
        with /proc); a loss during that interval is caught at the next call."""
        lost = self.lost()
        now = time.monotonic()
        if lost == self._lost_at_resync or (now < self._next_resync and not last):
            return False
        self._lost_at_resync = lost
        self._next_resync = now + RESYNC_INTERVAL_S
        self._resyncs += 1
        return True

    def stats(self) -> dict:
        """Counters of the session: `lost` is the kernel's total, `lost_by_kind` its split."""
        lost_by_kind = self.lost_by_kind()
        return {
            "events": {cls.kind.value: count for cls, count in self._counts.items()},
            "lost": sum(lost_by_kind.values()),
            "lost_by_kind": lost_by_kind,
            "missed_by_kind": self.missed_by_kind(),
            "decode_errors": self._decode_errors,
            "dead_slot_collisions": self.dead_slot_collisions(),
            "reaps_settled_from_proc": self._skipped_reaps.settled if self._skipped_reaps else 0,
            "reaps_given_up": self._skipped_reaps.given_up if self._skipped_reaps else 0,
            "resyncs": self._resyncs,
            "ring_bytes_taken": self._ring.position if self._ring is not None else self._ring_bytes_taken,
            "swept_forks": self._held.swept_forks,
            "swept_exits": self._held.swept_exits,
            "swept_tallies": self._tallies.swept if self._tallies else 0,
            "exec_tallies_untold": self._told_argvs.unknown,
            "evicted_by_table": self.evicted_by_table(),
        }

    def evicted_by_table(self) -> dict[str, int]:
        """Entries the bounded tables of user space let go past their limits."""
        evicted = {"known_processes": self._known.evicted, "exec_argvs": self._argvs.evicted,
                   "told_argvs": self._told_argvs.evicted}
        if self._skipped_reaps:
            evicted["awaited_exits"] = self._skipped_reaps.given_up
        return evicted


# Records of lives told whole (a Brief's hot path, and counts of them): a life of the pid
# told whole leaves nothing in the table that a late Reap of its former holder could end.
_WHOLE_LIVES = frozenset({Brief, Tally, ExecBrief, ExecTally})

