"""The kernel side's user half: compile and attach bpf/, drain the ring buffer
on a timer, decode records into spawnwatch events.

    with Probe() as probe:
        events = probe.poll(timeout=0.1)
        probe.stats()   # {"events": {"fork": n, ...}, "lost": n, "lost_by_kind": {...}, ...}

The kernel side holds each fork back until the process does something else, and
tells a process forked, exited and reaped with nothing in between in one Brief,
or, when asked (`tally_briefs`), counts such processes per spawner and second
in a Brief without a pid; a poll also sweeps the held forks (births.py) for
those held too long, and the tallies (tallies.py) no record told, every
SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import heapq
import mmap
import os
import re
import select
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Callable

from spawnwatch.config import default_redactor
from spawnwatch.events import Brief, Event, Exec, Exit, Fork, Kind, Oom, Reap, replaced
from spawnwatch.lineage import SAME_START_S
from spawnwatch.probe import layout, preflight
from spawnwatch.probe.births import HOLD_S, HeldForks
from spawnwatch.probe.ring import RingReader
from spawnwatch.probe.tallies import Tallies
from spawnwatch.redact import Redactor
from spawnwatch.signature import ENGINE_CLIENTS

_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$')


class ProbeError(RuntimeError):
    """Tracing cannot start; the message is one line and says how to fix it."""


def program_text(bpf_dir: Path | None = None) -> str:
    """The one text bcc compiles: local includes expanded in place.

    bcc generates the `args` struct of a TRACEPOINT_PROBE only for probes it
    sees in the main text, so the per-hook files cannot stay separate includes."""
    bpf_dir = bpf_dir or preflight.bpf_dir()

    def expand(name: str, seen: tuple[str, ...]) -> str:
        if name in seen:
            raise ProbeError(f"include cycle in {bpf_dir}: {' -> '.join(seen + (name,))}")
        lines = []
        for line in (bpf_dir / name).read_text().splitlines():
            match = _LOCAL_INCLUDE.match(line)
            lines.append(expand(match.group(1), seen + (name,)) if match else line)
        return "\n".join(lines)

    try:
        return expand(preflight.BPF_MAIN_SOURCE, ())
    except FileNotFoundError as exc:
        raise ProbeError(f"BPF sources not found: {exc.filename} (set SPAWNWATCH_BPF_DIR)") from exc


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def ring_buffer_pages(kb: int) -> int:
    """Pages of a ring buffer of `kb` KiB: the kernel wants a power of two of pages."""
    pages, rest = divmod(kb * 1024, PAGE_SIZE)
    if pages < 1 or rest or pages & (pages - 1):
        raise ProbeError(
            f"a ring buffer of {kb} KiB is not a power of two of {PAGE_SIZE // 1024} KiB pages;"
            f" fix: use {PAGE_SIZE // 1024}, {2 * PAGE_SIZE // 1024}, ..., e.g. 16384 (the default)"
        )
    return pages


def table_flags(ring_buffer_kb: int | None, dead_slots: int | None, birth_slots: int | None = None) -> list[str]:
    """-D flags overriding the kernel-side tables' default sizes."""
    flags = []
    if ring_buffer_kb is not None:
        flags.append(f"-DSW_RINGBUF_PAGES={ring_buffer_pages(ring_buffer_kb)}")
    if dead_slots is not None:
        if dead_slots < 1:
            raise ProbeError(f"{dead_slots} dead slots: fix: at least 1")
        flags.append(f"-DSW_DEAD_SLOTS={dead_slots}")
    if birth_slots is not None:
        if birth_slots < 1:
            raise ProbeError(f"{birth_slots} birth slots: fix: at least 1")
        flags.append(f"-DSW_BIRTH_SLOTS={birth_slots}")
    return flags


def tally_flags() -> list[str]:
    """-D flags that turn the kernel side's tallies of short lives on (tallies.h)."""
    from bcc.utils import get_possible_cpus

    return ["-DSW_TALLY_BRIEFS", f"-DSW_NR_CPUS={max(get_possible_cpus()) + 1}", f"-DSW_HOLD_NS={int(HOLD_S * 1e9)}"]


def feature_flags() -> list[str]:
    """-D flags for tracepoint fields that differ between kernel versions."""
    flags = []
    if "group_dead" in preflight.tracepoint_fields("sched", "sched_process_exit"):
        flags.append("-DSW_EXIT_HAS_GROUP_DEAD")
    if "anon_rss" in preflight.tracepoint_fields("oom", "mark_victim"):
        flags.append("-DSW_OOM_HAS_RSS")
    return flags


