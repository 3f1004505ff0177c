"""What the pipeline keeps of command lines a hostile local user chooses: every one
distinct, the kernel's whole 4 KiB of distinct two-letter words (a string object each,
twenty times the bytes they came in).  Its caches of what an argv signs to and asks a
container engine for are bounded by what their keys weigh, not by their number alone,
and each eviction is counted in the session's stats (`evicted_by_table`)."""

from __future__ import annotations

import gc
import random
import string
import tracemalloc
from typing import Iterator

from spawnwatch.config import load
from spawnwatch.pipeline import Pipeline
from streams import Stream

DISTINCT_ARGVS = 600
WORDS = 1365  # two letters and a NUL each: the kernel's 4 KiB
HELD_AT_MOST = 16 << 20  # the caches' budgets with room to spare; each argv holds ~80 KiB


def hostile_argvs(count: int) -> Iterator[tuple[str, ...]]:
    rng = random.Random(24)
    for _ in range(count):
        yield ("x", *("".join(rng.choices(string.ascii_letters, k=2)) for _ in range(WORDS)))


def test_distinct_hostile_command_lines_hold_a_bounded_memory_once_their_processes_are_gone() -> None:
    pipeline, stream = Pipeline(load()), Stream()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for argv in hostile_argvs(DISTINCT_ARGVS):  # made as they come, so their words are traced
            stream.end(stream.spawn(1, *argv))
            for event in stream.events:
                pipeline.feed(event)
            stream.events.clear()
        pipeline.advance(stream.ts + 3600)  # the reaped processes expire from the table
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pipeline.lineage) == 0
    assert held < HELD_AT_MOST, f"{held / 2**20:.0f} MiB held for {DISTINCT_ARGVS} gone processes"
    evicted = pipeline.evicted_by_table()
    assert evicted["signed_argvs"] > 0 and evicted["container_client_argvs"] > 0, evicted
