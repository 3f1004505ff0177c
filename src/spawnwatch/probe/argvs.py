"""Each distinct command line decoded and redacted once: an exec storm, or a leak's
hundreds of identical children, sends the same argv bytes again and again."""

from __future__ import annotations

from typing import Callable

from spawnwatch.bounded import RecentWeighedMap
from spawnwatch.probe.layout import Argv, argv_words

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
