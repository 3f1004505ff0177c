"""The one renderer of text for humans: what reaches a terminal goes through here.

Everything shown to a person may come from a hostile local user (argv, comm,
container names, engine answers), so every human view builds its lines from
these helpers: control characters are shown as escapes, never obeyed; long text
is cut with one mark; bytes and durations have one format each.
"""

from __future__ import annotations

import math
import shlex
from typing import Any, Mapping, Sequence

ELLIPSIS = "…"
SHORT_ID = 12  # a container id as `docker ps` shows it


def printable(text: str, width: int | None = None) -> str:
    """`text` safe for a terminal: control characters (escape sequences, line
    breaks, bidi overrides, undecodable bytes) are shown as escapes, never obeyed.
    With `width`, in at most that many characters, at a cost bounded by `width`."""
    if width is not None:
        # Escaping never shortens: the first width + 1 characters decide whether it is cut.
        return cut(printable(text[: width + 1]), width)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, the cut marked with one ellipsis."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def command_line(argv: Sequence[str], comm: str = "", width: int | None = None) -> str:
    """argv as a shell would read it (`[comm]` for a kernel thread or an empty argv), safe for a terminal."""
    return printable(shlex.join(argv) if argv else f"[{comm}]", width)


def container_line(container: Mapping[str, Any]) -> str:
    """A container's row as the leaked-container lists show it (id, name, image, age, memory),
    from its record (id, name, image, age_s, memory_bytes)."""
    age = human_duration(container["age_s"], compact=True) if container["age_s"] is not None else "-"
    memory = human_bytes(container["memory_bytes"]) if container["memory_bytes"] is not None else "-"
    return (f"{printable(container['id'][:SHORT_ID]):<12}  {printable(container['name'], 28):<28}"
            f" {printable(container['image'] or '-', 32):<32} {age:>5} {memory:>10}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# A span's units, largest first: (in a sentence, in a table's cell, seconds).
DURATION_UNITS = (("d", "d", 86400), ("h", "h", 3600), ("min", "m", 60), ("s", "s", 1), ("ms", "ms", 0.001))


def human_duration(seconds: float, compact: bool = False) -> str:
    """A span in the largest unit it reaches, one decimal below 10 of it: 23 ms, 1.5 s, 17 s,
    9.5 min, 2.5 h, 3.0 d; `compact` for a table's cell (23ms, 16m, 2.5h).  Cut, not rounded:
    the span shown is not longer than the one measured (59.9 s is 59 s, never 60 s)."""
    seconds = max(seconds, 0.0)
    sentence, cell, size = next((unit for unit in DURATION_UNITS if seconds >= unit[2]), DURATION_UNITS[-1])
    # Counted in tenths as integers: a quotient's float error (0.023 / 0.001 is 22.999...) is no part of the span.
    tenths = math.floor(round(seconds / size * 10, 6))
    value = f"{tenths // 10}.{tenths % 10}" if tenths < 100 else f"{tenths // 10}"
    return f"{value}{cell}" if compact else f"{value} {sentence}"
