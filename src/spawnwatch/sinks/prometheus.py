"""A Prometheus exposition of what `watch` sees, on 127.0.0.1 unless told otherwise.

Named as Prometheus' naming guide says: counters end in `_total` and are the
running totals the session reports (the kernel's event and loss counts, the
table's bookkeeping, the notifications sent), exposed by a custom collector from
the latest totals rather than mirrored into gauges; sizes are gauges of their own.

    spawnwatch_build_info{version,python}                 1
    spawnwatch_events_total{kind}                          events received from the kernel
    spawnwatch_events_lost_total{kind}                     events the kernel side could not deliver
    spawnwatch_<name>_total                                other counts of the session (decode errors, ...)
    spawnwatch_table_events_total{event}                   process-table bookkeeping (evicted, missed_exits, ...)
    spawnwatch_processes, spawnwatch_groups                sizes of the process table and of the groups
    spawnwatch_notifications_total{result}                 webhook / Alertmanager posts: sent, failed, dropped
    spawnwatch_alerts_total{rule}                          alerts raised (firing for the first time)
    spawnwatch_alert_firing{rule,signature,container}      1 while the alert fires
    spawnwatch_alert_{live,zombies,orphans,rss_bytes}{...} the group an alert is about
    process_*                                              the watcher's own CPU, memory, open files

Labels are low-cardinality by design: rule, signature (normalised, bounded, and only
for groups with an alert) and container name.  No pids, no argv.
"""

from __future__ import annotations

import platform
import threading
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spawnwatch import __version__
from spawnwatch.sinks import Record

ALERT_LABELS = ("rule", "signature", "container")
GROUP_FIELDS = ("live", "zombies", "orphans", "rss_bytes")
SIGNATURE_LABEL_MAX = 120
SIZES = {"processes": "Processes in the table (live, zombie, and recently reaped)", "groups": "Groups of identical children"}
DEFAULT_HOST = "127.0.0.1"


class MetricsAddressError(ValueError):
    pass


def parse_address(text: str) -> tuple[str, int]:
    """`PORT` (on 127.0.0.1), `:PORT` (every interface), `HOST:PORT`, `[IPv6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host == "":
        host = "0.0.0.0"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise MetricsAddressError(f"{text!r}: write an IPv6 address in brackets, [::1]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsAddressError(f"{text!r}: the port must be a number from 0 to 65535")
    return host, int(port)


class SessionTotals(Collector):
    """The session's running totals as counters, as of the last `update`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self._table: dict[str, int] = {}

    def update(self, stats: dict[str, Any], table: dict[str, int]) -> None:
        with self._lock:
            self._stats, self._table = stats, table

    def collect(self) -> Iterator[Any]:
        with self._lock:
            stats, table = dict(self._stats), dict(self._table)
        events = CounterMetricFamily("spawnwatch_events", "Events received from the kernel", labels=["kind"])
        for kind, count in sorted(stats.get("events", {}).items()):
            events.add_metric([kind], count)
        yield events
        lost = CounterMetricFamily("spawnwatch_events_lost", "Events the kernel side could not deliver",
                                   labels=["kind"])
        for kind, count in sorted(stats.get("lost_by_kind", {}).items()):
            lost.add_metric([kind], count)
        yield lost
        for name, value in sorted(stats.items()):
            if isinstance(value, int) and not isinstance(value, bool) and name != "lost":
                yield CounterMetricFamily(f"spawnwatch_{name}", f"{name.replace('_', ' ')} in this session",
                                          value=value)
        notifications = CounterMetricFamily("spawnwatch_notifications", "Alert notifications posted",
                                            labels=["result"])
        for result, count in sorted(stats.get("notifications", {}).items()):
            notifications.add_metric([result], count)
        yield notifications
        bookkeeping = CounterMetricFamily("spawnwatch_table_events", "Process table and group bookkeeping",
                                          labels=["event"])
        for name, value in sorted(table.items()):
            if name in SIZES:
                yield GaugeMetricFamily(f"spawnwatch_{name}", SIZES[name], value=value)
            else:
                bookkeeping.add_metric([name], value)
        yield bookkeeping


class Metrics:
    def __init__(self, address: tuple[str, int] = (DEFAULT_HOST, 0)) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        Gauge("spawnwatch_build_info", "spawnwatch's version", ("version", "python"),
              registry=self.registry).labels(__version__, platform.python_version()).set(1)
        self.totals = SessionTotals()
        self.registry.register(self.totals)
        self.firing = Gauge("spawnwatch_alert_firing", "1 while the alert fires", ALERT_LABELS, registry=self.registry)
        self.alerts = Counter("spawnwatch_alerts", "Alerts raised (firing for the first time)", ("rule",),
                              registry=self.registry)
        self.group = {
            name: Gauge(f"spawnwatch_alert_{name}", f"{name.replace('_', ' ')} of the group an alert is about",
                        ALERT_LABELS, registry=self.registry)
            for name in GROUP_FIELDS
        }
        self._firing: set[tuple[str, str, str]] = set()  # bounded by the alerts firing at once
        self._server, self._thread = start_http_server(address[1], addr=address[0], registry=self.registry)
        self.host = address[0]
        self.port = self._server.server_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def send(self, record: Record) -> None:
        if record.get("kind") == "alert":
            self._alert(record)

    def progress(self, stats: dict[str, Any], table: dict[str, int] | None = None) -> None:
        """The session's totals so far (and its table's bookkeeping)."""
        self.totals.update(stats, table or {})

    def _alert(self, record: Record) -> None:
        container = record["container"]["name"] if record.get("container") else ""
        labels = (record["rule"], record["signature"][:SIGNATURE_LABEL_MAX], container)
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
                gauge.remove(*labels)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
