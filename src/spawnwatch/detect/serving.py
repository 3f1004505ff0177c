"""Children that serve connections: a managed pool, told from a leak by what its members hold.

A server's pool is made of processes that take connections.  Prefork and socket-passing
managers (circus, supervisord's fcgi-program) open a listening socket and pass it down:
each child holds a listening socket its spawner holds too.  Per-connection servers (xinetd,
Dovecot's master and its `imap` processes) give each child a connection accepted on a port
the spawner listens on: the child holds a TCP connection whose local port is one of the
spawner's listening ports.  A leaked stdio MCP server holds pipes (or a socketpair) on its
stdio, and at most outgoing connections from ports of its own: nothing here makes it look
like a pool.  An HTTP server that binds its own port is no evidence either: the socket or
the port must be the spawner's.

Pure: what processes hold comes through the injected `sockets_of(pids) -> {pid: HeldSockets}`
(adapters.sockets), called by the Detector only for groups a rule finds suspicious.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from spawnwatch.lineage import Process

SAMPLED_MEMBERS = 8  # members whose sockets are read per sample: the evidence needs a majority of them


Address = tuple[str, int]  # (address as /proc spells it, "" for a wildcard; port)


@dataclass(frozen=True, slots=True)
class HeldSockets:
    listening: frozenset[int]  # inodes of the listening sockets (TCP or unix) it holds
    listening_on: frozenset[Address]  # local addresses of its listening TCP sockets
    connected_on: frozenset[Address]  # local addresses of the TCP connections it holds


def accepted_on(connections: frozenset[Address], listeners: frozenset[Address]) -> bool:
    """A connection came in on one of `listeners`: same port, same address or a wildcard listener."""
    return any((address, port) in listeners or ("", port) in listeners for address, port in connections)


SocketsOf = Callable[[Iterable[int]], "dict[int, HeldSockets]"]


def sampled(members: Iterable[Process]) -> list[Process]:
    """The live members whose sockets are read: the newest, the ones that made the group grow."""
    live = sorted((p for p in members if p.alive), key=lambda p: (p.start, p.pid))
    return live[-SAMPLED_MEMBERS:]


def gone(members: Sequence[Process], held: dict[int, HeldSockets]) -> bool:
    """Most of `members` could not be read: gone from /proc while their exits were still on
    the way to the lineage (a reader a moment behind, as a pool's sessions all end at once).
    What is gone is no evidence either way: the last verdict stands until the next read."""
    return 2 * sum(1 for p in members if p.pid in held) <= len(members)


def serving(spawner: Process, members: Sequence[Process], held: dict[int, HeldSockets]) -> str | None:
    """Why `members` serve their spawner's connections, in words; None without the evidence
    (a majority of `members` each holding a listening socket `spawner` holds, or a connection
    accepted on a port `spawner` listens on)."""
    own = held.get(spawner.pid)
    if own is None or not own.listening or not members:
        return None
    passed = sum(1 for p in members if p.pid in held and held[p.pid].listening & own.listening)
    accepted = sum(1 for p in members if p.pid in held and accepted_on(held[p.pid].connected_on, own.listening_on))
    if 2 * passed > len(members):
        return (f"its children serve connections: {passed} of {len(members)} looked at hold a listening socket "
                f"{spawner.comm} opened and passed down (a prefork or socket-passing pool)")
    if 2 * accepted > len(members):
        return (f"its children serve connections: {accepted} of {len(members)} looked at hold a connection that came "
                f"in on a port {spawner.comm} listens on (a per-connection server)")
    return None
