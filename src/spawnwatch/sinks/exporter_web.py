"""The metrics endpoint's web server: TLS and basic auth from a web config file, the
exporter convention (node_exporter's `--web.config.file`, prometheus/exporter-toolkit):

    tls_server_config:
      cert_file: server.crt          # paths relative to the web config file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: ca.crt         # needed by the two that verify
      min_version: TLS12             # TLS10..TLS13; the default TLS12; max_version likewise
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt, e.g. `htpasswd -nBC 10 "" | tr -d ':\\n'`

Unlike exporter-toolkit, the file is read once, at start: a bad one stops `watch` there
with one line saying why.  A key this server does not enforce (cipher_suites,
client_allowed_sans, the client-auth types that accept unverified certificates, ...)
is refused, never ignored: a setting that silently does nothing reads as protection.

The metrics carry argv-derived labels, so whoever can connect is a reader to bound:
each connection is served by a thread of its own (the TLS handshake too, so a client
that connects and says nothing holds up only itself), with a timeout on every socket
operation and a cap on the connections served at once; a connection over the cap is
closed unanswered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bcrypt
import yaml

from spawnwatch.adapters.files import TooLarge, read_capped
from spawnwatch.bounded import RecentMap

WEB_CONFIG_MAX_BYTES = 64 << 10
CONNECTIONS_MAX = 16
SOCKET_TIMEOUT_S = 10.0
# bcrypt is slow by design (tens of ms at cost 10): a scraper's credentials, once
# verified, are trusted for a while rather than hashed again at every scrape.
VERIFIED_TTL_S = 60.0
VERIFIED_MAX = 64
BCRYPT_HASH = re.compile(r"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# Compared against when the user is unknown, so an unknown user costs what a known one does.
UNKNOWN_USER_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
AUTHORIZATION_MAX = 4096

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH_TYPES = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                     "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# exporter-toolkit's, which Python's ssl cannot do or which accept any certificate at all.
UNSUPPORTED_CLIENT_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
UNSUPPORTED_TLS_KEYS = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences",
                        "prefer_server_cipher_suites", "client_allowed_sans"}
TOP_KEYS = {"tls_server_config", "basic_auth_users"}
UNSUPPORTED_TOP_KEYS = {"http_server_config", "rate_limit"}


class WebConfigError(ValueError):
    pass


@dataclass(frozen=True)
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[bytes, bytes] | None = None  # name -> bcrypt hash; None: no basic auth


def load_web_config(path: str) -> WebConfig:
    """The web config at `path`, checked whole (its certificates and keys loaded)."""
    try:
        raw = read_capped(path, WEB_CONFIG_MAX_BYTES)
    except OSError as exc:
        raise WebConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except TooLarge:
        raise WebConfigError(f"{path}: larger than {WEB_CONFIG_MAX_BYTES >> 10} KiB") from None
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not YAML: {' '.join(str(exc).split())}") from exc
    if document is None:  # an empty file: plain HTTP, no auth, as exporter-toolkit reads it
        return WebConfig()
    section = _mapping(document, path, "the file")
    _known_keys(section, TOP_KEYS, UNSUPPORTED_TOP_KEYS, path, "")
    tls = _section(section, "tls_server_config", path)
    users = _section(section, "basic_auth_users", path)
    # Empty sections are no TLS, no auth, as exporter-toolkit reads them.
    return WebConfig(tls=_tls_context(tls, Path(path).parent, path) if tls else None,
                     users=_users(users, path) if users else None)


def _section(section: dict, key: str, path: str) -> dict:
    value = section.get(key)
    return {} if value is None else _mapping(value, path, key)


def _mapping(value: Any, path: str, where: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{path}: {where} must be a mapping of names to values")
    return value


def _known_keys(section: dict, known: set[str], unsupported: set[str], path: str, where: str) -> None:
    for key in section:
        if key in unsupported:
            raise WebConfigError(f"{path}: {where}{key} is not supported by spawnwatch")
        if key not in known:
            raise WebConfigError(f"{path}: unknown key {where}{key}")


def _string(section: dict, key: str, path: str, where: str = "tls_server_config.") -> str | None:
    value = section.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise WebConfigError(f"{path}: {where}{key} must be a non-empty string")
    return value


def _tls_context(section: dict, base: Path, path: str) -> ssl.SSLContext:
    _known_keys(section, TLS_KEYS, UNSUPPORTED_TLS_KEYS, path, "tls_server_config.")
    cert_file, key_file = _string(section, "cert_file", path), _string(section, "key_file", path)
    if not cert_file or not key_file:
        raise WebConfigError(f"{path}: tls_server_config needs both cert_file and key_file")
    auth_type = _string(section, "client_auth_type", path) or "NoClientCert"
    if auth_type in UNSUPPORTED_CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{path}: client_auth_type {auth_type} accepts unverified certificates and is not "
                             "supported: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)")
    if auth_type not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{path}: client_auth_type {auth_type!r} is none of {', '.join(CLIENT_AUTH_TYPES)}")
    client_ca_file = _string(section, "client_ca_file", path)
    if client_ca_file and auth_type == "NoClientCert":
        raise WebConfigError(f"{path}: client_ca_file is set but client_auth_type is NoClientCert: "
                             "set client_auth_type to RequireAndVerifyClientCert")
    if not client_ca_file and auth_type != "NoClientCert":
        raise WebConfigError(f"{path}: client_auth_type {auth_type} needs client_ca_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _tls_version(section, "min_version", "TLS12", path)
    context.maximum_version = _tls_version(section, "max_version", "TLS13", path)
    if context.minimum_version > context.maximum_version:
        raise WebConfigError(f"{path}: tls_server_config.min_version is above max_version")
    cert, key = base / cert_file, base / key_file
    try:
        # A key with a passphrase fails here rather than prompting on the terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{path}: cannot load the certificate {cert} and its key {key}: "
                             f"{_why(exc)}") from exc
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=base / client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{path}: cannot load client_ca_file {base / client_ca_file}: "
                                 f"{_why(exc)}") from exc
        context.verify_mode = CLIENT_AUTH_TYPES[auth_type]
    return context


def _why(exc: OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)


def _tls_version(section: dict, key: str, default: str, path: str) -> ssl.TLSVersion:
    name = _string(section, key, path) or default
    if name not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key} {name!r} is none of {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[name]


def _users(section: dict, path: str) -> dict[bytes, bytes]:
    users = {}
    for name, hashed in section.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"{path}: basic_auth_users.{name} is not a bcrypt hash "
                                 "(make one with htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        users[name.encode()] = hashed.encode()
    return users


class BasicAuth:
    """Checks an `Authorization: Basic` header against bcrypt hashes in constant time
    (every name compared, and an unknown user costs one bcrypt too), remembering the
    credentials it verified for VERIFIED_TTL_S under an HMAC of them with a key of this
    process: no password is kept, and VERIFIED_MAX bounds the memory."""

    def __init__(self, users: dict[bytes, bytes], clock: Callable[[], float] = time.monotonic) -> None:
        self._users = users
        self._clock = clock
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._verified: RecentMap[bytes, float] = RecentMap(VERIFIED_MAX)  # digest -> expiry, oldest first

    @property
    def evicted(self) -> int:
        """Verified credentials let go past VERIFIED_MAX: their next request costs a bcrypt again."""
        return self._verified.evicted

    def allows(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or len(header) > AUTHORIZATION_MAX:
            return False
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        name, colon, password = credentials.partition(b":")
        if not colon:
            return False
        digest = hmac.new(self._key, credentials, hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            expiry = self._verified.get(digest)
            if expiry is not None and expiry > now:
                return True
        hashed = None
        for known, known_hash in self._users.items():
            if hmac.compare_digest(known, name):
                hashed = known_hash
        try:
            matches = bcrypt.checkpw(password, hashed or UNKNOWN_USER_HASH)
        except ValueError:  # a password bcrypt refuses (over 72 bytes, for some versions)
            return False
        if not matches or hashed is None:
            return False
        with self._lock:
            self._verified.put(digest, now + VERIFIED_TTL_S)
        return True


def guarded(app: Callable, auth: BasicAuth) -> Callable:
    """The WSGI `app`, answering 401 to a request without valid credentials."""

    def guarded_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if auth.allows(environ.get("HTTP_AUTHORIZATION", "")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="spawnwatch"'),
                                            ("Content-Type", "text/plain; charset=utf-8")])
        return [b"Unauthorized\n"]

    return guarded_app


class _QuietHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news; stderr carries the session's lines."""


