"""A child of tests/secret_leak.py: an MCP server stand-in whose argv carries
secrets; it holds CHILD_MB MiB and sleeps."""

from __future__ import annotations

import time

CHILD_MB = 40  # enough for the group to rank among the host's largest in `report`

if __name__ == "__main__":
    held = bytearray(CHILD_MB * 1024 * 1024)
    held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page: resident, not just reserved
    while True:
        time.sleep(3600)
