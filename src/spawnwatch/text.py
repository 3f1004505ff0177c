"""The one renderer of text for humans: what reaches a terminal goes through here.

Everything shown to a person may come from a hostile local user (argv, comm,
container names, engine answers), so every human view builds its lines from
these helpers: control characters are shown as escapes, never obeyed; long text
is cut with one mark; bytes, ages and durations have one format each.
"""

from __future__ import annotations

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
    age = human_age(container["age_s"]) if container["age_s"] is not None else "-"
    memory = human_bytes(container["memory_bytes"]) if container["memory_bytes"] is not None else "-"
    return (f"{printable(container['id'][:SHORT_ID]):<12}  {printable(container['name'], 28):<28}"
            f" {printable(container['image'] or '-', 32):<32} {age:>5} {memory:>10}")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """The largest whole unit: 45s, 12m, 5h, 19d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


def human_span(seconds: float) -> str:
    """A span a rule measured, in a sentence: 45 s, 12 min, 2.5 h."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def human_duration(seconds: float) -> str:
    """A span measured to the millisecond (0.004s, 12.500s); from a minute on, as an age (3m)."""
    return f"{seconds:.3f}s" if seconds < 60 else human_age(seconds)
