"""A Prometheus exposition of what `watch` sees, on 127.0.0.1 by default.

Labels are low-cardinality by design: rule, signature (normalised and bounded,
and only for groups with an alert) and container name.  No pids, no argv.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from spawnwatch.sinks import Record

ALERT_LABELS = ("rule", "signature", "container")
GROUP_FIELDS = ("live", "zombies", "orphans", "rss_bytes")


class Metrics:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry()
        self.firing = Gauge("spawnwatch_alert_firing", "1 while the alert fires", ALERT_LABELS, registry=self.registry)
        self.alerts = Counter("spawnwatch_alerts", "Alerts raised (state firing, first time)", ("rule",),
                              registry=self.registry)
        self.group = {
            name: Gauge(f"spawnwatch_alert_{name}", f"{name} of the group an alert is about", ALERT_LABELS,
                        registry=self.registry)
            for name in GROUP_FIELDS
        }
        self.events = Gauge("spawnwatch_events", "Events received from the kernel, by kind", ("kind",),
                            registry=self.registry)
        self.lost = Gauge("spawnwatch_events_lost", "Events the kernel side could not deliver (ring full), by kind",
                          ("kind",), registry=self.registry)
        self.faults = {
            name: Gauge(f"spawnwatch_{name}", help_text, registry=self.registry)
            for name, help_text in (
                ("decode_errors", "Ring-buffer records that could not be decoded (skipped)"),
                ("dead_slot_collisions", "Zombies whose kernel dead slot another exit took (settled from /proc)"),
                ("resyncs", "Process-table resyncs from /proc after lost events"),
            )
        }
        self.table = Gauge("spawnwatch_table", "Process table and group bookkeeping (sizes, evictions, misses)",
                           ("counter",), registry=self.registry)
        self._firing: set[tuple[str, str, str]] = set()  # bounded by the alerts firing at once
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port

    def send(self, record: Record) -> None:
        kind = record.get("kind")
        if kind == "alert":
            self._alert(record)
        elif kind == "stats":
            self.progress(record)

    def progress(self, stats: dict[str, Any], table: dict[str, int] | None = None) -> None:
        """Counters the session reports as it goes (and in the final stats record)."""
        for name, count in stats.get("events", {}).items():
            self.events.labels(name).set(count)
        for kind, count in stats.get("lost_by_kind", {}).items():
            self.lost.labels(kind).set(count)
        for name, gauge in self.faults.items():
            gauge.set(stats.get(name, 0))
        for name, count in (table or {}).items():
            self.table.labels(name).set(count)

    def _alert(self, record: Record) -> None:
        container = record["container"]["name"] if record.get("container") else ""
        labels = (record["rule"], record["signature"], container)
        if record["state"] == "firing":
            if labels not in self._firing:
                self._firing.add(labels)
                self.alerts.labels(record["rule"]).inc()
            self.firing.labels(*labels).set(1)
            for name in GROUP_FIELDS:
                self.group[name].labels(*labels).set(record[name])
        elif labels in self._firing:
            self._firing.discard(labels)
            for gauge in (self.firing, *self.group.values()):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
