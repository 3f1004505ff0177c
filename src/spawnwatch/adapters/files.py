"""Files another user may have written, or swapped for something else: read with a cap."""

from __future__ import annotations


class TooLarge(ValueError):
    """The file holds more than the reader's cap."""


def read_capped(file: str | int, cap: int) -> bytes:
    """The whole of `file` (a path, or a descriptor it takes over and closes), never more than
    `cap` + 1 bytes read; OSError as opening or reading raises it, TooLarge past `cap`."""
    with open(file, "rb") as f:
        raw = f.read(cap + 1)
    if len(raw) > cap:
        raise TooLarge(f"larger than {cap} bytes")
    return raw
