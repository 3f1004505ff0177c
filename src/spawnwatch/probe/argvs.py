"""Each distinct command line decoded and redacted once: an exec storm, or a leak's
hundreds of identical children, sends the same argv bytes again and again.  And
the command lines the kernel side told whole, by their hash, for its tallies of
short exec'd lives that name them so (bpf/tallies.h)."""

from __future__ import annotations

from typing import Callable

from spawnwatch.bounded import RecentMap, RecentWeighedMap
from spawnwatch.events import ExecTally, Tally
from spawnwatch.probe.layout import Argv, ArgvHash, argv_words

# The most recently used command lines kept, and the bytes of argv they may hold in all:
# the usual ones (a few hundred bytes) fill the entries first; hostile ones (distinct,
# the kernel's whole 4 KiB, each of 1,023 three-byte words, a string each) hold 5.6 MiB
# (measured: 64 of them fit).
ARGVS_KEPT = 1024
ARGV_BYTES_KEPT = 256 * 1024


class RedactedArgvs:
    """An exec record's argv bytes -> its argv as text, redacted.  Keyed by the bytes
    themselves, compared whole on a hit (no hash stands for them): two command lines
    never share an entry, however chosen; argc, which cuts the words, is kept beside."""

    def __init__(self, redact: Callable[[Argv], Argv], limit: int = ARGVS_KEPT,
                 key_bytes: int = ARGV_BYTES_KEPT) -> None:
        """`redact`: an argv -> its redacted copy, not kept (this keeps it)."""
        self._redact = redact
        self._argvs: RecentWeighedMap[bytes, tuple[int, Argv]] = RecentWeighedMap(limit, key_bytes, len)

    @property
    def evicted(self) -> int:
        return self._argvs.evicted

    def __call__(self, blob: bytes, argc: int) -> Argv:
        kept = self._argvs.recent(blob)
        if kept is not None and kept[0] == argc:
            return kept[1]
        argv = self._redact(argv_words(blob, argc))
        self._argvs.put(blob, (argc, argv))
        return argv


# Command lines kept by hash: four times the kernel's SW_ARGV_TOLD_SLOTS, so one the
# kernel still counts by hash is nearly always here.  The kernel hashes command lines of
# 512 bytes at most (SW_HASHED_ARGV_BYTES), each kept as one string: 2.5 MiB at most,
# however chosen.
TOLD_ARGVS_KEPT = 4096
ARGV_TOLD_SLOTS = 1024  # SW_ARGV_TOLD_SLOTS


class ToldArgvs:
    """The command lines the kernel side told whole (an exec or exec brief carrying its
    hash), by hash, and the kernel's sw_argv_told array, which this writes in place:
    the kernel tallies a short exec'd life only when its command line's hash is there,
    the tally naming it by hash alone.  So the kernel names only hashes kept here (a
    hash let go is taken out of the array first); a tally that names one no longer
    kept all the same (let go while the tally was on its way) is counted in
    `unknown`, never told under another command line."""

    def __init__(self, kernel_told: memoryview | None, limit: int = TOLD_ARGVS_KEPT) -> None:
        """`kernel_told`: sw_argv_told as u64 words, writable (None: no tallies by hash)."""
        self._kernel = kernel_told
        # hash -> (argc, the argv's words joined by NULs, which no word holds; filename, truncated)
        self._told: RecentMap[ArgvHash, tuple[int, str, str, bool]] = RecentMap(limit)
        self.unknown = 0  # exec tallies whose command line was not kept: their children untold

    @property
    def evicted(self) -> int:
        return self._told.evicted

    def remember(self, argv_hash: ArgvHash, argv: Argv, filename: str, truncated: bool) -> None:
        """A record told `argv` whole with its hash: from now on the kernel tallies its short
        lives (the hash takes its slot in the kernel's array from any other)."""
        if not argv_hash or self._kernel is None:
            return
        if self._told.recent(argv_hash) is None:
            evicted = self._told.put(argv_hash, (len(argv), "\0".join(argv), filename, truncated))
            if evicted is not None and self._kernel[evicted % ARGV_TOLD_SLOTS] == evicted:
                self._kernel[evicted % ARGV_TOLD_SLOTS] = 0  # the kernel names it no more
        self._kernel[argv_hash % ARGV_TOLD_SLOTS] = argv_hash

    def named(self, tally: Tally, argv_hash: ArgvHash) -> Tally | ExecTally | None:
        """`tally` with the command line its children exec'd, `argv_hash`'s: an ExecTally;
        None (counted) when that command line is not kept; as it is when they exec'd none (0)."""
        if not argv_hash:
            return tally
        told = self._told.recent(argv_hash)
        if told is None:
            self.unknown += 1
            return None
        argc, joined, filename, truncated = told
        return ExecTally(tally.ts, 0, tally.ppid, tally.comm, tally.cgroup_id, tally.exited_at, tally.reaped_at,
                         tally.count, tuple(joined.split("\0")) if argc else (), filename, truncated)