# The program that emits each kind of event.  The kernel skips a tracepoint's
# programs, counting a recursion miss, when it fires while a BPF tracing program
# runs on that CPU (or a task preempted inside a bpf() map call holds it):
# sched_process_free, run from an RCU callback on the way out of an interrupt,
# misses ~1 reap in 1,000 in a fork storm that way, and the reap never comes:
# SkippedReaps finds those pids in /proc.  Counted apart from `lost`: a resync per
# miss would cost more.  A missed sys_enter_execve only costs its exec's argv, read
# from /proc instead.
# Each program counts as the kind of its main record.  sched_process_free sends
# Briefs too, but a skipped run loses a reap either way: the held process it
# would have told whole stays in its slot, the sweep announces its fork and exit,
# and SkippedReaps its reap.  task_newtask's records are the held forks it flushes.
EMITTING_PROGRAMS = {
    b"tracepoint__task__task_newtask": Kind.FORK,
    b"tracepoint__sched__sched_process_exec": Kind.EXEC,
    b"tracepoint__sched__sched_process_exit": Kind.EXIT,
    b"tracepoint__sched__sched_process_free": Kind.REAP,
    b"tracepoint__oom__mark_victim": Kind.OOM,
}
_RECURSION_MISSES = re.compile(rb"^recursion_misses:\s*(\d+)$", re.MULTILINE)


def recursion_misses(prog_fd: int) -> int:
    """Runs of a loaded BPF program the kernel skipped (0 on kernels that do not say)."""
    with open(f"/proc/self/fdinfo/{prog_fd}", "rb") as fdinfo:
        match = _RECURSION_MISSES.search(fdinfo.read())
    return int(match.group(1)) if match else 0


