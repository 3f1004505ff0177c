"""Background work against hostile or broken peers, on real sockets and real threads: HTTP
receivers that stall, drip or flood (stub servers on 127.0.0.1), a Docker API that answers
malformed JSON (a stub on a unix socket: a real dockerd cannot be made to), and the one
supervisor that restarts, logs once and counts a thread that fails."""

from __future__ import annotations

import json
import logging
import queue
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from conftest import wait_for
from spawnwatch.adapters.engine import DockerEngine
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.cli import main
from spawnwatch.runner import faults, stats_record
from spawnwatch.sinks.alertmanager import Alertmanager
from spawnwatch.sinks.http import Delivery
from spawnwatch.sinks.prometheus import Metrics
from spawnwatch.sinks.webhook import Webhook
from spawnwatch.supervise import internal_errors
from tests.test_sinks import alert


class Stub:
    """A real HTTP server on 127.0.0.1 whose handler is the test's: `answer(handler, n)` for the
    n-th request (from 0), after the request body is read; the bodies are kept in order."""

    def __init__(self, answer) -> None:
        self.bodies: list = []
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                n, stub.requests = stub.requests, stub.requests + 1
                answer(self, n, body, stub)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def empty(handler: BaseHTTPRequestHandler, status: int, **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": "0", **headers}.items():
        handler.send_header(name, value)
    handler.end_headers()


@pytest.fixture
def stubs():
    made: list[Stub] = []
    yield lambda answer: made.append(Stub(answer)) or made[-1]
    for stub in made:
        stub.close()


def test_a_retry_after_of_hours_does_not_hold_later_alerts(stubs):
    def answer(handler, n, body, stub):
        if n == 0:  # an Alertmanager (or a proxy before it) going down for maintenance
            empty(handler, 503, **{"Retry-After": "21600"})
            return
        stub.bodies.append(body)
        empty(handler, 200)

    stub = stubs(answer)
    hook = Webhook(stub.url())
    hook.send(alert(live=20))
    hook.send(alert(live=21))
    wait_for(lambda: [b["live"] for b in stub.bodies] == [20, 21], "both alerts delivered in order", deadline=20)
    hook.close()
    assert hook.counts() == {"sent": 2, "failed": 0, "dropped": 0}


def test_a_receiver_that_drips_its_answer_is_cut_at_the_deadline(stubs):
    stop = threading.Event()

    def answer(handler, n, body, stub):
        # A byte every 0.2 s: each read is quick, so no per-operation timeout ever trips.
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(0.2):
            try:
                handler.wfile.write(b"X")
                handler.wfile.flush()
            except OSError:
                return

    stub = stubs(answer)
    errors: list[str] = []
    hook = Webhook(stub.url(), on_error=errors.append, timeout=1, deadline=2, retries=0)
    began = time.monotonic()
    hook.send(alert())
    try:
        wait_for(lambda: hook.counts()["failed"] == 1, "the delivery counted failed", deadline=15)
    finally:
        stop.set()
    assert time.monotonic() - began < 2 + 3, "cut at the deadline, not held"
    hook.close()
    assert hook.counts()["sent"] == 0 and len(errors) == 1


def test_a_huge_answer_is_not_read_whole(stubs):
    written = []
    block = b"x" * (1 << 20)

    def answer(handler, n, body, stub):
        total = 256 << 20
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        sent = 0
        try:
            while sent < total:
                handler.wfile.write(block)
                sent += len(block)
        except OSError:  # the client closed: it read what it wanted
            pass
        written.append(sent)

    stub = stubs(answer)
    hook = Webhook(stub.url())
    hook.send(alert())
    wait_for(lambda: written, "the stub to stop sending its answer", deadline=20)
    hook.close()
    assert hook.counts()["sent"] == 1
    # The client reads 64 KiB; the kernel's socket buffers on loopback hold a few MiB more.
    assert written[0] < 32 << 20, f"the whole body was read: {written[0] >> 20} MiB"


def test_failures_are_logged_without_the_urls_userinfo_or_query_tokens(stubs):
    def answer(handler, n, body, stub):
        empty(handler, 400)

    stub = stubs(answer)
    port = stub.server.server_port
    errors: list[str] = []
    hook = Webhook(f"http://relay:hunter2@127.0.0.1:{port}/hook?token=s3cr3tT0k3n&channel=ops",
                   on_error=errors.append, retries=0)
    hook.send(alert())
    hook.close()
    refused = Stub(lambda *args: None)
    refused.close()  # nothing listens there any more: the error comes from the connection, not an answer
    am = Alertmanager(f"http://am:pa55w0rd@127.0.0.1:{refused.server.server_port}/api/v2/alerts?key=s3cr3tK3y",
                      generator_url="urn:spawnwatch:node-1", on_error=errors.append, retries=0)
    am.send(alert())
    am.close()
    assert len(errors) == 2, errors
    assert f"http://127.0.0.1:{port}/hook?token=REDACTED&channel=REDACTED" in errors[0]
    for secret in ("relay", "hunter2", "s3cr3tT0k3n", "ops", "am:", "pa55w0rd", "s3cr3tK3y"):
        assert not any(secret in error for error in errors), (secret, errors)


class Caught(logging.Handler):
    """The records one logger emits (caplog sees only what reaches the root logger)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "Caught":
        self.logger.addHandler(self)
        self.old_level, self.logger.level = self.logger.level, logging.DEBUG
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.level = self.old_level

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]


def test_a_delivery_thread_that_raises_is_restarted_logged_once_and_counted(stubs):
    def answer(handler, n, body, stub):
        stub.bodies.append(body)
        empty(handler, 200)

    stub = stubs(answer)
    raised = []

    def resend():  # Alertmanager's re-send, here failing twice, then with nothing to re-send
        if len(raised) < 2:
            raised.append(time.monotonic())
            raise RuntimeError("the re-send failed")
        return None

    with Caught("spawnwatch") as caught:
        before = internal_errors()["alert_delivery"]
        delivery = Delivery(stub.url(), every_s=0.05, on_timer=resend)
        wait_for(lambda: len(raised) == 2, "two failed re-sends", deadline=10)
        delivery.submit({"after": "the failures"})
        wait_for(lambda: stub.bodies == [{"after": "the failures"}], "the delivery after the failures", deadline=10)
        delivery.close()
    assert internal_errors()["alert_delivery"] - before == 2
    logged = caught.errors()
    assert len(logged) == 1 and "alert_delivery" in logged[0] and "the re-send failed" in logged[0], logged


class DockerStub:
    """Docker's API on a unix socket, answering what the event follower asks: the version,
    the running containers, inspect (malformed the first time), and an event stream fed by
    the test."""

    def __init__(self, path: Path, container_id: str) -> None:
        self.path = str(path)
        self.inspected = 0
        self.streams: list[queue.Queue[dict | None]] = []  # one per event stream opened
        stub = self
        version = "1.41"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                route = self.path.split("?")[0].removeprefix(f"/v{version}")
                if route == "/version":
                    self.json({"ApiVersion": version, "Version": "stub"})
                elif route == "/_ping":
                    self.json("OK")
                elif route == "/containers/json":
                    self.json([{"Id": container_id}])
                elif route == f"/containers/{container_id}/json":
                    stub.inspected += 1
                    # The first answer is JSON of the wrong shape: a list where an object belongs.
                    self.json(["not", "an", "object"] if stub.inspected == 1 else inspect_answer(container_id))
                elif route.startswith("/containers/") and route.endswith("/json"):
                    self.send_error(500, "inspect failed")  # any other container: the engine errs
                elif route == "/events":
                    self.stream()
                else:
                    self.send_error(404)

            def json(self, value) -> None:
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def stream(self) -> None:
                try:
                    self.send_events()
                except OSError:  # the follower closed the stream
                    self.close_connection = True

            def send_events(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                events: queue.Queue[dict | None] = queue.Queue()
                stub.streams.append(events)
                while (event := events.get()) is not None:
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def announce(self, event: dict | None) -> None:
        """An event on every stream open (a stream the follower dropped takes it too, unheard)."""
        for events in self.streams:
            events.put(event)

    def close(self) -> None:
        self.announce(None)
        self.server.shutdown()
        self.server.server_close()


def inspect_answer(container_id: str) -> dict:
    return {"Id": container_id, "Name": "/mcp-leaked", "Created": "2026-12-07T04:00:00.000000000Z",
            "Config": {"Image": "mcp/fetch", "Labels": {}, "AttachStdin": True},
            "HostConfig": {}, "State": {"Running": True, "Pid": 0, "StartedAt": "2026-12-07T04:00:01Z"}}


def test_the_engine_follower_fed_a_malformed_answer_is_restarted_counted_and_follows_again(tmp_path):
    container_id = "c0ffee" * 10 + "abcd"
    docker_api = DockerStub(tmp_path / "docker.sock", container_id)
    resolver = ContainerResolver(DockerEngine(base_url=f"unix://{docker_api.path}"), cgroup_mount=None,
                                 proc_root=str(tmp_path))
    try:
        with Caught("spawnwatch") as caught:
            before = internal_errors()["docker_events"]
            resolver.start()
            wait_for(lambda: docker_api.inspected >= 1, "a container inspected", deadline=10)
            # The follower lists the running containers again and follows the stream...
            wait_for(resolver.following.is_set, "the follower following again", deadline=10)
            assert [info.name for info in resolver.known()] == ["mcp-leaked"]
            # ... and the container rules (orphaned_containers) get their lifecycle events again.
            resolver.queue_lifecycle(boot_time=0.0)
            docker_api.announce({"Type": "container", "Action": "die", "id": container_id,
                                   "Actor": {"ID": container_id, "Attributes": {"name": "mcp-leaked",
                                                                                "exitCode": "0"}},
                                   "time": int(time.time()), "timeNano": time.time_ns()})
            seen: list = []
            wait_for(lambda: seen.extend(resolver.lifecycle()) or any(e.action == "die" for e in seen), "the die event",
                     deadline=10)
        assert [e.action for e in seen] == ["create", "start", "die"] and seen[-1].id == container_id
        assert internal_errors()["docker_events"] - before == 1
        logged = caught.errors()
        assert len(logged) == 1 and "docker_events" in logged[0], logged
    finally:
        resolver.close()
        docker_api.close()


def test_doctor_says_when_following_the_engine_fails_and_why(tmp_path):
    docker_api = DockerStub(tmp_path / "docker.sock", "c0ffee" * 10 + "abcd")
    try:
        result = CliRunner().invoke(main, ["doctor", "--json"], env={"DOCKER_HOST": f"unix://{docker_api.path}"})
    finally:
        docker_api.close()
    checks = {c["name"]: c for c in map(json.loads, result.stdout.splitlines())}
    events = checks["docker events"]
    assert not events["ok"] and not events["required"], events
    assert "AttributeError" in events["detail"] and "internal_errors" in events["fix"]


def test_the_stats_record_and_the_metrics_count_internal_errors_by_component(stubs):
    stub = stubs(lambda handler, n, body, stub: empty(handler, 200))

    def resend():
        raise RuntimeError("the re-send failed")

    delivery = Delivery(stub.url(), every_s=0.05, on_timer=resend)
    wait_for(lambda: internal_errors()["alert_delivery"] >= 1, "the failure counted")
    delivery.close()
    stats = stats_record(SimpleNamespace(stats=lambda: {"events": {}, "lost": 0}))
    assert stats["internal_errors"]["alert_delivery"] >= 1 and stats["internal_errors"]["docker_events"] >= 0
    assert "internal errors (" in faults(stats) and "alert_delivery" in faults(stats)
    metrics = Metrics()
    try:
        metrics.send({**stats, "kind": "progress"})
        value = metrics.registry.get_sample_value("spawnwatch_internal_errors_total", {"component": "alert_delivery"})
    finally:
        metrics.close()
    assert value == stats["internal_errors"]["alert_delivery"]


def test_an_engine_that_errs_is_said_once_at_warning_level_not_at_debug(tmp_path):
    docker_api = DockerStub(tmp_path / "docker.sock", "c0ffee" * 10 + "abcd")
    engine = DockerEngine(base_url=f"unix://{docker_api.path}")
    try:
        with Caught("spawnwatch") as caught:
            assert engine.inspect("deadbeef" * 8) is None and engine.inspect("feedface" * 8) is None
    finally:
        docker_api.close()
    warned = [r.getMessage() for r in caught.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "inspect_container" in warned[0] and "500" in warned[0], warned
