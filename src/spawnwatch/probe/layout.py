"""Decoding of the kernel's events: the Python mirror of bpf/spawnwatch.h.

Pure (no bcc), so it is unit-tested without root; a root test checks that the
sizes here equal the sizes bcc computes for the C structs.
"""

from __future__ import annotations

import struct

from spawnwatch.events import Event, Exec, Exit, Fork, Kind, Oom, Reap

COMM_LEN = 16
FILENAME_LEN = 256
ARGV_BYTES = 4096

FLAG_ARGV_TRUNCATED = 1 << 0
FLAG_ARGV_MISSING = 1 << 1
FLAG_CLONE_PARENT = 1 << 2

# struct sw_header: type, size, pid, ts_ns, cgroup_id, ppid, flags, comm
HEADER = struct.Struct("<HHIQQII16s")
EXEC_TAIL = struct.Struct(f"<II{FILENAME_LEN}s")  # argc, argv_size, filename
OOM_TAIL = struct.Struct("<QQQQ")  # anon, file, shmem rss and total_vm, in KiB

STRUCT_SIZES = {
    "sw_header": HEADER.size,
    "sw_exec_event": HEADER.size + EXEC_TAIL.size + ARGV_BYTES,
    "sw_oom_event": HEADER.size + OOM_TAIL.size,
}

TYPE_KINDS = {1: Kind.FORK, 2: Kind.EXEC, 3: Kind.EXIT, 4: Kind.REAP, 5: Kind.OOM}


class DecodeError(ValueError):
    pass


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode(raw: bytes) -> tuple[Event, int]:
    """One ring-buffer record -> (event, flags), as the kernel sent it: the probe
    completes what the kernel leaves to user space (parents, a reaped pid's comm)."""
    if len(raw) < HEADER.size:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than the header")
    type_, size, pid, ts_ns, cgroup_id, ppid, flags, comm = HEADER.unpack_from(raw)
    if size > len(raw):
        raise DecodeError(f"record claims {size} bytes but has {len(raw)}")
    kind = TYPE_KINDS.get(type_)
    common = dict(ts=ts_ns / 1e9, pid=pid, ppid=ppid, comm=_text(comm), cgroup_id=cgroup_id)
    if kind is Kind.FORK:
        return Fork(**common), flags
    if kind is Kind.EXIT:
        return Exit(**common), flags
    if kind is Kind.REAP:
        return Reap(**common), flags
    if kind is Kind.EXEC:
        argc, argv_size, filename = EXEC_TAIL.unpack_from(raw, HEADER.size)
        start = HEADER.size + EXEC_TAIL.size
        blob = raw[start : start + min(argv_size, size - start)]
        argv = tuple(a.decode("utf-8", "replace") for a in blob.split(b"\0")[:argc])
        return (
            Exec(
                **common,
                argv=argv,
                filename=_text(filename),
                argv_truncated=bool(flags & FLAG_ARGV_TRUNCATED),
            ),
            flags,
        )
    if kind is Kind.OOM:
        anon, file, shmem, _total_vm = OOM_TAIL.unpack_from(raw, HEADER.size)
        return Oom(**common, rss_bytes=(anon + file + shmem) * 1024), flags
    raise DecodeError(f"unknown event type {type_}")


def encode(event: Event, flags: int = 0) -> bytes:
    """The record the kernel would send for `event`: lets tests feed the decoder
    (and the probe's batch path) without BPF."""
    type_ = {v: k for k, v in TYPE_KINDS.items()}[event.kind]
    comm = event.comm.encode()[: COMM_LEN - 1]

    def header(size: int, extra_flags: int = 0) -> bytes:
        return HEADER.pack(
            type_, size, event.pid, round(event.ts * 1e9), event.cgroup_id, event.ppid, flags | extra_flags, comm
        )

    if isinstance(event, Exec):
        blob = b"".join(a.encode() + b"\0" for a in event.argv)[:ARGV_BYTES]
        size = HEADER.size + EXEC_TAIL.size + len(blob)
        truncated = FLAG_ARGV_TRUNCATED if event.argv_truncated else 0
        return (
            header(size, truncated)
            + EXEC_TAIL.pack(len(event.argv), len(blob), event.filename.encode()[: FILENAME_LEN - 1])
            + blob
        )
    if isinstance(event, Oom):
        return header(STRUCT_SIZES["sw_oom_event"]) + OOM_TAIL.pack(event.rss_bytes // 1024, 0, 0, 0)
    return header(HEADER.size)
