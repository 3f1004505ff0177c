"""Decoding and completion of kernel records, without root or BPF."""

from __future__ import annotations

import pytest

from spawnwatch.events import Exec, Exit, Fork, Oom, Reap, from_record, to_record
from spawnwatch.probe import KnownProcesses, Probe, layout


def record(event, flags=0):
    return layout.encode(event, flags)


def test_every_kind_round_trips_through_the_kernel_layout():
    events = [
        Fork(1.5, 200, 100, "bash", 7),
        Exec(1.6, 200, 0, "true", 7, ("/bin/true", "a b", "ü"), "/bin/true", False),
        Exit(1.7, 200, 0, "true", 7),
        Reap(1.8, 200, 0, "", 0),
        Oom(1.9, 300, 0, "node", 9, rss_bytes=64 << 20),
    ]
    for event in events:
        decoded, flags = layout.decode(record(event))
        assert decoded == event
        assert flags == 0


def test_exec_truncation_flag_and_missing_argv():
    event = Exec(2.0, 5, 0, "x", 1, ("a",) * 3, "/x", True)
    decoded, flags = layout.decode(record(event))
    assert decoded.argv_truncated and flags & layout.FLAG_ARGV_TRUNCATED
    missing = layout.encode(Exec(2.0, 5, 0, "x", 1, (), "/x", False), layout.FLAG_ARGV_MISSING)
    decoded, flags = layout.decode(missing)
    assert decoded.argv == () and flags & layout.FLAG_ARGV_MISSING


def test_exec_argv_is_bounded_by_argv_size_not_record_padding():
    raw = record(Exec(2.0, 5, 0, "x", 1, ("one", "two"), "/x", False))
    decoded, _ = layout.decode(raw + b"garbage\0more\0")
    assert decoded.argv == ("one", "two")


@pytest.mark.parametrize("raw", [b"", b"\x01" * 10])
def test_short_records_are_rejected(raw):
    with pytest.raises(layout.DecodeError):
        layout.decode(raw)


def test_unknown_type_is_rejected():
    raw = bytearray(record(Exit(1.0, 1, 0, "x", 1)))
    raw[0] = 99
    with pytest.raises(layout.DecodeError):
        layout.decode(bytes(raw))


def test_known_processes_fill_parents_and_reaps():
    known = KnownProcesses(parent_of=lambda pid: {100: 1}.get(pid))
    fork = known.complete(Fork(1.0, 200, 100, "sh", 7), 0)
    assert fork.ppid == 100
    exec_ = known.complete(Exec(1.1, 200, 0, "true", 7, ("true",), "/bin/true"), 0)
    assert exec_.ppid == 100
    exit_ = known.complete(Exit(1.2, 200, 0, "true", 7), 0)
    assert exit_.ppid == 100
    reap = known.complete(Reap(1.3, 200, 0, "", 0), 0)
    assert (reap.ppid, reap.comm, reap.cgroup_id) == (100, "true", 7)


def test_clone_parent_takes_the_callers_parent():
    known = KnownProcesses(parent_of=lambda pid: {100: 1}.get(pid))
    # 100 was never seen forking: its parent comes from /proc (here: 1).
    fork = known.complete(Fork(1.0, 200, 100, "sh", 7), layout.FLAG_CLONE_PARENT)
    assert fork.ppid == 1
    known.complete(Fork(1.1, 300, 1, "init", 1), 0)
    # 300 is known to be a child of 1; its CLONE_PARENT child is 1's child too.
    assert known.complete(Fork(1.2, 301, 300, "x", 1), layout.FLAG_CLONE_PARENT).ppid == 1


def test_oom_keeps_the_victims_own_cgroup():
    known = KnownProcesses(parent_of=lambda pid: None)
    known.complete(Fork(1.0, 200, 100, "node", 42), 0)
    oom = known.complete(Oom(2.0, 200, 0, "", 1, rss_bytes=10), 0)
    assert (oom.cgroup_id, oom.comm, oom.ppid) == (42, "node", 100)


def test_known_processes_are_bounded():
    known = KnownProcesses(parent_of=lambda pid: None, limit=10)
    for pid in range(1, 100):
        known.complete(Fork(1.0, pid, 1, "x", 1), 0)
    assert known.complete(Exec(2.0, 5, 0, "x", 1), 0).ppid == 0  # evicted, /proc knows nothing
    assert known.complete(Exec(2.0, 99, 0, "x", 1), 0).ppid == 1


def test_probe_batch_decoding_counts_and_fills_missing_argv():
    probe = Probe(parent_of=lambda pid: 1, argv_of=lambda pid: ("node", "server.js"))
    raws = [
        record(Fork(1.0, 10, 1, "sh", 1)),
        layout.encode(Exec(1.1, 10, 0, "node", 1, (), "/usr/bin/node", True), layout.FLAG_ARGV_MISSING),
        b"junk",
    ]
    events = probe.decode_batch(raws)
    assert [e.kind.value for e in events] == ["fork", "exec"]
    assert events[1].argv == ("node", "server.js") and not events[1].argv_truncated
    assert probe.stats() == {"events": {"fork": 1, "exec": 1}, "lost": 1}


def test_json_contract_of_each_kind():
    exec_ = to_record(Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False))
    assert list(exec_) == ["kind", "ts", "pid", "ppid", "comm", "cgroup_id", "argv", "filename", "argv_truncated"]
    assert to_record(Oom(1.0, 2, 1, "x", 5, 4096))["rss_bytes"] == 4096
    assert list(to_record(Fork(1.0, 2, 1, "x", 5))) == ["kind", "ts", "pid", "ppid", "comm", "cgroup_id"]
    assert from_record(exec_) == Exec(1.0, 2, 1, "true", 5, ("/bin/true",), "/bin/true", False)
    assert from_record({"kind": "ready", "pid": 1}) is None
