"""The ring buffer read in place (probe/ring.py), against a ring laid out as the
kernel's in a memfd: no root needed.  The kernel side is played by this test: it
reserves, commits and discards records as bpf_ringbuf_* do, and a C watcher on
the other core reads the consumer position the way the kernel does, as one word."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
from pathlib import Path

import pytest

from spawnwatch.probe.ring import BUSY_BIT, DISCARD_BIT, RECORD_HEADER_SIZE, RingReader

PAGE = mmap.PAGESIZE
DATA_SIZE = 4 * PAGE
STOP_FLAG_OFFSET = 8  # a word of the consumer page the kernel leaves unused: the watcher's stop sign

# Spins on the consumer position (one aligned 8-byte load, as the kernel's
# smp_load_acquire) until the stop word is set; prints how often it went backwards.
WATCHER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	volatile uint64_t *page = mmap(NULL, sysconf(_SC_PAGESIZE), PROT_READ, MAP_SHARED, atoi(argv[1]), 0);
	uint64_t last = 0, now, backwards = 0, reads = 0;

	if (page == MAP_FAILED)
		return 1;
	while (!page[1]) {
		now = page[0];
		backwards += now < last;
		last = now;
		reads++;
	}
	printf("%llu %llu\n", (unsigned long long)backwards, (unsigned long long)reads);
	return 0;
}
"""


class KernelSide:
    """The producer half of a ring in a memfd, as kernel/bpf/ringbuf.c writes it."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("spawnwatch-ring-test")
        os.ftruncate(self.fd, 2 * PAGE + 2 * DATA_SIZE)
        self.memory = mmap.mmap(self.fd, 2 * PAGE + 2 * DATA_SIZE)
        self.words = memoryview(self.memory).cast("Q")

    @property
    def consumer(self) -> int:
        return self.words[0]

    @property
    def producer(self) -> int:
        return self.words[PAGE // 8]

    def _write(self, position: int, data: bytes) -> None:
        # The kernel maps the data pages twice in a row; here both copies are written.
        for index, byte in enumerate(data):
            at = (position + index) % DATA_SIZE
            self.memory[2 * PAGE + at] = self.memory[2 * PAGE + DATA_SIZE + at] = byte

    def reserve(self, payload: bytes) -> int:
        position = self.producer
        assert position + RECORD_HEADER_SIZE + len(payload) - self.consumer <= DATA_SIZE, "the ring is full"
        self._write(position, struct.pack("<II", len(payload) | BUSY_BIT, 0) + payload)
        self.words[PAGE // 8] = position + (RECORD_HEADER_SIZE + len(payload) + 7 & ~7)
        return position

    def commit(self, position: int, discard: bool = False) -> None:
        (length,) = struct.unpack_from("<I", self.memory, 2 * PAGE + position % DATA_SIZE)
        self._write(position, struct.pack("<I", length & ~BUSY_BIT | (DISCARD_BIT if discard else 0)))

    def close(self) -> None:
        self.words.release()
        self.memory.close()
        os.close(self.fd)


@pytest.fixture
def ring():
    kernel = KernelSide()
    reader = RingReader(kernel.fd, DATA_SIZE)
    yield kernel, reader
    reader.close()
    kernel.close()


def test_committed_records_come_in_order_without_the_discarded_and_up_to_the_first_in_flight(ring):
    kernel, reader = ring
    first = kernel.reserve(b"first")
    dropped = kernel.reserve(b"dropped!")
    in_flight = kernel.reserve(b"in flight")
    after = kernel.reserve(b"after")
    for position in (first, after):
        kernel.commit(position)
    kernel.commit(dropped, discard=True)
    assert reader.take() == [b"first"]
    assert kernel.consumer == in_flight  # the space up to the record in flight is handed back
    assert reader.take() == []
    kernel.commit(in_flight)
    assert reader.take() == [b"in flight", b"after"]
    assert kernel.consumer == kernel.producer


def test_a_record_across_the_end_of_the_data_reads_whole(ring):
    kernel, reader = ring
    payloads = [bytes([n % 251]) * (100 + n) for n in range(200)]  # 200 records wrap the 16 KiB ring
    taken = []
    for payload in payloads:
        kernel.commit(kernel.reserve(payload))
        taken += reader.take()
    assert taken == payloads
    assert kernel.consumer > 2 * DATA_SIZE


@pytest.fixture(scope="module")
def watcher(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("watcher") / "watcher.c"
    source.write_text(WATCHER)
    binary = source.with_suffix("")
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def test_the_kernel_never_sees_the_consumer_position_go_back(ring, watcher):
    """A position that went back for a moment (a store that zero-fills, then writes)
    made the kernel see the ring full: a reserve then in flight was dropped."""
    kernel, reader = ring
    watching = subprocess.Popen([str(watcher), str(kernel.fd)], pass_fds=(kernel.fd,), stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(50_000):
            kernel.commit(kernel.reserve(b"12345678"))
            assert reader.take() == [b"12345678"]
    finally:
        kernel.words[STOP_FLAG_OFFSET // 8] = 1
        backwards, reads = map(int, watching.communicate(timeout=30)[0].split())
    assert reads > 50_000  # it watched the whole time
    assert backwards == 0


def test_records_are_cut_from_a_copy_made_after_their_commits_were_seen(ring):
    """memcpy may load a span's tail before its head: in one copy, a record's header
    can read committed while its data is still what was there before.  (The copy
    that reads so is played here: the order of memcpy's loads cannot be forced.)"""
    kernel, reader = ring
    kernel.commit(kernel.reserve(b"old data"))
    reader.take()
    position = kernel.reserve(b"new data")
    kernel.commit(position)
    mapping = reader._data

    class FirstCopyTorn:
        copies = 0
        torn = False

        def __getitem__(self, span: slice) -> bytes:
            copy = mapping[span]
            self.copies += 1
            if self.copies > 1:
                return copy
            torn = copy.replace(b"new data", b"old data")
            self.torn = torn != copy
            return torn

    reader._data = copies = FirstCopyTorn()
    try:
        assert reader.take() == [b"new data"]
    finally:
        reader._data = mapping
    assert copies.torn and copies.copies == 2  # the record's data was stale in the first copy, and read again