class WebServer(ThreadingMixIn, WSGIServer):
    """A WSGI server on (host, port), TLS when given a context, basic auth when given one,
    a thread per connection, at most CONNECTIONS_MAX at once."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Callable, tls: ssl.SSLContext | None,
                 auth: BasicAuth | None = None) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM,
                                                 flags=socket.AI_PASSIVE)[0][0]
        self._tls = tls
        self._auth = auth
        self._slots = threading.BoundedSemaphore(CONNECTIONS_MAX)
        super().__init__(address, _QuietHandler)
        self.set_app(guarded(app, auth) if auth is not None else app)

    def evicted_by_table(self) -> dict[str, int]:
        """The server's bounded tables' evictions: its cache of verified credentials, when it has one."""
        return {"verified_credentials": self._auth.evicted} if self._auth is not None else {}

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            if self._tls is not None:
                request.settimeout(SOCKET_TIMEOUT_S)
                try:
                    request = self._tls.wrap_socket(request, server_side=True)
                except OSError:  # plain HTTP, no or a bad client certificate, a timeout
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that resets, times out or fails its handshake is its own trouble, not
        a traceback on stderr (any local user could write those); anything else is a bug."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="spawnwatch-metrics", daemon=True)
        thread.start()
        return thread


def serve(app: Callable, address: tuple[str, int], web: WebConfig | None) -> WebServer:
    """`app` served on `address` as `web` says (plain HTTP without one), in the background."""
    web = web or WebConfig()
    server = WebServer(address, app, web.tls, BasicAuth(web.users) if web.users else None)
    server.serve_in_background()
    return server
