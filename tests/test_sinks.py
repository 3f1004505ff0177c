"""Sinks against real receivers on 127.0.0.1: JSON lines, the human view, Prometheus, a webhook."""

from __future__ import annotations

import io
import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_for
from spawnwatch.sinks import Fanout
from spawnwatch.sinks.human import Human, render_alert
from spawnwatch.sinks.jsonl import JsonLines
from spawnwatch.sinks.prometheus import Metrics, MetricsAddressError, parse_address
from spawnwatch.sinks.alertmanager import Alertmanager
from spawnwatch.sinks.webhook import Webhook


def alert(state: str = "firing", **changes) -> dict:
    record = {
        "kind": "alert", "state": state, "rule": "accumulating", "signature": "npm exec magic",
        "spawner": {"pid": 4242, "ppid": 1, "argv": ["node", "supervisor.js"], "comm": "node"},
        "container": {"id": "0123456789ab", "name": "metamcp", "image": "metamcp:latest"},
        "live": 20, "spawned": 20, "exited": 0, "zombies": 0, "orphans": 0, "rss_bytes": 1536 << 20,
        "pids": [5001, 5002], "message": "node (pid 4242) keeps spawning `npm exec magic`: 20 live",
    }
    record.update(changes)
    return record


def test_json_lines_one_compact_object_per_line():
    out = io.StringIO()
    sink = Fanout([JsonLines(out)])
    sink.send(alert())
    sink.send({"kind": "stats", "events": {}, "lost": 0})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["alert", "stats"]
    assert json.loads(lines[0]) == alert()


