"""Alerts to Alertmanager's API (`POST /api/v2/alerts`), as a Prometheus server sends them.

Alertmanager ends an alert by itself at its `endsAt`, or `resolve_timeout` after
the last update when it has none, so a client must keep telling it that a firing
alert still holds.  Like Prometheus' notifier, this one re-sends every active alert
every `resend_every_s` (below Alertmanager's default resolve_timeout of 5 min),
whether its counts changed or not, with `endsAt` a few re-sends ahead: the alert
stays active while spawnwatch runs and says so, and ends on its own if spawnwatch
dies.  A resolved alert is sent once with `endsAt` = now.  `startsAt` is when the
alert first fired.

Labels are chosen to group well and stay few: alertname (one per rule), rule,
signature, container, host, severity, and the spawner (comm and pid: two spawners
leaking the same signature are two alerts).  Counts, memory and the message are
annotations.

Alertmanager replicas of an HA pair do not pass alerts to each other: like Prometheus,
this client sends every alert to every URL it is given, each from a thread and queue of
its own, so a replica that is down or slow delays and drops only its own deliveries.
"""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from spawnwatch.records import ALERT
from spawnwatch.sinks import Record, rfc3339
from spawnwatch.sinks.http import Delivery, summed_counts

RESEND_EVERY_S = 60.0
ENDS_AFTER_RESENDS = 3  # endsAt is this many re-send intervals ahead
API_PATH = "/api/v2/alerts"


def is_alertmanager_url(url: str) -> bool:
    return url.rstrip("/").endswith(API_PATH)


def alert_labels(record: Record, host: str) -> dict[str, str]:
    container = record.get("container") or {}
    spawner = record["spawner"]
    return {
        "alertname": f"spawnwatch_{record['rule']}",
        "rule": record["rule"],
        "signature": record["signature"],
        "container": container.get("name") or "",
        "host": record.get("host") or host,
        "severity": record.get("severity") or "warning",
        "spawner_comm": spawner["comm"],
        "spawner_pid": str(spawner["pid"]),
        # A pod's container: kube-state-metrics' label names, so alerts join with its series.
        **{key: str(container[key]) for key in ("namespace", "pod") if container.get(key)},
    }


def alert_annotations(record: Record) -> dict[str, str]:
    containers = record.get("containers") or []
    return {
        "summary": record["message"],
        **{key: str(record[key]) for key in ("live", "spawned", "exited", "zombies", "orphans", "rss_bytes")},
        # orphaned_containers: the leaked containers, by name
        **({"containers": " ".join(c["name"] for c in containers)} if containers else {}),
    }


class Alertmanager:
    def __init__(
        self,
        *urls: str,
        generator_url: str,
        resend_every_s: float = RESEND_EVERY_S,
        host: str | None = None,
        **delivery: Any,
    ) -> None:
        self.generator_url = generator_url
        self.resend_every_s = resend_every_s
        self.host = host or socket.gethostname()
        self._lock = threading.Lock()
        # The firing alerts, by their identity (the label set minus severity, which may
        # rise while the alert holds): (labels, annotations, startsAt).
        self._active: dict[tuple, tuple[dict[str, str], dict[str, str], datetime]] = {}
        # Each replica re-sends on its own timer: one that is down delays nobody else's re-sends.
        self.deliveries = [Delivery(url, every_s=resend_every_s, on_timer=self._resend, **delivery) for url in urls]

    def send(self, record: Record) -> None:
        if record.get("kind") != ALERT:
            return
        now = datetime.now(timezone.utc)
        labels = alert_labels(record, self.host)
        identity = tuple(sorted((k, v) for k, v in labels.items() if k != "severity"))
        ended = []
        notes = alert_annotations(record)
        with self._lock:
            known = self._active.pop(identity, None)
            started = known[2] if known else now
            ends = now  # resolved
            if record["state"] == "firing":
                self._active[identity] = (labels, notes, started)
                ends = now + self._ahead
                if known and known[0]["severity"] != labels["severity"]:
                    ended.append(self._alert(*known, now))  # the old label set ends
        body = [*ended, self._alert(labels, notes, started, ends)]
        for delivery in self.deliveries:
            delivery.submit(body)

    def counts(self) -> dict[str, int]:
        return summed_counts(self.deliveries)

    def close(self) -> None:
        for delivery in self.deliveries:
            delivery.close()

    @property
    def _ahead(self) -> timedelta:
        return timedelta(seconds=self.resend_every_s * ENDS_AFTER_RESENDS)

    def _resend(self) -> list[dict[str, Any]] | None:
        now = datetime.now(timezone.utc)
        with self._lock:
            active = list(self._active.values())
        if not active:
            return None
        return [self._alert(labels, notes, started, now + self._ahead) for labels, notes, started in active]

    def _alert(self, labels: dict[str, str], annotations: dict[str, str], starts: datetime, ends: datetime) -> dict[str, Any]:
        return {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(starts.timestamp()),
            "endsAt": rfc3339(ends.timestamp()),
            "generatorURL": self.generator_url,
        }
