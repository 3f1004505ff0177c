"""A BPF ring buffer read in place: its pages mapped into this process, and every
committed record taken in one pass, with no Python call per record (bcc's
ring_buffer_consume makes one through ctypes for each, about 1 us here).

The kernel's layout (kernel/bpf/ringbuf.c; libbpf's ringbuf.c maps it the same
way): page 0 holds the consumer position, the one page user space may write;
page 1 the producer position; then the data area, mapped twice in a row, so
that a record wrapping past its end reads as one span.  Each record opens with
an 8-byte header: its length, whose top bits say not committed yet (BUSY) or
dropped by its producer (DISCARD), then a page offset only the kernel uses.
Records are 8-byte aligned.

Both positions are read and written as one 8-byte word.  The kernel reads the
consumer position without a lock, on every reserve, to see how much room is
left: `struct.pack_into` zero-fills its target before writing the bytes, so for
a moment the position read 0, and a reserve then in flight found the ring full
and dropped its record (about one a 20 s fork storm).

The kernel orders its stores (data, then the commit of the header) with
barriers; this side has none to issue, and leans on x86-64 keeping loads in
order, memcpy's own order aside (see take).  On an arm64 host a record could be
read before its data landed; spawnwatch is tested on x86-64 only.
"""

from __future__ import annotations

import mmap
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
RECORD_HEADER_SIZE = 8
_LENGTH = struct.Struct("<I")


class RingReader:
    """The consumer side of the ring buffer map `map_fd`, of `data_size` bytes of data."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        if data_size < page or data_size & (data_size - 1):
            raise ValueError(f"a ring buffer holds a power of two of pages, not {data_size} bytes")
        self._consumer_page = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # A memoryview of "Q" items loads and stores each as one aligned word.
        self._consumer = memoryview(self._consumer_page).cast("Q")
        self._producer = memoryview(self._data).cast("Q")
        self._data_start = page
        self._mask = data_size - 1

    def take(self) -> list[bytes]:
        """Every record committed from the consumer position on, in order (discarded
        ones skipped); their space is handed back to the kernel."""
        consumer = self._consumer[0]
        producer = self._producer[0]
        if producer == consumer:
            return []
        start = self._data_start + (consumer & self._mask)
        span = self._data[start : start + producer - consumer]
        records, committed = _committed_records(span)
        if not committed:
            return []
        # A copy does not read its bytes in address order (memcpy may load a span's
        # tail first), so a record's data can predate its header's commit in the same
        # copy.  A second copy, made once those commits were seen, holds their final
        # bytes: when it differs, the records are cut from it.
        again = self._data[start : start + committed]
        if again != span[:committed]:
            records, _ = _committed_records(again)
        self._consumer[0] = consumer + committed
        return records

    @property
    def position(self) -> int:
        """Bytes taken since the ring was made, headers and padding included (libbpf's
        ring__consumer_pos): it wrapped once every data_size."""
        return self._consumer[0]

    def close(self) -> None:
        self._consumer.release()
        self._producer.release()
        self._data.close()
        self._consumer_page.close()


def _committed_records(span: bytes) -> tuple[list[bytes], int]:
    """The records of `span` up to the first not yet committed, and their length."""
    records = []
    append, unpack_length = records.append, _LENGTH.unpack_from
    offset, end = 0, len(span)
    while offset < end:
        (length,) = unpack_length(span, offset)
        if length & BUSY_BIT:
            break  # reserved, not committed yet: the records after it wait too
        size = length & ~DISCARD_BIT
        if length == size:
            append(span[offset + RECORD_HEADER_SIZE : offset + RECORD_HEADER_SIZE + size])
        offset += (size + RECORD_HEADER_SIZE + 7) & ~7
    return records, offset
