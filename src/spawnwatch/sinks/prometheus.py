"""A Prometheus exposition of what `watch` sees, on 127.0.0.1 unless told otherwise,
over TLS and basic auth when a web config says so (sinks/exporter_web.py).

Named as Prometheus' naming guide says: counters end in `_total` and are the
running totals the session reports (the kernel's event and loss counts, the
table's bookkeeping, the notifications sent), exposed by a custom collector from
the latest totals rather than mirrored into gauges; sizes are gauges of their own.

    spawnwatch_build_info{version,python}                 1
    spawnwatch_events_total{kind}                          events received from the kernel
    spawnwatch_events_lost_total{kind}                     events the kernel side could not deliver
    spawnwatch_<name>_total                                other counts of the session (decode errors, ...)
    spawnwatch_table_events_total{event}                   process-table bookkeeping (evicted, missed_exits, ...)
    spawnwatch_evicted_total{table}                        entries a bounded table let go past its limit, by table
    spawnwatch_processes, spawnwatch_groups                sizes of the process table and of the groups
    spawnwatch_notifications_total{result}                 webhook / Alertmanager posts: sent, failed, dropped
    spawnwatch_receiver_notifications_total{receiver,result}  the same by receiver URL (as many as configured)
    spawnwatch_internal_errors_total{component}            background work that failed and was restarted
    spawnwatch_alerts_total{rule}                          alerts raised (firing for the first time)
    spawnwatch_alert_firing{rule,signature,container,namespace,pod}  1 while the alert fires
    spawnwatch_alert_{live,zombies,orphans,rss_bytes}{...} the group an alert is about
    spawnwatch_pids_{current,limit}{container,namespace,pod,cgroup}  the cgroups under a pids limit that groups are in
    spawnwatch_pids_refused_forks_total{...}               forks those limits refused
    process_*                                              the watcher's own CPU, memory, open files

Labels are low-cardinality by design: rule, signature (normalised, bounded, and only
for groups with an alert), container name (a pod's: its Kubernetes container name), the
pod and its namespace (empty outside Kubernetes), and for a pids limit on the host its
cgroup's path (a systemd unit or slice; empty for a container).  No pids, no argv.
"""

from __future__ import annotations

import platform
import threading
from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spawnwatch import __version__
from spawnwatch.records import ALERT, PROGRESS
from spawnwatch.sinks import Record
from spawnwatch.sinks.exporter_web import WebConfig, serve

ALERT_LABELS = ("rule", "signature", "container", "namespace", "pod")
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
        yield _counted_by("spawnwatch_events", "Events received from the kernel", "kind", stats.get("events", {}))
        yield _counted_by("spawnwatch_events_lost", "Events the kernel side could not deliver", "kind",
                          stats.get("lost_by_kind", {}))
        yield _counted_by("spawnwatch_events_missed", "Events whose BPF program the kernel skipped "
                          "(it fired while another BPF program ran on the CPU)", "kind",
                          stats.get("missed_by_kind", {}))
        for name, value in sorted(stats.items()):
            if isinstance(value, int) and not isinstance(value, bool) and name != "lost":
                yield CounterMetricFamily(f"spawnwatch_{name}", f"{name.replace('_', ' ')} in this session",
                                          value=value)
        yield _counted_by("spawnwatch_evicted", "Entries a bounded table let go past its limit", "table",
                          stats.get("evicted_by_table", {}))
        yield _counted_by("spawnwatch_notifications", "Alert notifications posted", "result",
                          stats.get("notifications", {}))
        by_receiver = CounterMetricFamily("spawnwatch_receiver_notifications", "Alert notifications posted, by "
                                          "receiver (each --alertmanager replica, the --webhook)",
                                          labels=["receiver", "result"])
        for receiver, counts in sorted(stats.get("notifications_by_receiver", {}).items()):
            for result, count in sorted(counts.items()):
                by_receiver.add_metric([receiver, result], count)
        yield by_receiver
        yield _counted_by("spawnwatch_internal_errors", "Failures of background work, by component "
                          "(each logged once; the component is started again)", "component",
                          stats.get("internal_errors", {}))
        bookkeeping = CounterMetricFamily("spawnwatch_table_events", "Process table and group bookkeeping",
                                          labels=["event"])
        for name, value in sorted(table.items()):
            if name in SIZES:
                yield GaugeMetricFamily(f"spawnwatch_{name}", SIZES[name], value=value)
            else:
                bookkeeping.add_metric([name], value)
        yield bookkeeping


