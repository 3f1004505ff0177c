"""Alerts to several real Alertmanager replicas (an HA pair shares no alerts: each must get
every one), over TLS with a CA and a client certificate, and with a bearer token.  The
alerts come from a replayed recording (no root) or straight from the sink."""

from __future__ import annotations

import ssl
import threading
import urllib.request
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import run, wait_for
from prometheus_env import AlertmanagerServer
from test_web_config import make_certificate

from spawnwatch.sinks.alertmanager import Alertmanager

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDING = FIXTURES / "snapshot.msgpack"  # one accumulating alert that stays firing: Alertmanager keeps it
RECORDED_SIGNATURE = "npm exec magic"


def signatures(alertmanager: AlertmanagerServer) -> set[str]:
    return {alert["labels"]["signature"] for alert in alertmanager.alerts()}


@pytest.fixture
def replicas(tmp_path):
    started = []
    try:
        for name in ("am-0", "am-1"):
            (tmp_path / name).mkdir()
            started.append(AlertmanagerServer(tmp_path / name))
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.stop()


def test_every_alertmanager_replica_gets_every_alert(replicas, spawnwatch_cmd):
    first, second = replicas
    # One as its base URL, one as its API's: both are Alertmanagers.
    watch = run([*spawnwatch_cmd, "watch", "--replay", str(RECORDING), "--json",
                 "--alertmanager", first.url, "--alertmanager", f"{second.url}/api/v2/alerts"], timeout=120)
    assert watch.returncode == 0, watch.stderr
    for replica in replicas:
        wait_for(lambda: RECORDED_SIGNATURE in signatures(replica), f"the alert at {replica.url}")


def alert(signature: str) -> dict:
    return {
        "kind": "alert", "state": "firing", "rule": "accumulating", "signature": signature,
        "spawner": {"pid": 4242, "ppid": 1, "argv": ["node", "supervisor.js"], "comm": "node"}, "container": None,
        "live": 20, "spawned": 20, "exited": 0, "zombies": 0, "orphans": 0, "rss_bytes": 1 << 20,
        "message": f"node (pid 4242) keeps spawning `{signature}`: 20 live",
    }


def test_a_stopped_replica_stops_no_delivery_to_the_other_and_counts_its_failures(replicas):
    up, down = replicas
    errors: list[str] = []
    am = Alertmanager(f"{up.url}/api/v2/alerts", f"{down.url}/api/v2/alerts", generator_url="urn:spawnwatch:test",
                      on_error=errors.append, timeout=2, deadline=4, retries=1)
    try:
        am.send(alert("npm exec before"))
        for replica in replicas:
            wait_for(lambda: "npm exec before" in signatures(replica), f"the first alert at {replica.url}")
        down.stop()
        am.send(alert("npm exec after"))
        wait_for(lambda: "npm exec after" in signatures(up), "the later alert at the replica still up")
        wait_for(lambda: errors, "the failure to reach the stopped replica, said")
        by_receiver = {shown: counts for shown, counts in
                       ((d.shown_url, d.counts()) for d in am.deliveries)}
        assert by_receiver[f"{up.url}/api/v2/alerts"] == {"sent": 2, "failed": 0, "dropped": 0}
        assert by_receiver[f"{down.url}/api/v2/alerts"] == {"sent": 1, "failed": 1, "dropped": 0}
        assert am.counts() == {"sent": 3, "failed": 1, "dropped": 0}
        assert all(down.url in error for error in errors), errors
    finally:
        am.close()


class TlsAlertmanager(AlertmanagerServer):
    """An Alertmanager that serves only TLS and only to clients with a certificate of `pki`'s CA."""

    def __init__(self, root: Path, pki: Path) -> None:
        self.pki = pki
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(pki / "client.crt", pki / "client.key")
        super().__init__(root)
        self.url = self.url.replace("http://", "https://", 1)

    def args(self, root: Path) -> list[str]:
        web_config = root / "web.yml"
        web_config.write_text(
            f"tls_server_config:\n  cert_file: {self.pki / 'server.crt'}\n  key_file: {self.pki / 'server.key'}\n"
            f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {self.pki / 'ca.crt'}\n")
        return [*super().args(root), f"--web.config.file={web_config}"]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/-/ready", timeout=2,
                                        context=self.context) as response:
                return response.status == 200
        except OSError:
            return False

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", timeout=5,
                                    context=self.context) as response:
            return json.loads(response.read())


