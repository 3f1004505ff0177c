"""Children that serve connections: a managed pool, told from a leak by what its members hold.

A server's pool is made of processes that take connections: prefork and socket-passing
managers (circus, supervisord's fcgi-program, Dovecot's master) open a listening socket and
pass it down, so each child holds a listening socket its spawner holds too; inetd-style
spawners (xinetd) accept a connection and start a child with it as its stdin.  A leaked
stdio MCP server holds pipes (or a socketpair) on its stdio and no socket of its spawner's:
nothing here can make it look like a pool.  An HTTP server that binds its own port is no
evidence either: the socket must come from the spawner.

Pure: what processes hold comes through the injected `sockets_of(pids) -> {pid: HeldSockets}`
(adapters.sockets), called by the Detector only for groups a rule finds suspicious.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from spawnwatch.lineage import Process

SAMPLED_MEMBERS = 8  # members whose sockets are read per sample: the evidence needs a majority of them


@dataclass(frozen=True, slots=True)
class HeldSockets:
    listening: frozenset[int]  # inodes of the listening sockets (TCP or unix) it holds
    stdin_network: bool  # its stdin is a TCP connection (not a listening socket)


SocketsOf = Callable[[Iterable[int]], "dict[int, HeldSockets]"]


def sampled(members: Iterable[Process]) -> list[Process]:
    """The live members whose sockets are read: the newest, the ones that made the group grow."""
    live = sorted((p for p in members if p.alive), key=lambda p: (p.start, p.pid))
    return live[-SAMPLED_MEMBERS:]


def serving(spawner: Process, members: Sequence[Process], held: dict[int, HeldSockets]) -> str | None:
    """Why `members` serve their spawner's connections, in words; None without the evidence
    (a majority of `members` each holding a listening socket `spawner` holds, or a network
    connection as stdin while `spawner` listens)."""
    own = held.get(spawner.pid)
    if own is None or not own.listening or not members:
        return None
    passed = sum(1 for p in members if p.pid in held and held[p.pid].listening & own.listening)
    accepted = sum(1 for p in members if p.pid in held and held[p.pid].stdin_network)
    if 2 * passed > len(members):
        return (f"its children serve connections: {passed} of {len(members)} looked at hold a listening socket "
                f"{spawner.comm} opened and passed down (a prefork or socket-passing pool)")
    if 2 * accepted > len(members):
        return (f"its children serve connections: {accepted} of {len(members)} looked at have as stdin a network "
                f"connection {spawner.comm} accepted on its listening socket (an inetd-style server)")
    return None
