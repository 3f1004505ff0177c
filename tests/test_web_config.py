"""The metrics endpoint over TLS and basic auth (--web-config-file, the exporters' web
config), on 127.0.0.1 with certificates made here: what it serves and to whom, what it
refuses, and a real Prometheus scraping it as an operator would configure it."""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.cli.watch import sink_stats
from spawnwatch.sinks import exporter_web
from spawnwatch.sinks.exporter_web import BasicAuth, WebConfigError, load_web_config
from spawnwatch.sinks.prometheus import Metrics

from prometheus_env import PrometheusServer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PASSWORD = "correct horse battery staple"


def make_certificate(directory: Path, name: str, issuer: tuple | None = None, server: bool = False) -> tuple:
    """PEM files NAME.crt and NAME.key: a CA when `issuer` is None, else a leaf it signs
    (for 127.0.0.1 when `server`).  Returns (certificate, key) for signing more."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
    if issuer is None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certificate, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca, server (127.0.0.1), client (signed by ca), and stranger (signed by another CA)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_certificate(directory, "ca")
    make_certificate(directory, "server", ca, server=True)
    make_certificate(directory, "client", ca)
    make_certificate(directory, "stranger", make_certificate(directory, "other-ca"))
    return directory


def web_config(pki: Path, text: str) -> str:
    path = pki / f"web-{abs(hash(text))}.yml"
    path.write_text(text)
    return str(path)


def hashed(password: str = PASSWORD) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


TLS_AND_AUTH = f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  prometheus: {hashed()}
"""