@pytest.fixture
def pki(tmp_path) -> Path:
    directory = tmp_path / "pki"
    directory.mkdir()
    ca = make_certificate(directory, "ca")
    make_certificate(directory, "server", ca, server=True)
    make_certificate(directory, "client", ca)
    return directory


def test_alerts_reach_an_alertmanager_that_requires_tls_and_a_client_certificate(tmp_path, pki, spawnwatch_cmd):
    server = TlsAlertmanager(tmp_path, pki)
    try:
        replay = [*spawnwatch_cmd, "watch", "--replay", str(RECORDING), "--json", "--alertmanager", server.url,
                  "--ca-file", str(pki / "ca.crt")]
        refused = run(replay, timeout=120)
        # Without the client certificate the server refuses (our CA check passed: the environment's
        # REQUESTS_CA_BUNDLE, if any, does not replace --ca-file).
        assert "POST https://127.0.0.1" in refused.stderr and not server.alerts(), refused.stderr
        assert "CERTIFICATE_VERIFY_FAILED" not in refused.stderr, refused.stderr
        watch = run([*replay, "--cert-file", str(pki / "client.crt"), "--key-file", str(pki / "client.key")],
                    timeout=120)
        assert watch.returncode == 0 and "POST" not in watch.stderr, watch.stderr
        wait_for(lambda: RECORDED_SIGNATURE in signatures(server), "the alert at the TLS Alertmanager")
    finally:
        server.stop()


class HeaderReceiver:
    """Notes the Authorization header of every POST (Alertmanager checks basic auth, not bearer tokens)."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        seen = self.authorizations

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_bearer_token_goes_to_the_alertmanagers_and_the_webhook(tmp_path, spawnwatch_cmd):
    token = tmp_path / "token"
    token.write_text("s3cr3t-t0ken\n")
    receiver = HeaderReceiver()
    try:
        watch = run([*spawnwatch_cmd, "watch", "--replay", str(RECORDING), "--json", "--bearer-token-file", str(token),
                     "--alertmanager", receiver.url, "--webhook", f"{receiver.url}/hook"], timeout=120)
        assert watch.returncode == 0, watch.stderr
        assert receiver.authorizations == ["Bearer s3cr3t-t0ken"] * 2
    finally:
        receiver.close()


@pytest.mark.parametrize("content", [b"two\nlines", b"", b"x" * (17 << 10)])
def test_a_bad_token_file_is_a_clear_error(tmp_path, spawnwatch_cmd, content):
    token = tmp_path / "token"
    token.write_bytes(content)
    watch = run([*spawnwatch_cmd, "watch", "--replay", str(RECORDING), "--bearer-token-file", str(token),
                 "--alertmanager", "http://127.0.0.1:9/"], timeout=60)
    assert watch.returncode == 2 and "bearer token file" in watch.stderr, watch.stderr
    assert "Traceback" not in watch.stderr and "two" not in watch.stderr


def test_deliveries_are_counted_by_receiver_in_the_metrics():
    from spawnwatch.sinks.prometheus import Metrics

    metrics = Metrics()
    try:
        metrics.send({"kind": "progress", "events": {}, "lost": 0, "table": {},
                      "notifications": {"sent": 3, "failed": 1, "dropped": 0},
                      "notifications_by_receiver": {"http://am-0:9093/api/v2/alerts": {"sent": 2, "failed": 0},
                                                    "http://am-1:9093/api/v2/alerts": {"sent": 1, "failed": 1}}})
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for line in ('spawnwatch_receiver_notifications_total{receiver="http://am-0:9093/api/v2/alerts",'
                     'result="sent"} 2.0',
                     'spawnwatch_receiver_notifications_total{receiver="http://am-1:9093/api/v2/alerts",'
                     'result="failed"} 1.0'):
            assert line in text, text
    finally:
        metrics.close()
