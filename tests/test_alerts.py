"""Alert lifecycle and the alert record contract."""

from __future__ import annotations

from spawnwatch.alerts import AlertBook, AlertPolicy
from spawnwatch.text import human_bytes, human_duration
from spawnwatch.detect import CRITICAL, WARNING, Finding, Group, GroupKey, SpawnHistory
from spawnwatch.lineage import Process

RECORD_KEYS = [
    "kind", "state", "rule", "severity", "signature", "spawner", "container", "live", "spawned", "exited",
    "zombies", "orphans", "rss_bytes", "pids", "message", "containers", "pids_limit",
]


def group(live: int = 12, cgroup_id: int = 7) -> Group:
    spawner = Process(pid=200, start=2.0, ppid=100, comm="python3", argv=("python3", "sup.py"),
                      signature="python sup.py", cgroup_id=cgroup_id)
    key = GroupKey(cgroup_id, spawner.key, "npm exec magic")
    return Group(key=key, spawner=spawner, history=SpawnHistory(60), live=live, spawned=live)


def finding(g: Group, rule: str = "accumulating", pids=tuple(range(3000, 3030)), rss: int = 3 << 30,
            severity: str = WARNING) -> Finding:
    return Finding(rule=rule, group=g, pids=pids, orphans=0, rss_bytes=rss, uss_bytes=2 << 30, detail="12 live",
                   severity=severity)


def test_the_record_is_exactly_the_contract():
    book = AlertBook(resolve_container=lambda cgroup_id, pid: {"id": "abc123", "name": "metamcp", "image": "mcp:1"})
    [alert] = book.update([finding(group())], now=100.0)
    record = alert.to_record()
    assert list(record) == RECORD_KEYS
    assert record["kind"] == "alert" and record["state"] == "firing" and record["rule"] == "accumulating"
    assert record["spawner"] == {"pid": 200, "ppid": 100, "argv": ["python3", "sup.py"], "comm": "python3"}
    assert record["container"] == {"id": "abc123", "name": "metamcp", "image": "mcp:1"}
    assert record["pids"] == list(range(3000, 3020))  # at most 20
    assert record["rss_bytes"] == 3 << 30
    assert record["severity"] == "warning" and record["message"].startswith("warning: ")
    assert "npm exec magic" in record["message"] and "3.0 GiB RSS (2.0 GiB USS)" in record["message"]


def test_no_container_is_null():
    [alert] = AlertBook().update([finding(group())], now=1.0)
    assert alert.to_record()["container"] is None


def test_the_resolver_gets_the_groups_cgroup_and_spawner_pid():
    asked = []
    book = AlertBook(resolve_container=lambda cgroup_id, pid: asked.append((cgroup_id, pid)))
    book.update([finding(group(cgroup_id=42))], now=1.0)
    assert asked == [(42, 200)]


def test_firing_once_then_rate_limited_updates_only_on_change_then_resolved():
    book = AlertBook(AlertPolicy(update_every_s=30, resolve_after_s=5))
    g = group(live=9)
    assert [a.state for a in book.update([finding(g)], 100.0)] == ["firing"]
    g.live = 10
    assert book.update([finding(g)], 110.0) == []  # changed, but too soon
    assert [a.live for a in book.update([finding(g)], 131.0)] == [10]  # due, and changed
    assert book.update([finding(g)], 170.0) == []  # due, but unchanged
    assert book.update([], 171.0) == []  # clear for less than resolve_after_s
    assert book.update([finding(g)], 172.0) == []  # back: still the same alert
    g.live = 0
    assert book.update([], 175.0) == []
    [resolved] = book.update([], 178.0)
    assert resolved.state == "resolved" and resolved.live == 0 and resolved.message.startswith("resolved: ")
    assert book.update([], 300.0) == [] and not book.active


def test_a_rise_of_severity_is_sent_at_once_and_kept_until_resolved():
    book = AlertBook(AlertPolicy(update_every_s=30, resolve_after_s=5))
    g = group(live=12)
    assert [a.severity for a in book.update([finding(g)], 100.0)] == [WARNING]
    g.live = 60
    [risen] = book.update([finding(g, severity=CRITICAL)], 101.0)  # well before update_every_s
    assert risen.state == "firing" and risen.live == 60 and risen.message.startswith("critical: ")
    assert book.update([finding(g, severity=CRITICAL)], 102.0) == []
    g.live = 49
    assert book.update([finding(g, severity=WARNING)], 103.0) == []  # no fall back, no re-send
    assert book.active[("accumulating", g.key)].latest.severity == CRITICAL
    book.update([], 104.0)
    [resolved] = book.update([], 110.0)
    assert resolved.state == "resolved" and resolved.severity == CRITICAL


def test_a_container_named_late_is_sent_at_once():
    """The engine was slow or down at the first firing (the container shown by its short id):
    the alert is sent again as soon as the container has its name, counts unchanged."""
    by_id = {"id": "ab" * 32, "name": "abababababab", "image": None}
    named = {"id": "ab" * 32, "name": "metamcp", "image": "mcp:1"}
    answers = iter([by_id, by_id, named, named])
    book = AlertBook(resolve_container=lambda cgroup_id, pid: next(answers))
    g = group()
    [first] = book.update([finding(g)], now=100.0)
    assert book.update([finding(g)], now=102.0) == []
    [again] = book.update([finding(g)], now=104.0)
    assert (first.container, again.container) == (by_id, named) and again.counts() == first.counts()
    assert book.update([finding(g)], now=106.0) == []


def test_alerts_are_per_rule_and_group():
    book = AlertBook()
    a, b = group(cgroup_id=1), group(cgroup_id=2)
    out = book.update([finding(a), finding(a, "zombie"), finding(b)], 1.0)
    assert len(out) == 3 and len(book.active) == 3


def test_one_byte_formatter_serves_alerts_and_reports():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536 * 1024 * 1024) == "1.5 GiB"
    assert human_bytes(5 << 40) == "5.0 TiB"
    assert "; 5.0 TiB RSS" in AlertBook().update([finding(group(), rss=5 << 40)], 1.0)[0].message


def test_one_duration_formatter_cuts_to_the_largest_unit_reached_in_words_or_in_a_cell():
    spans = (0.023, 0.25, 1.5, 16.9, 59.99, 60, 570, 3599.9, 9000, 3 * 86400)
    assert [human_duration(s) for s in spans] == [
        "23 ms", "250 ms", "1.5 s", "16 s", "59 s", "1.0 min", "9.5 min", "59 min", "2.5 h", "3.0 d"]
    assert [human_duration(s, compact=True) for s in spans] == [
        "23ms", "250ms", "1.5s", "16s", "59s", "1.0m", "9.5m", "59m", "2.5h", "3.0d"]
    assert human_duration(-1.0) == human_duration(0.0) == "0.0 ms"  # a clock stepped back is no negative span
