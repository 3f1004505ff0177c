"""Sinks against real receivers on 127.0.0.1: JSON lines, the human view, Prometheus, a webhook."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spawnwatch.sinks import Fanout
from spawnwatch.sinks.human import Human, render_alert
from spawnwatch.sinks.jsonl import JsonLines
from spawnwatch.sinks.prometheus import Metrics
from spawnwatch.sinks.webhook import Webhook, alertmanager_body


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


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


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


def test_prometheus_exposes_alerts_with_low_cardinality_labels():
    metrics = Metrics(port=0)
    try:
        metrics.send(alert())
        metrics.send({"kind": "stats", "events": {"fork": 7, "exec": 5}, "lost": 2})
        metrics.progress({"events": {"fork": 9}, "lost": 2, "lost_by_kind": {"fork": 2, "exit": 0},
                          "decode_errors": 4, "dead_slot_collisions": 5, "resyncs": 1},
                         {"processes": 120, "evicted": 3})
        text = scrape(metrics.port)
        labels = 'container="metamcp",rule="accumulating",signature="npm exec magic"'
        assert f"spawnwatch_alert_firing{{{labels}}} 1.0" in text
        assert f"spawnwatch_alert_live{{{labels}}} 20.0" in text
        assert 'spawnwatch_alerts_total{rule="accumulating"} 1.0' in text
        assert 'spawnwatch_events{kind="fork"} 9.0' in text and 'spawnwatch_events_lost{kind="fork"} 2.0' in text
        assert "spawnwatch_decode_errors 4.0" in text and "spawnwatch_dead_slot_collisions 5.0" in text
        assert "spawnwatch_resyncs 1.0" in text
        assert 'spawnwatch_table{counter="evicted"} 3.0' in text
        assert "4242" not in text and "supervisor.js" not in text and "5001" not in text
        metrics.send(alert(live=25))  # an update is not a new alert
        metrics.send(alert("resolved"))
        text = scrape(metrics.port)
        assert "spawnwatch_alert_firing{" not in text
        assert 'spawnwatch_alerts_total{rule="accumulating"} 1.0' in text
    finally:
        metrics.close()


def test_prometheus_listens_on_loopback_only():
    metrics = Metrics(port=0)
    try:
        assert metrics._server.server_address[0] == "127.0.0.1"
    finally:
        metrics.close()


class Receiver:
    """A real HTTP server on 127.0.0.1 collecting POSTed JSON bodies."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.bodies: list = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if delay:
                    receiver.release.wait(delay)
                receiver.bodies.append((self.path, body))
                self.send_response(status)
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
    assert receiver.bodies == [("/hook", alert())] and hook.sent == 1


def test_webhook_speaks_alertmanager_on_its_api_path(receiver):
    hook = Webhook(receiver.url("/api/v2/alerts"))
    hook.send(alert())
    hook.send(alert("resolved"))
    hook.close()
    [(_, firing), (_, resolved)] = receiver.bodies
    assert firing[0]["labels"]["alertname"] == "spawnwatch_accumulating"
    assert firing[0]["labels"]["container"] == "metamcp" and "startsAt" in firing[0]
    assert "endsAt" in resolved[0]
    assert set(firing[0]["labels"]) == set(alertmanager_body(alert())[0]["labels"])


def test_a_slow_receiver_never_blocks_the_sender_and_drops_are_counted():
    slow = Receiver(delay=30)
    try:
        hook = Webhook(slow.url(), queue_size=4, timeout=30)
        for i in range(50):
            hook.send(alert(live=i))  # returns at once: the queue is bounded, not the caller
        assert hook.dropped >= 50 - 4 - 1
        slow.release.set()
        hook.close()
        wait_until(lambda: hook.sent == 50 - hook.dropped)
    finally:
        slow.close()


def test_a_failing_receiver_is_reported_not_raised():
    errors = []
    refused = Receiver()
    url = refused.url()
    refused.close()  # nothing listens there any more
    hook = Webhook(url, on_error=errors.append, timeout=2)
    hook.send(alert())
    hook.close()
    assert hook.failed == 1 and errors and url in errors[0]
