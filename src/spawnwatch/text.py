"""The one renderer of text for humans: what reaches a terminal goes through here.

Everything shown to a person may come from a hostile local user (argv, comm,
container names, engine answers), so every human view builds its lines from
these helpers: control characters are shown as escapes, never obeyed; long text
is cut with one mark; bytes and ages have one format each.
"""

from __future__ import annotations

import shlex
from typing import Sequence

ELLIPSIS = "…"


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (escape sequences, line
    breaks, bidi overrides, undecodable bytes) are shown as escapes, never obeyed."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, the cut marked with one ellipsis."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def command_line(argv: Sequence[str], comm: str = "") -> str:
    """argv as a shell would read it (`[comm]` for a kernel thread or an empty argv), safe for a terminal."""
    return printable(shlex.join(argv) if argv else f"[{comm}]")


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
