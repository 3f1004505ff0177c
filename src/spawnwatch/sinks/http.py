"""JSON bodies POSTed from a background thread, so the event loop never waits on the network.

One `requests` session keeps the connection to the receiver open between posts;
urllib3 retries refused connections and 429/5xx answers with exponential backoff.
The queue is bounded: when the receiver cannot keep up, bodies are dropped and
counted, never buffered without end.  An optional timer asks its owner for a body
every `every_s` seconds (Alertmanager's re-sends), on the same thread.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

QUEUE_SIZE = 256
TIMEOUT_S = 5.0
RETRIES = 3  # after the first try: waits of 0.5, 1 and 2 s between them
_STOP = object()

Body = Any  # anything json-serialisable


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
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.sent = 0
        self.failed = 0  # every retry failed too
        self.dropped = 0  # the queue was full: the receiver is too slow or down
        self._on_error = on_error
        self._every_s = every_s
        self._on_timer = on_timer
        self._session = requests.Session()
        retry = Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"POST"}),
            raise_on_status=False,
        )
        self._session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=1))
        self._session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=1))
        self._session.headers["User-Agent"] = "spawnwatch"
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="spawnwatch-http", daemon=True)
        self._thread.start()

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
        self._thread.join(timeout=wait_s + self.timeout)
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
        try:
            response = self._session.post(self.url, json=body, timeout=self.timeout)
            response.raise_for_status()
            self.sent += 1
        except requests.RequestException as exc:
            self.failed += 1
            self._on_error(f"POST {self.url}: {_reason(exc)}")


def _reason(exc: requests.RequestException) -> str:
    response = exc.response
    if response is not None:
        return f"HTTP {response.status_code} {response.text[:200].strip()}"
    return str(exc.__cause__ or exc)