def client_context(pki: Path, certificate: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if certificate:
        context.load_cert_chain(pki / f"{certificate}.crt", pki / f"{certificate}.key")
    return context


def get(url: str, context: ssl.SSLContext | None = None, user: str | None = None,
        password: str = PASSWORD) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_over_tls_answer_only_the_right_user_and_password(pki):
    metrics = Metrics(web=load_web_config(web_config(pki, TLS_AND_AUTH)))
    try:
        assert metrics.url == f"https://127.0.0.1:{metrics.port}/metrics"
        context = client_context(pki)
        status, text = get(metrics.url, context, "prometheus")
        assert status == 200 and "spawnwatch_build_info" in text
        for user, password in (("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "x" * 100)):
            assert get(metrics.url, context, user, password) == (401, "Unauthorized\n")
        status, _ = get(metrics.url, context)
        assert status == 401
        with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
            get(f"http://127.0.0.1:{metrics.port}/metrics", user="prometheus")  # plain HTTP on the TLS port
    finally:
        metrics.close()


def test_a_required_client_certificate_is_checked_against_the_client_ca(pki):
    config = web_config(pki, f"""
tls_server_config:
  cert_file: {pki / "server.crt"}
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
""")
    metrics = Metrics(web=load_web_config(config))
    try:
        assert get(metrics.url, client_context(pki, "client"))[0] == 200
        for refused in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
                get(metrics.url, client_context(pki, refused))
        old = client_context(pki, "client")
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            get(metrics.url, old)
    finally:
        metrics.close()


def test_a_client_that_connects_and_says_nothing_holds_up_no_other_scrape(pki):
    metrics = Metrics(web=load_web_config(web_config(pki, TLS_AND_AUTH)))
    silent = socket.create_connection(("127.0.0.1", metrics.port))
    try:
        started = time.monotonic()
        assert get(metrics.url, client_context(pki), "prometheus")[0] == 200
        assert time.monotonic() - started < exporter_web.SOCKET_TIMEOUT_S, "the scrape waited for the silent client"
    finally:
        silent.close()
        metrics.close()


def test_connections_over_the_cap_are_closed_and_the_server_serves_again_after(pki):
    metrics = Metrics(web=load_web_config(web_config(pki, TLS_AND_AUTH)))
    held = [socket.create_connection(("127.0.0.1", metrics.port)) for _ in range(exporter_web.CONNECTIONS_MAX)]
    try:
        extra = socket.create_connection(("127.0.0.1", metrics.port))
        extra.settimeout(10)
        assert extra.recv(1) == b"", "a connection over the cap is closed unanswered"
        extra.close()
    finally:
        for sock in held:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while True:  # the slots free as the server sees the held connections close
            try:
                assert get(metrics.url, client_context(pki), "prometheus")[0] == 200
                break
            except (ConnectionError, urllib.error.URLError, ssl.SSLError):
                assert time.monotonic() < deadline, "the server never served again"
                time.sleep(0.1)
    finally:
        metrics.close()


class CountingCheckpw:
    """bcrypt.checkpw itself, counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed_password: bytes) -> bool:
        self.calls += 1
        return self.real(password, hashed_password)


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_verified_credentials_are_remembered_briefly_and_in_a_bounded_cache(monkeypatch):
    checkpw = CountingCheckpw()
    monkeypatch.setattr(exporter_web.bcrypt, "checkpw", checkpw)
    now = [0.0]
    users = {f"user{i}".encode(): hashed().encode() for i in range(exporter_web.VERIFIED_MAX + 1)}
    auth = BasicAuth(users, clock=lambda: now[0])
    assert auth.allows(basic("user0")) and auth.allows(basic("user0"))
    assert checkpw.calls == 1, "the second request was verified from the cache"
    for _ in range(2):
        assert not auth.allows(basic("user0", "wrong"))
        assert not auth.allows(basic("nobody"))
    assert checkpw.calls == 5, "a failure is never remembered, and an unknown user costs a bcrypt too"
    now[0] += exporter_web.VERIFIED_TTL_S + 1
    assert auth.allows(basic("user0")) and checkpw.calls == 6, "remembered only for VERIFIED_TTL_S"
    for name in users:
        assert auth.allows(basic(name.decode()))
    calls = checkpw.calls
    assert auth.allows(basic("user1")) and checkpw.calls == calls, "a recent one is still remembered"
    assert auth.allows(basic("user0")) and checkpw.calls == calls + 1, "the oldest was let go"
    assert auth.evicted == 2, "each one let go is counted (user0, then user1 to make room for it again)"
    for header in ("", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no colon").decode(),
                   "Basic " + "A" * exporter_web.AUTHORIZATION_MAX):
        assert not auth.allows(header)


def test_the_endpoints_credential_evictions_reach_the_sessions_stats_and_metrics(monkeypatch):
    monkeypatch.setattr(exporter_web, "VERIFIED_MAX", 1)
    metrics = Metrics(web=exporter_web.WebConfig(users={b"a": hashed().encode(), b"b": hashed().encode()}))
    try:
        assert sink_stats([], metrics) == {"evicted_by_table": {"verified_credentials": 0}}
        for user in ("a", "b"):  # b's credentials push a's out of the cache
            assert get(metrics.url, user=user)[0] == 200
        stats = sink_stats([], metrics)
        assert stats == {"evicted_by_table": {"verified_credentials": 1}}
        metrics.send({"kind": "progress", "events": {}, "lost": 0, "table": {}, **stats})
        assert metrics.registry.get_sample_value("spawnwatch_evicted_total", {"table": "verified_credentials"}) == 1
    finally:
        metrics.close()
    without_auth = Metrics()
    try:
        assert sink_stats([], without_auth) == {"evicted_by_table": {}}, "no cache, no table"
    finally:
        without_auth.close()


def watch(*args: str):
    return CliRunner().invoke(main, ["watch", "--replay", str(FIXTURES / "accumulate.msgpack"), "--json", *args])


def test_watch_serves_its_metrics_as_the_web_config_says(pki):
    result = watch("--metrics-port", "0", "--web-config-file", web_config(pki, TLS_AND_AUTH))
    assert result.exit_code == 0, result.output
    assert "metrics on https://127.0.0.1:" in result.stderr


def test_a_web_config_needs_a_metrics_address(pki):
    result = watch("--web-config-file", web_config(pki, TLS_AND_AUTH))
    assert result.exit_code == 2 and "give --metrics-address too" in result.stderr


@pytest.mark.parametrize("text, says", [
    ("tls_server_config: [", "not YAML"),
    ("- a list", "must be a mapping"),
    ("tls_server_config:\n  cert_file: server.crt\n", "needs both cert_file and key_file"),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n", "cannot load the certificate"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n", "cannot load the certificate"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAnyClientCert\n",
     "accepts unverified certificates"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n",
     "client_auth_type is NoClientCert"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS14\n", "min_version"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [x]\n",
     "cipher_suites is not supported"),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_allowed_sans: [x]\n",
     "client_allowed_sans is not supported"),
    ("basic_auth_users:\n  prometheus: plaintext\n", "is not a bcrypt hash"),
    ("basic_auth_users: 0\n", "basic_auth_users must be a mapping"),
    ("tls_server_config: off\n", "tls_server_config must be a mapping"),
    ("basic_auth_user:\n  prometheus: x\n", "unknown key basic_auth_user"),
    ('basic_auth_users:\n  "\\e]0;owned\\a\\e[2J": x\n', "basic_auth_users.\\x1b]0;owned\\x07\\x1b[2J is not"),
    ("x" * (exporter_web.WEB_CONFIG_MAX_BYTES + 1), "larger than"),
])
def test_a_bad_web_config_stops_watch_at_start_with_one_line(pki, text, says):
    result = watch("--metrics-port", "0", "--web-config-file", web_config(pki, text))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    (error,) = [line for line in result.stderr.splitlines() if "--web-config-file" in line]
    assert says in error, error


def test_a_missing_web_config_is_an_error_not_plain_http(tmp_path):
    with pytest.raises(WebConfigError, match="cannot read"):
        load_web_config(str(tmp_path / "absent.yml"))


class ScrapingPrometheus(PrometheusServer):
    """A Prometheus with the scrape jobs given, and nothing else."""

    def __init__(self, root: Path, jobs: list[dict]) -> None:
        self.config = {"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}
        super(PrometheusServer, self).__init__(root)


@pytest.mark.slow
def test_a_real_prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_without(pki, tmp_path):
    """About 5 s: Prometheus' start and a few 1 s scrapes."""
    config = web_config(pki, TLS_AND_AUTH.replace("key_file: server.key", f"""key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt"""))
    metrics = Metrics(web=load_web_config(config))
    target = {"targets": [f"127.0.0.1:{metrics.port}"]}
    tls = {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "client.crt"), "key_file": str(pki / "client.key")}
    auth = {"username": "prometheus", "password": PASSWORD}
    jobs = [
        {"job_name": "spawnwatch", "scheme": "https", "tls_config": tls, "basic_auth": auth, "static_configs": [target]},
        {"job_name": "plain-http", "basic_auth": auth, "static_configs": [target]},
        {"job_name": "wrong-password", "scheme": "https", "tls_config": tls,
         "basic_auth": {**auth, "password": "wrong"}, "static_configs": [target]},
        {"job_name": "no-client-cert", "scheme": "https", "tls_config": {"ca_file": tls["ca_file"]},
         "basic_auth": auth, "static_configs": [target]},
    ]
    try:
        prometheus = ScrapingPrometheus(tmp_path, jobs)
        try:
            deadline = time.monotonic() + 60
            while True:
                up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
                if len(up) == len(jobs):
                    break
                assert time.monotonic() < deadline, f"not every job scraped: {up}"
                time.sleep(0.5)
            assert up == {"spawnwatch": "1", "plain-http": "0", "wrong-password": "0", "no-client-cert": "0"}, up
            (build,) = prometheus.query("spawnwatch_build_info")
            assert build["metric"]["job"] == "spawnwatch" and build["value"][1] == "1"
            errors = {t["labels"]["job"]: t["lastError"] for t in prometheus.get("/api/v1/targets")["data"]["activeTargets"]}
            assert "401" in errors["wrong-password"], json.dumps(errors)
        finally:
            prometheus.stop()
    finally:
        metrics.close()


def test_a_client_that_resets_mid_request_leaves_no_traceback_on_stderr(capfd):
    metrics = Metrics()
    try:
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", metrics.port))
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            client.close()
        assert get(metrics.url)[0] == 200  # served after them
    finally:
        metrics.close()
    assert "Traceback" not in capfd.readouterr().err
