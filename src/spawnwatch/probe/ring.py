"""The BPF ring buffer read in place: its pages mapped into this process and
every committed record taken in one pass, with no Python callback per record
(bcc's ring_buffer_consume calls one through ctypes for each, ~3 us here).

The kernel's layout (kernel/bpf/ringbuf.c, as libbpf's ringbuf.c maps it): page 0
holds the consumer position, the one page user space may write; page 1 the
producer position; then the data area, mapped twice in a row so that a record
wrapping past its end reads as one contiguous span.  Each record opens with an
8-byte header: its length, whose top bits say not yet committed (BUSY) or
dropped by its producer (DISCARD), and a page offset only the kernel uses;
records are 8-byte aligned.

Positions are read and written with plain loads and stores: enough on x86-64,
whose stores are ordered; the kernel's own barriers sit on the producer side.
"""

from __future__ import annotations

import mmap
import select
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
RECORD_HEADER_SIZE = 8
_LENGTH = struct.Struct("<I")
_POSITION = struct.Struct("<Q")  # an unsigned long on the 64-bit hosts BPF ring buffers run on


class RingReader:
    """The consumer side of one BPF ring buffer map (`map_fd`, `data_size` bytes of data)."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        if data_size < mmap.PAGESIZE or data_size & (data_size - 1):
            raise ValueError(f"a ring buffer holds a power of two of pages, not {data_size} bytes")
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._data_start = page
        self._mask = data_size - 1
        # Edge-triggered: records are submitted without a wakeup (bpf/spawnwatch.h), so
        # a wait lasts its timeout unless a record asks to wake us (an OOM kill), even
        # while older records sit in the ring.
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s, less if a record was submitted with a wakeup."""
        self._epoll.poll(timeout)

    def take(self) -> list[bytes]:
        """Every committed record from the consumer position on, in order (discarded
        ones skipped), and the ring's space handed back to the kernel."""
        (consumer,) = _POSITION.unpack_from(self._consumer)
        (producer,) = _POSITION.unpack_from(self._producer)
        if consumer == producer:
            return []
        start = self._data_start + (consumer & self._mask)
        span = self._producer[start : start + producer - consumer]
        records = []
        append = records.append
        unpack_length = _LENGTH.unpack_from
        offset, end = 0, len(span)
        while offset < end:
            (length,) = unpack_length(span, offset)
            if length & BUSY_BIT:
                break  # reserved, not yet committed: everything after it waits too
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                append(span[offset + RECORD_HEADER_SIZE : offset + RECORD_HEADER_SIZE + size])
            offset += (size + RECORD_HEADER_SIZE + 7) & ~7
        _POSITION.pack_into(self._consumer, 0, consumer + offset)
        return records

    def close(self) -> None:
        self._epoll.close()
        self._producer.close()
        self._consumer.close()