def test_the_human_view_shows_the_records_fields():
    text = render_alert(alert())
    for expected in ("FIRING", "accumulating", "npm exec magic", "pid 4242", "node supervisor.js",
                     "metamcp", "live 20", "1.5 GiB", "5001 5002", "keeps spawning"):
        assert expected in text
    out = io.StringIO()
    Human(out).send({"kind": "stats", "events": {}, "lost": 0})
    assert out.getvalue() == ""  # the session's own lines go to stderr


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def served(metrics: Metrics) -> dict[str, Metric]:
    """The metric families a scrape of `metrics` serves, parsed by prometheus_client, by name."""
    return {family.name: family for family in text_string_to_metric_families(scrape(metrics.port))}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of the samples of the family `name` a scrape serves."""
    family = served(metrics).get(name)
    return [sample.labels for sample in family.samples] if family is not None else []


def test_prometheus_exposes_alerts_with_low_cardinality_labels():
    metrics = Metrics()
    try:
        metrics.send(alert())
        labels = {"container": "metamcp", "namespace": "", "pod": "", "rule": "accumulating", "signature": "npm exec magic"}
        assert value(metrics, "spawnwatch_alert_firing", **labels) == 1
        assert value(metrics, "spawnwatch_alert_live", **labels) == 20
        assert value(metrics, "spawnwatch_alerts_total", rule="accumulating") == 1
        assert series(metrics, "spawnwatch_alert_firing") == [labels]  # no pid, argv or child in a label
        # In no label of any series (a number may hold the digits: process_start_time_seconds 1.79662424283e+09).
        served_labels = [value for family in served(metrics).values() for sample in family.samples
                         for value in sample.labels.values()]
        assert not [v for v in served_labels if "4242" in v or "supervisor.js" in v or "5001" in v]
        metrics.send(alert(live=25))  # an update is not a new alert
        metrics.send(alert("resolved"))
        assert series(metrics, "spawnwatch_alert_firing") == []
        assert value(metrics, "spawnwatch_alerts_total", rule="accumulating") == 1
    finally:
        metrics.close()


def test_two_spawners_of_one_signature_are_one_series_until_both_resolve():
    metrics = Metrics()
    try:
        other = {"pid": 777, "ppid": 1, "argv": ["node", "other.js"], "comm": "node"}
        metrics.send(alert(live=20))
        metrics.send(alert(live=5, spawner=other))
        labels = {"container": "metamcp", "namespace": "", "pod": "", "rule": "accumulating", "signature": "npm exec magic"}
        assert series(metrics, "spawnwatch_alert_live") == [labels]
        assert value(metrics, "spawnwatch_alert_live", **labels) == 25
        assert value(metrics, "spawnwatch_alerts_total", rule="accumulating") == 2
        metrics.send(alert("resolved", spawner=other))
        assert value(metrics, "spawnwatch_alert_firing", **labels) == 1, "the first spawner still leaks"
        assert value(metrics, "spawnwatch_alert_live", **labels) == 20
        metrics.send(alert("resolved"))
        assert series(metrics, "spawnwatch_alert_firing") == []
    finally:
        metrics.close()


def test_prometheus_counters_are_the_sessions_totals_and_sizes_are_gauges():
    metrics = Metrics()
    try:
        metrics.send(
            {"kind": "progress", "events": {"fork": 9, "exec": 5}, "lost": 3, "lost_by_kind": {"fork": 2, "exit": 1},
             "decode_errors": 4, "notifications": {"sent": 6, "failed": 1, "dropped": 0},
             "table": {"processes": 120, "groups": 7, "evicted": 3, "missed_exits": 1}},
        )
        for name, labels, expected in (
            ("spawnwatch_events_total", {"kind": "fork"}, 9), ("spawnwatch_events_total", {"kind": "exec"}, 5),
            ("spawnwatch_events_lost_total", {"kind": "fork"}, 2), ("spawnwatch_events_lost_total", {"kind": "exit"}, 1),
            ("spawnwatch_decode_errors_total", {}, 4),
            ("spawnwatch_notifications_total", {"result": "sent"}, 6),
            ("spawnwatch_notifications_total", {"result": "failed"}, 1),
            ("spawnwatch_processes", {}, 120), ("spawnwatch_groups", {}, 7),
            ("spawnwatch_table_events_total", {"event": "evicted"}, 3),
            ("spawnwatch_table_events_total", {"event": "missed_exits"}, 1),
        ):
            assert value(metrics, name, **labels) == expected, (name, labels)
        families = served(metrics)
        assert families["spawnwatch_events"].type == "counter" and families["spawnwatch_processes"].type == "gauge"
        assert "spawnwatch_build_info" in families and "process_cpu_seconds" in families
        assert set(families["spawnwatch_build_info"].samples[0].labels) == {"version", "python"}
        metrics.send({"kind": "progress", "events": {"fork": 12}, "lost": 0, "table": {"processes": 80}})
        assert value(metrics, "spawnwatch_events_total", kind="fork") == 12
        assert value(metrics, "spawnwatch_processes") == 80
    finally:
        metrics.close()


def test_prometheus_counts_each_bounded_tables_evictions():
    metrics = Metrics()
    try:
        metrics.send({"kind": "progress", "events": {}, "lost": 0, "table": {},
                      "evicted_by_table": {"known_processes": 3, "awaited_exits": 0}})
        assert value(metrics, "spawnwatch_evicted_total", table="known_processes") == 3
        assert value(metrics, "spawnwatch_evicted_total", table="awaited_exits") == 0
        assert served(metrics)["spawnwatch_evicted"].type == "counter"
    finally:
        metrics.close()


def test_prometheus_shows_the_pids_limits_by_container_or_host_cgroup():
    metrics = Metrics()
    try:
        metrics.send({"kind": "progress", "events": {}, "lost": 0, "table": {}, "pids_limits": [
            {"container": "metamcp", "cgroup": "", "current": 52, "limit": 64, "refused": 0},
            {"container": "", "cgroup": "/system.slice/mcp.service", "current": 4915, "limit": 4915, "refused": 37},
        ]})
        box = {"cgroup": "", "container": "metamcp", "namespace": "", "pod": ""}
        assert value(metrics, "spawnwatch_pids_current", **box) == 52
        assert value(metrics, "spawnwatch_pids_limit", **box) == 64
        assert value(metrics, "spawnwatch_pids_refused_forks_total", **box) == 0
        assert value(metrics, "spawnwatch_pids_refused_forks_total", cgroup="/system.slice/mcp.service", container="",
                     namespace="", pod="") == 37
        families = served(metrics)
        assert families["spawnwatch_pids_refused_forks"].type == "counter"
        assert families["spawnwatch_pids_current"].type == "gauge"
        metrics.send({"kind": "progress", "events": {}, "lost": 0, "table": {}, "pids_limits": []})
        assert series(metrics, "spawnwatch_pids_current") == [], "a limit gone from the sweep is gone here"
    finally:
        metrics.close()


def reachable(port: int, host: str) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_prometheus_listens_on_loopback_unless_told_otherwise():
    # 127.0.0.2 is this host too, but not the address 127.0.0.1: a server bound to the latter refuses it.
    metrics = Metrics()
    try:
        assert reachable(metrics.port, "127.0.0.1") and not reachable(metrics.port, "127.0.0.2")
    finally:
        metrics.close()
    everywhere = Metrics(parse_address(":0"))
    try:
        assert reachable(everywhere.port, "127.0.0.2")
        assert "spawnwatch_build_info" in served(everywhere)  # reached through 127.0.0.1 too
    finally:
        everywhere.close()


@pytest.mark.parametrize("text, expected", [
    ("9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("10.0.0.5:9464", ("10.0.0.5", 9464)),
    ("[::1]:9464", ("::1", 9464)), ("localhost:0", ("localhost", 0)),
])
def test_metrics_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["::1:9464", "host:port", "host:70000", ""])
def test_bad_metrics_addresses_say_why(text):
    with pytest.raises(MetricsAddressError):
        parse_address(text)


class Receiver:
    """A real HTTP server on 127.0.0.1 collecting POSTed JSON bodies."""

    def __init__(self, delay: float = 0.0, statuses: tuple[int, ...] = ()) -> None:
        """`statuses`: the answers to the first requests, in order; 200 after them."""
        self.bodies: list = []
        self.client_ports: list[int] = []  # of every request: one port means one reused connection
        self.release = threading.Event()
        receiver = self
        answers = list(statuses)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Alertmanager

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if delay:
                    receiver.release.wait(delay)
                receiver.client_ports.append(self.client_address[1])
                status = answers.pop(0) if answers else 200
                if status == 200:
                    receiver.bodies.append((self.path, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_webhook_posts_the_alert_record(receiver):
    hook = Webhook(receiver.url())
    hook.send(alert())
    hook.send({"kind": "stats", "events": {}, "lost": 0})  # not an alert: not posted
    hook.close()
    assert receiver.bodies == [("/hook", alert())] and hook.counts() == {"sent": 1, "failed": 0, "dropped": 0}


def test_a_slow_receiver_never_blocks_the_sender_and_drops_are_counted():
    slow = Receiver(delay=30)
    try:
        hook = Webhook(slow.url(), queue_size=4, timeout=30)
        for i in range(50):
            hook.send(alert(live=i))  # returns at once: the queue is bounded, not the caller
        assert hook.counts()["dropped"] >= 50 - 4 - 1
        slow.release.set()
        hook.close()
        wait_for(lambda: hook.counts()["sent"] == 50 - hook.counts()["dropped"], "every alert kept sent")
    finally:
        slow.close()


def test_a_failing_receiver_is_reported_not_raised():
    errors = []
    refused = Receiver()
    url = refused.url()
    refused.close()  # nothing listens there any more
    hook = Webhook(url, on_error=errors.append, timeout=2, retries=1)
    hook.send(alert())
    hook.close()
    assert hook.counts()["failed"] == 1 and errors and url in errors[0]


def test_refusals_and_server_errors_are_retried_on_one_connection():
    flaky = Receiver(statuses=(503, 500))
    try:
        hook = Webhook(flaky.url(), retries=3)
        hook.send(alert())
        hook.send(alert(live=21))
        hook.close()
        assert [body["live"] for _, body in flaky.bodies] == [20, 21]
        assert hook.counts() == {"sent": 2, "failed": 0, "dropped": 0}
        assert len(flaky.client_ports) == 4 and len(set(flaky.client_ports)) == 1
    finally:
        flaky.close()


def am_alerts(receiver: Receiver) -> list[dict]:
    return [a for path, body in receiver.bodies for a in body if path == "/api/v2/alerts"]


def test_alertmanager_gets_every_active_alert_again_on_a_timer(receiver):
    am = Alertmanager(receiver.url("/api/v2/alerts"), generator_url="http://node-1:9464/metrics",
                      resend_every_s=0.2, host="node-1")
    am.send(alert())
    # The first send, then re-sends without a new record.
    wait_for(lambda: len(am_alerts(receiver)) >= 4, "three re-sends")
    am.send(alert("resolved"))
    # Another alert, still firing: the timer it is re-sent by runs on while the resolved one must stay quiet.
    am.send(alert(signature="npm exec other"))
    wait_for(lambda: sum(a["labels"]["signature"] == "npm exec other" for a in am_alerts(receiver)) >= 4,
             "three re-sends of the alert still firing")
    sent = am_alerts(receiver)
    am.close()
    magic = [a for a in sent if a["labels"]["signature"] == "npm exec magic"]
    firing, resolved = magic[:-1], magic[-1]
    assert firing[0]["labels"] == {
        "alertname": "spawnwatch_accumulating", "rule": "accumulating", "signature": "npm exec magic",
        "container": "metamcp", "host": "node-1", "severity": "warning", "spawner_comm": "node",
        "spawner_pid": "4242",
    }
    assert all(a["labels"] == firing[0]["labels"] for a in magic)
    assert all(a["generatorURL"] == "http://node-1:9464/metrics" for a in sent)
    assert len({a["startsAt"] for a in magic}) == 1, "startsAt is when it first fired, every time"
    ends = [a["endsAt"] for a in firing]
    assert ends == sorted(ends) and len(set(ends)) == len(ends), "each re-send moves endsAt ahead"
    assert all(a["endsAt"] > a["startsAt"] for a in firing)
    assert resolved["endsAt"] < firing[-1]["endsAt"], "resolved: endsAt is now, not ahead"
    assert firing[-1]["annotations"]["summary"] == alert()["message"]
    after = sent[sent.index(resolved) + 1:]
    assert len(after) >= 4 and all(a["labels"]["signature"] == "npm exec other" for a in after), (
        "a resolved alert is not re-sent")


def test_a_rising_severity_ends_the_alert_of_the_old_severity(receiver):
    am = Alertmanager(receiver.url("/api/v2/alerts"), generator_url="urn:spawnwatch:node-1", resend_every_s=60)
    am.send(alert(severity="warning"))
    am.send(alert(severity="critical", live=60))
    am.close()
    first, (ended_old, critical) = am_alerts(receiver)[:1], am_alerts(receiver)[1:]
    assert first[0]["labels"]["severity"] == ended_old["labels"]["severity"] == "warning"
    assert ended_old["endsAt"] < critical["endsAt"], "the old label set ends now, the new one is ahead"
    assert critical["startsAt"] == first[0]["startsAt"], "the leak started when it first fired"
    assert critical["labels"]["severity"] == "critical"
