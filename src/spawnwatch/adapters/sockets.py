"""The sockets a process holds, from /proc: the one reader of /proc/<pid>/fd and of the
socket tables /proc/<pid>/net/{tcp,tcp6,unix}.

Read only for groups a rule already finds suspicious (see detect.serving), and bounded:
at most MAX_FDS descriptors of a process and MAX_TABLE_LINES lines of a table are looked
at (a host holding more sockets is seen in part: what is not seen counts as no evidence,
the side that still alerts).  The tables of one network namespace are read once per call.
Links are read (readlink), never followed."""

from __future__ import annotations

import itertools
import os
from typing import Iterable

from spawnwatch.detect.serving import HeldSockets

MAX_FDS = 1024  # descriptors of one process looked at
MAX_TABLE_LINES = 65536  # lines of one socket table read
_TCP_LISTEN = "0A"  # st of a listening socket in /proc/net/tcp
_UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in the Flags of /proc/net/unix: a listening socket


class _Tables:
    """The sockets of one network namespace by inode: listening ones, and the local
    address of each TCP one (as the table spells it, hex `address:port`)."""

    def __init__(self, pid: int) -> None:
        self.listening: set[int] = set()
        self.tcp: dict[int, str] = {}
        for name in ("tcp", "tcp6"):
            for fields in _rows(f"/proc/{pid}/net/{name}"):
                if len(fields) > 9 and fields[9].isdigit() and fields[9] != "0":  # 0: TIME_WAIT, no socket
                    self.tcp[int(fields[9])] = fields[1]
                    if fields[3] == _TCP_LISTEN:
                        self.listening.add(int(fields[9]))
        for fields in _rows(f"/proc/{pid}/net/unix"):
            try:
                if len(fields) > 6 and int(fields[3], 16) & _UNIX_ACCEPTCON:
                    self.listening.add(int(fields[6]))
            except ValueError:
                continue


def _rows(path: str) -> Iterable[list[str]]:
    try:
        with open(path) as table:
            lines = list(itertools.islice(table, 1, MAX_TABLE_LINES + 1))  # after the header
    except OSError:
        return []
    return [line.split() for line in lines]


def _address(local: str) -> tuple[str, int]:
    """(address in hex, port) of a socket table's `address:port`; a wildcard address is ""."""
    address, _, port = local.rpartition(":")
    try:
        return ("" if address.strip("0") == "" else address, int(port, 16))
    except ValueError:
        return (address, -1)


def _socket_inodes(pid: int) -> dict[int, int] | None:
    """fd -> socket inode of `pid`'s socket descriptors; None when unreadable."""
    found: dict[int, int] = {}
    try:
        with os.scandir(f"/proc/{pid}/fd") as entries:
            for entry in itertools.islice(entries, MAX_FDS):
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    continue
                if target.startswith("socket:[") and target.endswith("]") and entry.name.isdigit():
                    found[int(entry.name)] = int(target[8:-1])
    except (OSError, ValueError):
        return None
    return found


def held_sockets(pids: Iterable[int]) -> dict[int, HeldSockets]:
    """What each readable process of `pids` holds (gone or unreadable ones are left out)."""
    tables: dict[int, _Tables] = {}
    held: dict[int, HeldSockets] = {}
    for pid in pids:
        sockets = _socket_inodes(pid)
        if sockets is None:
            continue
        if not sockets:
            held[pid] = HeldSockets(frozenset(), frozenset(), frozenset())
            continue
        try:
            namespace = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        table = tables.get(namespace)
        if table is None:
            table = tables[namespace] = _Tables(pid)
        listening = frozenset(inode for inode in sockets.values() if inode in table.listening)
        held[pid] = HeldSockets(
            listening=listening,
            listening_on=frozenset(_address(table.tcp[i]) for i in listening if i in table.tcp),
            connected_on=frozenset(_address(table.tcp[i]) for i in sockets.values()
                                   if i in table.tcp and i not in listening),
        )
    return held