def _counted_by(name: str, documentation: str, label: str, counts: dict[str, int]) -> CounterMetricFamily:
    """A counter with one sample per key of `counts`, the key its one label."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class ActiveAlerts(Collector):
    """The alerts firing now, as gauges per (rule, signature, container, namespace, pod).  Two spawners
    leaking one signature in one container share a label set (pids are no labels), so
    each series aggregates the alerts behind it: the alert ends in Prometheus only when
    the last of them resolves, and the counts are their sums."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._firing: dict[tuple[Any, ...], Record] = {}  # bounded by the alerts firing at once

    def update(self, record: Record) -> bool:
        """Take a firing or resolved alert; True when it fires for the first time."""
        key = (record["rule"], record["signature"], *_container(record), record["spawner"]["pid"])
        with self._lock:
            if record["state"] == "firing":
                new = key not in self._firing
                self._firing[key] = record
                return new
            self._firing.pop(key, None)
            return False

    def collect(self) -> Iterator[Any]:
        with self._lock:
            records = list(self._firing.values())
        sums: dict[tuple[str, ...], dict[str, int]] = {}
        for record in records:
            labels = (record["rule"], record["signature"][:SIGNATURE_LABEL_MAX], *_container(record))
            totals = sums.setdefault(labels, dict.fromkeys(GROUP_FIELDS, 0))
            for name in GROUP_FIELDS:
                totals[name] += record[name]
        firing = GaugeMetricFamily("spawnwatch_alert_firing", "1 while an alert fires", labels=ALERT_LABELS)
        groups = {
            name: GaugeMetricFamily(f"spawnwatch_alert_{name}",
                                    f"{name.replace('_', ' ')} of the groups the alerts are about",
                                    labels=ALERT_LABELS)
            for name in GROUP_FIELDS
        }
        for labels, totals in sorted(sums.items()):
            firing.add_metric(labels, 1)
            for name in GROUP_FIELDS:
                groups[name].add_metric(labels, totals[name])
        yield firing
        yield from groups.values()


class PidsLimits(Collector):
    """The pids limits the groups live under, as of the last sweep of the sampler: the
    `pids_limits` of a progress record, each {"container" (name, or "" on the host),
    "namespace" and "pod" (a pod's container; "" otherwise, and in older records),
    "cgroup" (path on the host, "" for a container), "current", "limit", "refused"}."""

    LABELS = ("container", "namespace", "pod", "cgroup")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: list[Record] = []

    def update(self, limits: Iterable[Record]) -> None:
        with self._lock:
            self._limits = list(limits)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            limits = list(self._limits)
        current = GaugeMetricFamily("spawnwatch_pids_current", "Tasks (threads too) under a cgroup's pids limit",
                                    labels=self.LABELS)
        limit = GaugeMetricFamily("spawnwatch_pids_limit", "A cgroup's pids limit (pids.max)", labels=self.LABELS)
        refused = CounterMetricFamily("spawnwatch_pids_refused_forks", "Forks a cgroup's pids limit refused",
                                      labels=self.LABELS)
        for row in limits:
            labels = (row["container"], row.get("namespace", ""), row.get("pod", ""), row["cgroup"])
            current.add_metric(labels, row["current"])
            limit.add_metric(labels, row["limit"])
            refused.add_metric(labels, row["refused"])
        yield current
        yield limit
        yield refused


def _container(record: Record) -> tuple[str, str, str]:
    """(container name, namespace, pod) of an alert; "" for what it does not say (the
    host, a container outside Kubernetes, a recording older than pods)."""
    container = record.get("container") or {}
    return container.get("name") or "", container.get("namespace") or "", container.get("pod") or ""


class Metrics:
    def __init__(self, address: tuple[str, int] = (DEFAULT_HOST, 0), web: WebConfig | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        Gauge("spawnwatch_build_info", "spawnwatch's version", ("version", "python"),
              registry=self.registry).labels(__version__, platform.python_version()).set(1)
        self.totals = SessionTotals()
        self.registry.register(self.totals)
        self.active = ActiveAlerts()
        self.registry.register(self.active)
        self.pids = PidsLimits()
        self.registry.register(self.pids)
        self.alerts = Counter("spawnwatch_alerts", "Alerts raised (firing for the first time)", ("rule",),
                              registry=self.registry)
        self._server = serve(make_wsgi_app(self.registry), address, web)
        self.scheme = "https" if web is not None and web.tls is not None else "http"
        self.host = address[0]
        self.port = self._server.server_port

    def evicted_by_table(self) -> dict[str, int]:
        """Evictions of the endpoint's own bounded tables (sinks' counters: the session's stats take them)."""
        return self._server.evicted_by_table()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def send(self, record: Record) -> None:
        kind = record.get("kind")
        if kind == ALERT and self.active.update(record):
            self.alerts.labels(record["rule"]).inc()
        elif kind == PROGRESS:  # the session's totals so far, and its table's bookkeeping
            self.totals.update(record, record.get("table") or {})
            self.pids.update(record.get("pids_limits") or ())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
