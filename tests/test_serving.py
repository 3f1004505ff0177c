"""Children that serve connections their spawner passes them are a pool, not a leak
(detect.serving): the sockets each process holds come from a fake `sockets_of`, the
real reader (adapters.sockets) is checked on real sockets of this process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from spawnwatch.adapters.sockets import held_sockets
from spawnwatch.detect import HeldSockets
from workloads import SUPERVISOR_PID, leak, run

LEAK_START = 10.0
PASSED_DOWN = 4242  # inode of the listening socket the supervisor opened
PORT = ("0100007F", 143)  # where it listens: 127.0.0.1:143
NOTHING = frozenset()
LISTENER = HeldSockets(frozenset({PASSED_DOWN}), frozenset({PORT}), NOTHING)


def holding(spawner: HeldSockets, member: HeldSockets):
    """`sockets_of` of a host where the supervisor holds `spawner` and every other process `member`."""
    asked: list[list[int]] = []

    def sockets_of(pids):
        pids = list(pids)
        asked.append(pids)
        return {pid: spawner if pid == SUPERVISOR_PID else member for pid in pids}

    return sockets_of, asked


def accumulating(alerts):
    return [a for _, a in alerts if a.rule == "accumulating" and a.state == "firing"]


def test_children_holding_a_listening_socket_their_spawner_passed_down_are_a_pool():
    sockets_of, asked = holding(LISTENER, HeldSockets(frozenset({PASSED_DOWN}), frozenset({PORT}), NOTHING))
    alerts = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40, sockets_of=sockets_of)
    assert accumulating(alerts) == []
    assert asked and all(len(pids) <= 1 + 8 for pids in asked)  # the spawner and a bounded sample


@pytest.mark.parametrize("listening_on", [PORT, ("", 143)], ids=["same-address", "wildcard-listener"])
def test_children_holding_a_connection_that_came_in_on_their_spawners_port_are_a_per_connection_pool(listening_on):
    spawner = HeldSockets(frozenset({PASSED_DOWN}), frozenset({listening_on}), NOTHING)
    sockets_of, _ = holding(spawner, HeldSockets(NOTHING, NOTHING, frozenset({PORT})))
    alerts = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40, sockets_of=sockets_of)
    assert accumulating(alerts) == []


def test_a_leak_of_stdio_servers_still_fires_and_says_it_looked():
    # A stdio server holds pipes, and a connection out to an API from a port of its own.
    sockets_of, asked = holding(LISTENER, HeldSockets(NOTHING, NOTHING, frozenset({("0100007F", 51234)})))
    alerts = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40, sockets_of=sockets_of)
    [first, *_] = accumulating(alerts)
    assert "none serves connections of its spawner" in first.message
    assert asked  # read only once the rest of the rule held: the group was suspicious


def vanishing(member: HeldSockets, reads_before: int):
    """`sockets_of` of a host where the supervisor listens and every other process holds
    `member` for `reads_before` reads, then is gone from /proc (its exit not heard yet)."""
    reads = 0

    def sockets_of(pids):
        nonlocal reads
        reads += 1
        return {pid: LISTENER if pid == SUPERVISOR_PID else member for pid in pids
                if pid == SUPERVISOR_PID or reads <= reads_before}

    return sockets_of


def test_a_pool_whose_children_vanish_before_their_exits_are_heard_stays_spared():
    # Its sessions all ended at once: /proc no longer has them, the lineage still counts them.
    serving = HeldSockets(NOTHING, NOTHING, frozenset({PORT}))
    alerts = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40,
                 sockets_of=vanishing(serving, reads_before=1))
    assert accumulating(alerts) == []


def test_a_leak_whose_children_vanish_fires_as_if_they_were_still_read():
    # As its replay, which reads no sockets, does: what is gone is no evidence of a pool.
    stdio = HeldSockets(NOTHING, NOTHING, NOTHING)
    still_read = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40,
                     sockets_of=holding(LISTENER, stdio)[0])
    vanished = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40,
                   sockets_of=vanishing(stdio, reads_before=1))
    assert accumulating(vanished) and vanished == still_read


def test_children_that_listen_on_sockets_of_their_own_are_no_pool():
    # A leaked HTTP server binds its own port: the socket is not its spawner's.
    sockets_of, _ = holding(LISTENER, HeldSockets(frozenset({PASSED_DOWN + 1}), frozenset({("0100007F", 8080)}),
                                                  NOTHING))
    alerts = run(leak("accumulate", count=15, start=LEAK_START), until=LEAK_START + 40, sockets_of=sockets_of)
    assert accumulating(alerts)


def test_the_reader_sees_a_passed_down_listening_socket_and_a_connection_that_came_in_on_its_port():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.buffer.read(1)"],
                                     stdin=accepted.fileno(), pass_fds=[listener.fileno()])
            try:
                held = held_sockets([os.getpid(), child.pid])
            finally:
                client.sendall(b"x")
                child.wait(timeout=30)
    ours, theirs = held[os.getpid()], held[child.pid]
    assert ours.listening and ours.listening <= theirs.listening
    assert ours.listening_on and theirs.connected_on & ours.listening_on


def test_the_reader_sees_pipes_as_no_socket():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        held = held_sockets([child.pid])
    finally:
        child.communicate(b"")
    assert held[child.pid] == HeldSockets(NOTHING, NOTHING, NOTHING)
