"""A fleet, for real: two watchers standing for two nodes (each its own `host` label),
scraped by one Prometheus that evaluates the shipped rules and alerts one
Alertmanager.  The leak reaches Alertmanager from both, grouped by signature and
container by Alertmanager's own routing, nothing aggregated by hand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import REPO
from live import LiveCommand
from prometheus_env import AlertmanagerServer, PrometheusServer, free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]

RULES = REPO / "deploy" / "prometheus" / "spawnwatch-rules.yml"
# accumulating: one child a little more than a second apart, never ended.  The children
# run a copy of sleep named for this test, so their signature is this test's alone.
SLEEPER = "fleetsleeper"
LEAK = f"while true; do ./{SLEEPER} 1000 & sleep 1.1; done"
NODES = ("node-a", "node-b")


def test_two_watchers_one_prometheus_the_shipped_rules_reach_alertmanager_grouped(tmp_path):
    ports = {node: free_port() for node in NODES}
    alertmanager = AlertmanagerServer(tmp_path)
    prometheus = None
    leak = None
    try:
        with LiveCommand("watch", "--json", "--metrics-address", f"127.0.0.1:{ports['node-a']}") as node_a, \
                LiveCommand("watch", "--json", "--metrics-address", f"127.0.0.1:{ports['node-b']}") as node_b:
            prometheus = PrometheusServer(
                tmp_path, {f"127.0.0.1:{ports[n]}": {"host": n} for n in NODES}, [RULES], alertmanager
            )
            shutil.copy("/bin/sleep", tmp_path / SLEEPER)
            leak = subprocess.Popen(["sh", "-c", LEAK], start_new_session=True, cwd=tmp_path)

            def leak_group() -> dict | None:
                for group in alertmanager.groups():
                    # Prometheus drops empty labels: a host leak's group has no container label.
                    if group["labels"] == {"signature": f"{SLEEPER} <n>"}:
                        return group
                return None

            deadline = time.monotonic() + 120
            while True:
                group = leak_group()
                hosts = {a["labels"].get("host") for a in (group or {}).get("alerts", ())
                         if a["labels"]["alertname"] == "SpawnwatchLeak"}
                if hosts == set(NODES):
                    break
                assert time.monotonic() < deadline, (
                    f"the leak did not reach Alertmanager from both nodes: groups {alertmanager.groups()}; "
                    f"targets up: {prometheus.query('up')}; stderr: {node_a.stderr[-500:]} {node_b.stderr[-500:]}"
                )
                time.sleep(1)
            alerts = [a for a in group["alerts"] if a["labels"]["alertname"] == "SpawnwatchLeak"]
            assert len(alerts) == 2
            for alert in alerts:
                assert alert["labels"]["rule"] == "accumulating" and alert["labels"]["severity"] == "warning"
                assert alert["annotations"]["summary"].startswith(f"accumulating: `{SLEEPER} <n>` on 127.0.0.1:")
                assert alert["status"]["state"] == "active"
            assert {a["labels"]["instance"] for a in alerts} == {f"127.0.0.1:{p}" for p in ports.values()}
    finally:
        if leak is not None:
            os.killpg(leak.pid, signal.SIGKILL)
            leak.wait()
        if prometheus is not None:
            prometheus.stop()
        alertmanager.stop()
