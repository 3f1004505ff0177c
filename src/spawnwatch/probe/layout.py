"""Decoding of the kernel's events: the Python mirror of bpf/spawnwatch.h.

Pure (no bcc), so it is unit-tested without root; a root test checks that the
offset and size of every field here equal what bcc computes for the C structs.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Callable, NamedTuple

from spawnwatch.events import Brief, Event, Exec, ExecBrief, Exit, Fork, Kind, Oom, Reap, Tally

COMM_LEN = 16
FILENAME_LEN = 256
ARGV_BYTES = 4096

FLAG_ARGV_TRUNCATED = 1 << 0
FLAG_ARGV_MISSING = 1 << 1
FLAG_CLONE_PARENT = 1 << 2

BIRTH_SLOTS = 8192  # SW_BIRTH_SLOTS's default
BIRTH_EMPTY, BIRTH_ALIVE, BIRTH_EXITED, BIRTH_EXECED, BIRTH_EXECED_EXITED = 0, 1, 2, 3, 4

# Each struct as (field, struct format) in declaration order; all are packed
# by design (the C side pads explicitly), so offsets are running sums.
HEADER_FIELDS = (
    ("type", "H"), ("size", "H"), ("pid", "I"), ("ts_ns", "Q"), ("cgroup_id", "Q"),
    ("ppid", "I"), ("flags", "I"), ("comm", f"{COMM_LEN}s"),
)
EXEC_TAIL_FIELDS = (
    ("argc", "I"), ("argv_size", "I"), ("forked_ns", "Q"), ("exited_ns", "Q"), ("reaped_ns", "Q"), ("argv_hash", "Q"),
    ("holder", "I"), ("reserved", "I"), ("filename", f"{FILENAME_LEN}s"),
)
EXIT_TAIL_FIELDS = (("evicted_pid", "I"), ("reserved", "I"))
BRIEF_TAIL_FIELDS = (("exited_ns", "Q"), ("reaped_ns", "Q"))
# A held fork in the sw_births array (bpf/births.h), read by the sweep.
BIRTH_FIELDS = (
    ("pid", "I"), ("state", "I"), ("forked_ns", "Q"), ("exited_ns", "Q"), ("cgroup_id", "Q"),
    ("ppid", "I"), ("flags", "I"), ("comm", f"{COMM_LEN}s"), ("exec_slot", "I"), ("reserved", "I"),
)
TALLY_TAIL_FIELDS = (
    ("slot", "I"), ("gen", "I"), ("count", "I"), ("reserved", "I"), ("last_exited_ns", "Q"), ("last_reaped_ns", "Q"),
    ("argv_hash", "Q"),
)
# A spawner's tally in the sw_tallies array (bpf/tallies.h), read by the sweep.
TALLY_FIELDS = (
    ("seq", "I"), ("ppid", "I"), ("second", "I"), ("flags", "I"), ("gen", "I"), ("count", "I"),
    ("first_forked_ns", "Q"), ("last_exited_ns", "Q"), ("last_reaped_ns", "Q"), ("cgroup_id", "Q"),
    ("comm", f"{COMM_LEN}s"), ("argv_hash", "Q"),
)
OOM_TAIL_FIELDS = (("anon_rss_kb", "Q"), ("file_rss_kb", "Q"), ("shmem_rss_kb", "Q"), ("total_vm_kb", "Q"))


def _packed(fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, code in fields))


HEADER = _packed(HEADER_FIELDS)
EXEC_TAIL = _packed(EXEC_TAIL_FIELDS)
EXIT_TAIL = _packed(EXIT_TAIL_FIELDS)
OOM_TAIL = _packed(OOM_TAIL_FIELDS)
BRIEF_TAIL = _packed(BRIEF_TAIL_FIELDS)
BIRTH = _packed(BIRTH_FIELDS)
TALLY_TAIL = _packed(TALLY_TAIL_FIELDS)
TALLY = _packed(TALLY_FIELDS)


def _offsets(fields: tuple[tuple[str, str], ...], start: int = 0) -> dict[str, tuple[int, int]]:
    layout = {}
    for name, code in fields:
        size = struct.calcsize("<" + code)
        layout[name] = (start, size)
        start += size
    return layout


# struct -> field -> (offset, size), as the C compiler must lay them out.
FIELDS = {
    "sw_header": _offsets(HEADER_FIELDS),
    "sw_exec_event": {
        "hdr": (0, HEADER.size),
        **_offsets(EXEC_TAIL_FIELDS, HEADER.size),
        "argv": (HEADER.size + EXEC_TAIL.size, ARGV_BYTES),
    },
    "sw_exit_event": {"hdr": (0, HEADER.size), **_offsets(EXIT_TAIL_FIELDS, HEADER.size)},
    "sw_oom_event": {"hdr": (0, HEADER.size), **_offsets(OOM_TAIL_FIELDS, HEADER.size)},
    "sw_brief_event": {"hdr": (0, HEADER.size), **_offsets(BRIEF_TAIL_FIELDS, HEADER.size)},
    "sw_tally_event": {"hdr": (0, HEADER.size), **_offsets(TALLY_TAIL_FIELDS, HEADER.size)},
    "sw_birth": _offsets(BIRTH_FIELDS),
    "sw_tally": _offsets(TALLY_FIELDS),
}
STRUCT_SIZES = {name: max(offset + size for offset, size in fields.values()) for name, fields in FIELDS.items()}
EXEC_SLOT_SIZE = STRUCT_SIZES["sw_exec_event"]  # a slot of sw_exec_slots
_HOLDER = struct.Struct("<I")
_HOLDER_OFFSET = FIELDS["sw_exec_event"]["holder"][0]


def exec_slot_holder(slots: "bytes | mmap.mmap", start: int) -> int:
    """The pid whose held exec the exec slot at `start` keeps (0: none), read in place."""
    return _HOLDER.unpack_from(slots, start + _HOLDER_OFFSET)[0]

FORK_TYPE, EXEC_TYPE, EXIT_TYPE, REAP_TYPE, OOM_TYPE, BRIEF_TYPE, TALLY_TYPE, EXEC_BRIEF_TYPE = range(1, 9)  # enum sw_event_type
TYPE_KINDS = {FORK_TYPE: Kind.FORK, EXEC_TYPE: Kind.EXEC, EXIT_TYPE: Kind.EXIT, REAP_TYPE: Kind.REAP,
              OOM_TYPE: Kind.OOM, BRIEF_TYPE: Kind.BRIEF, TALLY_TYPE: Kind.TALLY, EXEC_BRIEF_TYPE: Kind.EXEC_BRIEF}
TYPE_NAMES = {number: kind.value for number, kind in TYPE_KINDS.items()}
# The fewest bytes a record of each type declares (an exec's argv may be empty).
MIN_SIZES = {
    FORK_TYPE: HEADER.size,
    EXEC_TYPE: HEADER.size + EXEC_TAIL.size,
    EXIT_TYPE: STRUCT_SIZES["sw_exit_event"],
    REAP_TYPE: HEADER.size,
    OOM_TYPE: STRUCT_SIZES["sw_oom_event"],
    BRIEF_TYPE: STRUCT_SIZES["sw_brief_event"],
    TALLY_TYPE: STRUCT_SIZES["sw_tally_event"],
    EXEC_BRIEF_TYPE: HEADER.size + EXEC_TAIL.size,
}


class DecodeError(ValueError):
    pass


class Occupancy(NamedTuple):
    """Which use of a tally slot a tally record tells: the slot, and how many times
    a spawner's second took it (see tallies.py); and the hash of the command line its
    children exec'd (ArgvHash), 0 when they did not."""

    slot: int
    gen: int
    argv_hash: int = 0