def mapped_array(table, value_size: int) -> mmap.mmap:
    """A BPF_F_MMAPABLE array's values, mapped read-only in place (whole pages)."""
    size = -(-table.max_entries * value_size // PAGE_SIZE) * PAGE_SIZE
    return mmap.mmap(table.map_fd, size, mmap.MAP_SHARED, mmap.PROT_READ)


ParentOf = Callable[[int], "int | None"]
ArgvOf = Callable[[int], "tuple[str, ...] | None"]
EnvironOf = Callable[[int], "tuple[str, ...] | None"]  # procfs.engine_environ
ZombieStart = Callable[[int], "float | None"]  # a pid's start time while it is a zombie, else None

# A sweep copies and scans every held-fork slot: a fixed cost (on a slow host, as
# much as decoding a thousand records), so it runs at most every SWEEP_INTERVAL_S,
# and a held fork is announced HOLD_S to HOLD_S + SWEEP_INTERVAL_S after it forked.
SWEEP_INTERVAL_S = HOLD_S

MAX_KNOWN_PROCESSES = 65536
MAX_AWAITED_EXITS = 65536
RESYNC_INTERVAL_S = 1.0  # at most one /proc resync a second during a storm that keeps losing events


class KnownProcesses:
    """What user space knows of each live or zombie pid (parent, comm, cgroup),
    so the kernel side need not keep it: a hash-map update there costs more
    than the whole event.  Bounded; the oldest entries go first."""

    def __init__(self, parent_of: ParentOf | None, limit: int = MAX_KNOWN_PROCESSES) -> None:
        self._parent_of = parent_of or (lambda pid: None)
        self._entries: OrderedDict[int, tuple[int, str, int, float | None]] = OrderedDict()  # pid -> (ppid, comm, cgroup, fork time)
        self._limit = limit

    def parent(self, pid: int) -> int:
        entry = self._entries.get(pid)
        return entry[0] if entry else (self._parent_of(pid) or 0)

    def start(self, pid: int) -> float | None:
        """When the process holding `pid` forked, if its fork was seen."""
        entry = self._entries.get(pid)
        return entry[3] if entry else None

    def remember(self, pid: int, ppid: int, comm: str, cgroup_id: int, start: float | None) -> None:
        self._entries[pid] = (ppid, comm, cgroup_id, start)
        if len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def complete(self, event: Event, flags: int) -> Event:
        """`event` with the parent (and for reaps, comm and cgroup) filled in."""
        pid, kind = event.pid, type(event)
        if kind is Brief or kind is Fork:
            ppid = self.parent(event.ppid) if flags & layout.FLAG_CLONE_PARENT else event.ppid
            if kind is Fork:
                self.remember(pid, ppid, event.comm, event.cgroup_id, event.ts)
            else:
                self._entries.pop(pid, None)  # reaped already: nothing will ask about it
            return replaced(event, ppid=ppid) if ppid != event.ppid else event
        if kind is Reap:
            ppid, comm, cgroup_id, _start = self._entries.pop(pid, None) or (self._parent_of(pid) or 0, "", 0, None)
            return replaced(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        known = self._entries.get(pid)
        ppid = known[0] if known else self.parent(pid)
        if kind is Oom:
            # mark_victim runs in whichever task hit the limit: trust what we knew of the victim.
            comm = event.comm or (known[1] if known else "")
            cgroup_id = known[2] if known else event.cgroup_id
            return replaced(event, ppid=ppid, comm=comm, cgroup_id=cgroup_id)
        self.remember(pid, ppid, event.comm, event.cgroup_id, known[3] if known else None)
        return replaced(event, ppid=ppid)


class SkippedReaps:
    """Reaps the kernel side will not tell, settled from /proc: the probe's one
    reader of "is this exit reaped yet".  The kernel cannot tell a reap when it
    skips a run of sched_process_free (see EMITTING_PROGRAMS: about one in a
    thousand in a fork storm, and it cannot say whose run it skipped), nor once
    another exiting pid took the process's dead slot (pids share a slot modulo its
    size; that exit's record names the evicted pid).  Left alone, either reads as a
    parent that does not reap.

    So every exit told is awaited: HOLD_S after it (an evicted one at once),
    /proc is asked, and one that is no zombie any more, or whose pid a
    process started at another time holds, gets its Reap, well within the zombie
    rule's minimum age.  The start compared is the fork the probe saw; for a
    process it did not see fork (older than the session, or forgotten beyond
    MAX_KNOWN_PROCESSES) it is the start of the zombie the first look finds.  A
    later event of the pid ends the wait: its reap, or a new life of the pid,
    which a late Reap of the old one would otherwise end in the table.  A
    real zombie is looked up again when its age has doubled (at most
    LONGEST_WAIT_S), so a host full of them costs few reads; the looks wait in a
    heap by due time, so a poll with none due costs nothing.  Bounded: beyond the
    limit the oldest exits are given up, counted."""

    SHORTEST_WAIT_S = HOLD_S
    LONGEST_WAIT_S = 30.0

    def __init__(self, zombie_start: ZombieStart, limit: int = MAX_AWAITED_EXITS) -> None:
        self._zombie_start = zombie_start
        # pid -> (exited, start or None, next look), oldest exit first
        self._exits: OrderedDict[int, tuple[float, float | None, float]] = OrderedDict()
        self._looks: list[tuple[float, int]] = []  # heap of (next look, pid); stale once the entry says otherwise
        self._limit = limit
        self.settled = 0
        self.given_up = 0

    def exited(self, pid: int, ts: float, start: float | None) -> None:
        """`pid`, forked at `start` when known, exited at `ts`."""
        self._await(pid, ts, start, ts + HOLD_S)

    def evicted(self, pid: int, now: float) -> None:
        """`pid`'s dead slot was taken: the kernel will not tell its reap, so look at once."""
        exited, start, _look = self._exits.get(pid) or (now, None, now)  # its exit lost, or given up
        self._await(pid, exited, start, now)

    def told(self, pid: int) -> None:
        """Another event of `pid` came: its reap, or a new life of the pid."""
        self._exits.pop(pid, None)

    def _await(self, pid: int, exited: float, start: float | None, look: float) -> None:
        exits = self._exits
        exits[pid] = (exited, start, look)
        heapq.heappush(self._looks, (look, pid))
        if len(exits) > self._limit:
            exits.popitem(last=False)
            self.given_up += 1
        if len(self._looks) > 2 * len(exits) + 1024:  # stale looks: rebuilt, amortised over as many pushes
            self._looks = [(look, pid) for pid, (_exited, _start, look) in exits.items()]
            heapq.heapify(self._looks)

    def check(self, now: float) -> list[Reap]:
        """Reaps of the exits due a look that /proc shows gone or reused."""
        looks, exits = self._looks, self._exits
        reaps = []
        while looks and looks[0][0] <= now:
            look, pid = heapq.heappop(looks)
            entry = exits.get(pid)
            if entry is None or entry[2] != look:
                continue  # told, given up, or due at another time since
            exited, start, _look = entry
            found = self._zombie_start(pid)
            if found is None or (start is not None and abs(found - start) > SAME_START_S):
                del exits[pid]
                reaps.append(Reap(ts=now, pid=pid, ppid=0, comm="", cgroup_id=0))
                continue
            look = now + min(self.LONGEST_WAIT_S, max(self.SHORTEST_WAIT_S, now - exited))
            exits[pid] = (exited, found, look)
            heapq.heappush(looks, (look, pid))
        self.settled += len(reaps)
        return reaps


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
    `tally_briefs`, what would come as Briefs comes counted per spawner and
    second (the pids unsaid), as detection needs it and a fork storm affords."""

    def __init__(
        self,
        parent_of: ParentOf | None = None,
        argv_of: ArgvOf | None = None,
        redact: Redactor | None = None,
        zombie_start: ZombieStart | None = None,
        ring_buffer_kb: int | None = None,
        dead_slots: int | None = None,
        birth_slots: int | None = None,
        tally_briefs: bool = False,
        environ_of: EnvironOf | None = None,
    ) -> None:
        self._argv_of = argv_of
        self._environ_of = environ_of
        self._redact = redact if redact is not None else default_redactor()
        self._known = KnownProcesses(parent_of)
        self._skipped_reaps = SkippedReaps(zombie_start) if zombie_start else None
        self._table_flags = table_flags(ring_buffer_kb, dead_slots, birth_slots)
        self._held = HeldForks(birth_slots or layout.BIRTH_SLOTS)
        self._births: mmap.mmap | None = None
        self._tallies = Tallies() if tally_briefs else None
        self._tally_slots: mmap.mmap | None = None
        self._tally_words: memoryview | None = None
        self._lost_counts: mmap.mmap | None = None
        self._lost: memoryview | None = None  # the counts, each loaded as one word
        self._next_sweep_ns = 0
        self._bpf = None
        self._ring: RingReader | None = None
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
                cflags=feature_flags() + self._table_flags + (tally_flags() if self._tallies else [])
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
        if self._tallies is not None:
            tallies = self._bpf[b"sw_tallies"]
            self._tally_slots = mapped_array(tallies, layout.TALLY.size)
            self._tally_words = memoryview(self._tally_slots)[: tallies.max_entries * layout.TALLY.size].cast("I")
        self._lost_counts = mapped_array(self._bpf[b"sw_lost_stats"], 8)
        self._lost = memoryview(self._lost_counts).cast("Q")

    def close(self) -> None:
        if self._wakeups is not None:
            self._wakeups.close()
            self._wakeups = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._births is not None:
            self._births.close()
            self._births = None
        if self._tally_words is not None:
            self._tally_words.release()
            self._tally_slots.close()
            self._tally_words, self._tally_slots = None, None
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

    def _swept(self, births: bytes, cutoff_ns: int) -> list[Event]:
        return [self._complete(event, flags) for event, flags in self._held.sweep(births, cutoff_ns, self._birth)]

    def _tally(self, slot: int) -> bytes:
        start = slot * layout.TALLY.size
        return self._tally_slots[start : start + layout.TALLY.size]

    def _swept_tallies(self, cutoff_ns: int | None) -> list[Event]:
        if self._tallies is None:
            return []
        swept = self._tallies.sweep(self._tally_words, self._tally, cutoff_ns)
        return [self._complete(tally, flags) for tally, flags in swept]

    def decode_batch(self, records: list[bytes]) -> list[Event]:
        """Records -> completed events (less what the sweep already announced),
        then the reaps the kernel will not tell that /proc settled (SkippedReaps).
        Undecodable records are counted and skipped."""
        events: list[Event] = []
        append, decode, kernel_event, complete = events.append, layout.decode, self._held.kernel_event, self._complete
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        for raw in records:
            try:
                event, flags, aside = decode(raw)
            except layout.DecodeError:
                self._decode_errors += 1
                continue
            if not event.pid:  # a tally (`aside`, its occupancy): the children its sweep did not tell
                event = self._tallies.kernel_tally(event, aside) if self._tallies is not None else event
                if event is not None:
                    append(complete(event, flags))
                continue
            if isinstance(event, Exec):
                found = self._argv_of(event.pid) if flags & layout.FLAG_ARGV_MISSING and self._argv_of else None
                event = replaced(event, argv=self._redact(found or event.argv),
                                argv_truncated=event.argv_truncated and not found)
                if event.comm in ENGINE_CLIENTS and self._environ_of is not None:
                    environ = self._environ_of(event.pid)
                    event = replaced(event, environ=self._redact(environ) if environ else (),
                                     environ_unread=environ is None)
            for told in kernel_event(event):  # a loop, not a comprehension: no frame made per record
                append(complete(told, flags if told is event else 0))
            if aside and self._skipped_reaps is not None:  # an exit's evicted pid
                self._skipped_reaps.evicted(aside, now)
        return events + self._settled(now)

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
        # Briefs (a fork storm's hot path) are left out: a life of the pid told whole leaves
        # nothing in the table that a late Reap of its former holder could end.
        if self._skipped_reaps is not None and kind is not Brief:
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
        missed = dict.fromkeys((kind.value for kind in layout.TYPE_KINDS.values()), 0)
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
            "swept_forks": self._held.swept_forks,
            "swept_exits": self._held.swept_exits,
            "swept_tallies": self._tallies.swept if self._tallies else 0,
        }
