"""Alerts POSTed to a URL from a background thread, so the event loop never waits on the network.

The body is the alert record itself, or, when the URL is an Alertmanager's
(`.../api/v2/alerts`), Alertmanager's own format: a list of one alert with
labels (alertname, rule, signature, container, severity), annotations and
startsAt/endsAt.  The queue is bounded: when the receiver cannot keep up,
records are dropped and counted, never buffered without end.
"""

from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Callable

from spawnwatch.sinks import Record

QUEUE_SIZE = 256
TIMEOUT_S = 5.0
_STOP = object()


def alertmanager_body(record: Record, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(timezone.utc)
    stamp = now.isoformat().replace("+00:00", "Z")
    container = record["container"]["name"] if record.get("container") else ""
    alert: dict[str, Any] = {
        "labels": {
            "alertname": f"spawnwatch_{record['rule']}",
            "rule": record["rule"],
            "signature": record["signature"],
            "container": container,
            "spawner_comm": record["spawner"]["comm"],
            "severity": "warning",
        },
        "annotations": {
            "summary": record["message"],
            "spawner_pid": str(record["spawner"]["pid"]),
            "live": str(record["live"]),
            "orphans": str(record["orphans"]),
            "zombies": str(record["zombies"]),
            "rss_bytes": str(record["rss_bytes"]),
        },
    }
    if record["state"] == "resolved":
        alert["endsAt"] = stamp
    else:
        alert["startsAt"] = stamp
    return [alert]


class Webhook:
    def __init__(
        self,
        url: str,
        on_error: Callable[[str], None] = lambda message: None,
        queue_size: int = QUEUE_SIZE,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.url = url
        self.alertmanager = url.rstrip("/").endswith("/api/v2/alerts")
        self.timeout = timeout
        self.sent = 0
        self.dropped = 0  # queue full: the receiver is too slow or down
        self.failed = 0  # the POST itself failed
        self._on_error = on_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._post_loop, name="spawnwatch-webhook", daemon=True)
        self._thread.start()

    def send(self, record: Record) -> None:
        if record.get("kind") != "alert":
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self, wait_s: float = TIMEOUT_S) -> None:
        """Deliver what is queued (for at most about `wait_s`), then stop the thread."""
        try:
            self._queue.put(_STOP, timeout=wait_s)
        except queue.Full:
            pass
        self._thread.join(timeout=wait_s + self.timeout)

    def _post_loop(self) -> None:
        while True:
            record = self._queue.get()
            if record is _STOP:
                return
            body = alertmanager_body(record) if self.alertmanager else record
            request = urllib.request.Request(
                self.url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "spawnwatch"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read()
                self.sent += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failed += 1
                self._on_error(f"webhook {self.url}: {getattr(exc, 'reason', exc)}")