EvictedPid = int  # of an exit: the zombie whose reap the kernel will not tell (its dead slot was taken); 0: none
# Of an exec or exec brief: the kernel's hash of its command line, by which a tally of
# short exec'd lives names it (bpf/tallies.h); 0 when the kernel held no hash.
ArgvHash = int

# A decoded record: the event, the record's flags, and what only the probe reads: an
# exit's EvictedPid, a tally's Occupancy, an exec's ArgvHash, 0 for the others.  A plain
# tuple: a storm decodes millions, and a named one costs as much again as the unpacking.
Decoded = tuple[Event, int, "EvictedPid | Occupancy | ArgvHash"]


def text(raw: bytes) -> str:
    """A NUL-padded C string."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# The comm of nearly every record is one of a few: decoded once each; so is an exec's filename.
_comm_text = lru_cache(maxsize=1024)(text)
_filename_text = lru_cache(maxsize=1024)(text)

Argv = tuple[str, ...]
ArgvOfBlob = Callable[[bytes, int], Argv]  # an exec record's argv bytes and argc -> its argv


def argv_words(blob: bytes, argc: int) -> Argv:
    """The first `argc` NUL-ended words of an exec record's argv bytes, as text: decoded whole, then
    cut, as each word alone decodes the same (a NUL is only ever the byte 0 in UTF-8, and ends any
    sequence it breaks, replaced as at a word's end)."""
    return tuple(blob.decode("utf-8", "replace").split("\0", argc)[:argc])


def decode(raw: bytes, argv_of_blob: ArgvOfBlob = argv_words) -> Decoded:
    """One ring-buffer record, as the kernel sent it: the probe completes what
    the kernel leaves to user space (parents, a reaped pid's comm).  An exec's
    argv is what `argv_of_blob` makes of its bytes (the probe's: decoded and
    redacted once per distinct command line).  Anything malformed raises
    DecodeError, nothing else."""
    if len(raw) < HEADER.size:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than the header")
    type_, size, pid, ts_ns, cgroup_id, ppid, flags, comm = HEADER.unpack_from(raw)
    least = MIN_SIZES.get(type_)
    if least is None:
        raise DecodeError(f"unknown event type {type_}")
    if size > len(raw):
        raise DecodeError(f"{TYPE_NAMES[type_]} record claims {size} bytes but has {len(raw)}")
    if size < least:
        raise DecodeError(f"{TYPE_NAMES[type_]} record claims {size} bytes, fewer than its layout's {least}")
    # The commonest type first, every field by position: a storm decodes millions.
    ts, name = ts_ns / 1e9, _comm_text(comm)
    if type_ == BRIEF_TYPE:
        exited_ns, reaped_ns = BRIEF_TAIL.unpack_from(raw, HEADER.size)
        return Brief(ts, pid, ppid, name, cgroup_id, exited_ns / 1e9, reaped_ns / 1e9), flags, 0
    if type_ == TALLY_TYPE:
        slot, gen, count, _reserved, exited_ns, reaped_ns, argv_hash = TALLY_TAIL.unpack_from(raw, HEADER.size)
        return (Tally(ts, pid, ppid, name, cgroup_id, exited_ns / 1e9, reaped_ns / 1e9, count), flags,
                Occupancy(slot, gen, argv_hash))
    if type_ == FORK_TYPE:
        return Fork(ts, pid, ppid, name, cgroup_id), flags, 0
    if type_ == EXIT_TYPE:
        evicted_pid, _reserved = EXIT_TAIL.unpack_from(raw, HEADER.size)
        return Exit(ts, pid, ppid, name, cgroup_id), flags, evicted_pid
    if type_ == REAP_TYPE:
        return Reap(ts, pid, ppid, name, cgroup_id), flags, 0
    if type_ == EXEC_TYPE or type_ == EXEC_BRIEF_TYPE:
        argc, argv_size, forked_ns, exited_ns, reaped_ns, argv_hash, _holder, _reserved, filename = (
            EXEC_TAIL.unpack_from(raw, HEADER.size))
        start = HEADER.size + EXEC_TAIL.size
        argv = argv_of_blob(raw[start : start + min(argv_size, size - start)], argc)
        if type_ == EXEC_TYPE:
            return Exec(ts, pid, ppid, name, cgroup_id, argv, _filename_text(filename),
                        bool(flags & FLAG_ARGV_TRUNCATED)), flags, argv_hash
        return ExecBrief(forked_ns / 1e9, pid, ppid, name, cgroup_id, exited_ns / 1e9, reaped_ns / 1e9, ts, argv,
                         _filename_text(filename), bool(flags & FLAG_ARGV_TRUNCATED)), flags, argv_hash
    anon, file, shmem, _total_vm = OOM_TAIL.unpack_from(raw, HEADER.size)
    return Oom(ts, pid, ppid, name, cgroup_id, (anon + file + shmem) * 1024), flags, 0

