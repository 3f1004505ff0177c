"""JSON bodies POSTed from a background thread, so the event loop never waits on the network.

One `requests` session keeps the connection to the receiver open between posts.  The
receiver (or a proxy before it) may be hostile or broken, so it cannot stall delivery:

- Retries are ours, not urllib3's: refused connections, timeouts, 429 and 5xx are tried
  again after a backoff that doubles up to a cap; a `Retry-After` is obeyed only up to
  that cap (urllib3 would sleep 6 hours on `Retry-After: 21600`).
- The timeout bounds each socket operation, so a server that drips a byte every few
  seconds would hold the thread forever: each body also has a deadline, retries
  included, at which the socket of the try in flight is shut.
- Of an answer's body at most `BODY_CAP` bytes are read.

The queue is bounded: when the receiver cannot keep up, bodies are dropped and
counted, never buffered without end.  An optional timer asks its owner for a body
every `every_s` seconds (Alertmanager's re-sends), on the same thread, which runs
supervised: if it fails it is logged, counted and started again.

`Credentials` say how to prove who we are and whom we talk to, as Prometheus' own
http_config does: a bearer token (read once from a file), a CA bundle to check the
receiver's certificate with, a client certificate and key for receivers that require one.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError

from spawnwatch.adapters.files import TooLarge, read_capped
from spawnwatch.supervise import ALERT_DELIVERY, Supervised
from spawnwatch.text import printable

QUEUE_SIZE = 256
TIMEOUT_S = 5.0  # each socket operation: connect, one read, one write
DEADLINE_S = 15.0  # one body, whole: every try (connect, send, the answer) and the waits between
RETRIES = 3  # after the first try, while the deadline allows
RETRY_MIN_S = 0.5  # waits of 0.5, 1 and 2 s between tries...
RETRY_MAX_S = 5.0  # ...and never longer, whatever Retry-After asks
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
BODY_CAP = 64 << 10
REASON_WIDTH = 200
TOKEN_CAP = 16 << 10  # a bearer token file larger than this is not one
_STOP = object()

Body = Any  # anything json-serialisable


class CredentialsError(ValueError):
    """A token, CA or certificate file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Credentials:
    bearer_token: str | None = None
    ca_file: str | None = None  # None: the system's CAs
    cert_file: str | None = None
    key_file: str | None = None  # None: the key is in cert_file

    def secrets(self) -> tuple[str, ...]:
        return (self.bearer_token,) if self.bearer_token else ()


def load_credentials(token_file: str | None, ca_file: str | None, cert_file: str | None,
                     key_file: str | None) -> Credentials:
    """Credentials from the operator's files, each checked now so a bad one is said at start,
    not at the first alert: the token is printable ASCII with no spaces (a header value), the
    CA bundle and the certificate with its key load as TLS would load them."""
    if key_file is not None and cert_file is None:
        raise CredentialsError("a client key needs its certificate (--cert-file)")
    token = _read_token(token_file) if token_file is not None else None
    try:
        context = ssl.create_default_context()
        if ca_file is not None:
            context.load_verify_locations(cafile=ca_file)
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        shown = printable(str(exc), REASON_WIDTH)
        raise CredentialsError(f"cannot load the CA file or client certificate/key: {shown}") from exc
    return Credentials(token, ca_file, cert_file, key_file)


def _read_token(path: str) -> str:
    try:
        raw = read_capped(path, TOKEN_CAP)
    except OSError as exc:
        raise CredentialsError(f"cannot read the bearer token file: {exc.strerror or exc}") from exc
    except TooLarge:
        raise CredentialsError(f"the bearer token file is larger than {TOKEN_CAP} bytes") from None
    token = raw.strip()
    if not token or any(byte <= 0x20 or byte >= 0x7F for byte in token):
        # A newline inside would start a header of its own; say nothing of the token itself.
        raise CredentialsError("the bearer token file must hold one token of printable ASCII, without spaces")
    return token.decode("ascii")


