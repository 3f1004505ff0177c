"""Redaction cost: worst-case µs per KiB of argv for hostile shapes, from 1 KiB to 1 MiB.

Any local user chooses the argv spawnwatch redacts (every exec, every /proc cmdline
of a snapshot).  Each shape below aims at one rule of the default [redact] table: a
run a name search could restart inside, a name or option on every other byte, a
scheme or a token prefix repeated, an unclosed quote.  Each is redacted once per
size by a fresh `Redactor` (no cache hit), timed in CPU seconds; the summary row is
the worst shape at each size.  Linear redaction keeps that row flat: the run exits 1
when the largest size costs more than FLAT_RATIO times the smallest per KiB.

    make bench                                # or: .venv/bin/python bench/redact.py --max-kib 64
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

from spawnwatch.config import load
from spawnwatch.redact import Redactor, RedactRules

SIZES_KIB = (1, 4, 16, 64, 256, 1024)
FLAT_RATIO = 2.5
MIN_SECONDS = 0.02  # at small sizes, repeated until the clock has this much to say

# Each shape as a function of its length in characters (ASCII: one byte each).
SHAPES: dict[str, Callable[[int], str]] = {
    "letters": lambda n: "a" * n,
    "dashed names": lambda n: ("a-" * n)[:n],
    "name on every colon": lambda n: ("b:" * n)[:n],
    "secret name on every =": lambda n: ("token=x " * n)[:n],
    "secret options": lambda n: ("--token x " * n)[:n],
    "url userinfo, no @": lambda n: "a://x:" + "b" * n,
    "url schemes": lambda n: ("a://x:" * n)[:n],
    "headers, no value": lambda n: ("Authorization: " * n)[:n],
    "bearer words": lambda n: ("Bearer " * n)[:n],
    "token prefixes": lambda n: ("ghp_eyJsk-xoxb-AKIA" * n)[:n],
    "jwt parts": lambda n: ("eyJ" * n)[:n],
    "capitals then =": lambda n: "A" * (n - 1) + "=",
    "unclosed quote": lambda n: 'token="' + "a" * n,
    "spaced words": lambda n: ("a " * n)[:n],
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-kib", type=int, default=SIZES_KIB[-1], help="largest argv measured, in KiB (1024)")
    options = parser.parse_args(argv)
    if options.max_kib < 1:
        parser.error("--max-kib must be above 0")
    return options


def us_per_kib(rules: RedactRules, word: str) -> float:
    """CPU µs per KiB to redact an argv of this one word, with nothing cached."""
    runs, spent = 0, 0.0
    while spent < MIN_SECONDS:
        redact = Redactor(rules)
        started = time.process_time()
        redact(("prog", word))
        spent += time.process_time() - started
        runs += 1
    return spent / runs * 1e6 / (len(word) / 1024)


def measure(sizes_kib: Sequence[int]) -> dict[str, list[float]]:
    rules = load().redact
    return {name: [us_per_kib(rules, shape(kib * 1024)) for kib in sizes_kib] for name, shape in SHAPES.items()}


def is_flat(worst: Sequence[float]) -> bool:
    return worst[-1] <= FLAT_RATIO * worst[0]


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    sizes = [kib for kib in SIZES_KIB if kib <= options.max_kib]
    table = measure(sizes)
    worst = [max(row[i] for row in table.values()) for i in range(len(sizes))]
    width = max(map(len, table)) + 2
    print("redaction, CPU µs per KiB of argv (default [redact] rules)")
    print("shape".ljust(width) + "".join(f"{kib:>9} KiB" for kib in sizes))
    for name, row in table.items():
        print(name.ljust(width) + "".join(f"{value:>13.1f}" for value in row))
    print("worst".ljust(width) + "".join(f"{value:>13.1f}" for value in worst))
    flat = is_flat(worst)
    print(f"flat: {'yes' if flat else 'NO'} (worst at {sizes[-1]} KiB / at {sizes[0]} KiB = "
          f"{worst[-1] / worst[0]:.2f}, at most {FLAT_RATIO})")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