class Delivery:
    def __init__(
        self,
        url: str,
        on_error: Callable[[str], None] = lambda message: None,
        queue_size: int = QUEUE_SIZE,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        every_s: float | None = None,
        on_timer: Callable[[], Body | None] | None = None,
        deadline: float = DEADLINE_S,
        credentials: Credentials = Credentials(),
    ) -> None:
        self.url = url
        self.shown_url = redacted_url(url)
        self.timeout = timeout
        self.deadline = max(deadline, timeout)
        self.retries = retries
        self.sent = 0
        self.failed = 0  # every retry failed too
        self.dropped = 0  # the queue was full: the receiver is too slow or down
        self._on_error = on_error
        self._every_s = every_s
        self._on_timer = on_timer
        self._adapter = _CuttableAdapter()
        self._session = requests.Session()
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._session.headers["User-Agent"] = "spawnwatch"
        self._secrets = credentials.secrets()
        if credentials.bearer_token:
            self._session.headers["Authorization"] = f"Bearer {credentials.bearer_token}"
        # Given with each request: a session's `verify` loses to REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE in the environment (psf/requests#3829), a request's does not.
        self._tls: dict[str, Any] = {}
        if credentials.ca_file:
            self._tls["verify"] = credentials.ca_file
        if credentials.cert_file:
            self._tls["cert"] = (credentials.cert_file, credentials.key_file) if credentials.key_file \
                else credentials.cert_file
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._worker = Supervised(ALERT_DELIVERY, self._run, self._closing)
        self._worker.start()

    def submit(self, body: Body) -> None:
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped}

    def close(self, wait_s: float = TIMEOUT_S) -> None:
        """Deliver what is queued (for at most about `wait_s`), then stop the thread."""
        try:
            self._queue.put(_STOP, timeout=wait_s)
        except queue.Full:
            pass
        self._worker.join(timeout=wait_s + self.timeout)
        self._closing.set()  # a thread waiting to restart after a failure stops now
        self._session.close()

    def _run(self) -> None:
        next_timer = time.monotonic() + self._every_s if self._every_s else None
        while True:
            wait = None if next_timer is None else max(0.0, next_timer - time.monotonic())
            try:
                body = self._queue.get(timeout=wait)
            except queue.Empty:
                next_timer = time.monotonic() + self._every_s
                body = self._on_timer() if self._on_timer else None
                if body is None:
                    continue
            if body is _STOP:
                return
            self._post(body)

    def _post(self, body: Body) -> None:
        """One body, tried until the receiver takes it, the retries run out or its deadline passes."""
        give_up_at = time.monotonic() + self.deadline
        for attempt in range(self.retries + 1):
            try:
                status, retry_after, head = self._attempt(body, give_up_at - time.monotonic())
            except requests.RequestException as exc:
                status, retry_after, reason = None, None, _reason(exc)
            else:
                if status < 400:
                    self.sent += 1
                    return
                reason = f"HTTP {status} {head}".strip()
            wait = min(max(RETRY_MIN_S * 2 ** attempt, retry_after or 0.0), RETRY_MAX_S)
            if (attempt == self.retries or (status is not None and status not in RETRIED_STATUSES)
                    or time.monotonic() + wait >= give_up_at or self._closing.wait(wait)):
                break
        self.failed += 1
        self._on_error(f"POST {self.shown_url}: {_scrub(reason, self.url, self._secrets)}")

    def _attempt(self, body: Body, within_s: float) -> tuple[int, float | None, str]:
        """(status, Retry-After in seconds or None, the body's start) of one POST, cut after `within_s`."""
        late = threading.Event()

        def cut() -> None:
            late.set()
            self._adapter.cut()

        watchdog = threading.Timer(within_s, cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            with self._session.post(self.url, json=body, timeout=self.timeout, stream=True, **self._tls) as response:
                head = _read_capped(response)
                answer = response.status_code, _retry_after(response.headers.get("Retry-After")), head
        finally:
            watchdog.cancel()
        if late.is_set():  # what was read before the cut may look whole (a status, a body ended early)
            raise requests.Timeout(f"no whole answer within the deadline of {self.deadline:g} s")
        return answer


def summed_counts(deliveries: list[Delivery]) -> dict[str, int]:
    totals = {"sent": 0, "failed": 0, "dropped": 0}
    for delivery in deliveries:
        for result, count in delivery.counts().items():
            totals[result] += count
    return totals


def counts_by_receiver(deliveries: list[Delivery]) -> dict[str, dict[str, int]]:
    """Each receiver's counts, by its URL as a log line shows it (no secrets); receivers
    given twice are counted together."""
    table: dict[str, dict[str, int]] = {}
    for delivery in deliveries:
        counts = table.setdefault(delivery.shown_url, {"sent": 0, "failed": 0, "dropped": 0})
        for result, count in delivery.counts().items():
            counts[result] += count
    return table


def _read_capped(response: requests.Response) -> str:
    """The start of an answer's body, for an error message.  At most BODY_CAP bytes are read
    (the rest is left unread: the connection is closed), and a body that cannot be read
    (cut at the deadline) does not undo the status that came before it."""
    taken = bytearray()
    with suppress(requests.RequestException):
        for chunk in response.iter_content(chunk_size=8192):
            taken += chunk
            if len(taken) >= BODY_CAP:
                break
    return printable(taken[:REASON_WIDTH * 4].decode("utf-8", "replace").strip(), REASON_WIDTH)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is not worth parsing: the wait is capped anyway)."""
    return float(value) if value and value.strip().isdigit() else None


class _CuttableAdapter(HTTPAdapter):
    """requests' adapter with no retries of its own, whose request in flight can be cut short:
    its pools note the connection they hand out, and `cut` shuts that connection's socket, so
    the read or write waiting on it fails at once."""

    def __init__(self) -> None:
        self._in_use: Any = None
        adapter = self

        def noting(pool_class: type) -> type:
            class Noting(pool_class):  # type: ignore[misc, valid-type]
                def _get_conn(self, timeout: float | None = None) -> Any:
                    conn = super()._get_conn(timeout)
                    adapter._in_use = conn
                    return conn
            return Noting

        self._pools = {"http": noting(HTTPConnectionPool), "https": noting(HTTPSConnectionPool)}
        super().__init__(max_retries=0, pool_maxsize=1)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS proxies bring pools of their own
            manager.pool_classes_by_scheme = self._pools
        return manager

    def cut(self) -> None:
        sock = getattr(self._in_use, "sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def redacted_url(url: str) -> str:
    """The URL for a log line: no userinfo, every query value replaced, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    host = f"[{host}]" if ":" in host else host
    query = "&".join(f"{pair.partition('=')[0]}=REDACTED" for pair in parts.query.split("&") if pair)
    return printable(urlunsplit((parts.scheme, host + port, parts.path, query, "")))


def _scrub(message: str, url: str, others: tuple[str, ...] = ()) -> str:
    """`message` with the URL's secrets (and `others`, the token) taken out, should a library have quoted them."""
    parts = urlsplit(url)
    values = [pair.partition("=")[2] for pair in parts.query.split("&")]
    secrets = [s for s in (parts.query, parts.username, parts.password, parts.fragment, *values, *others) if s]
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "REDACTED")
    return message


def _reason(exc: requests.RequestException) -> str:
    """Why a request failed, without the URL requests quotes (MaxRetryError's "with url: ...")."""
    cause: BaseException = exc
    if exc.args and isinstance(exc.args[0], MaxRetryError) and exc.args[0].reason is not None:
        cause = exc.args[0].reason
    return printable(str(cause), REASON_WIDTH)
