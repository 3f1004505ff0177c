"""The shipped Grafana dashboard, checked against the real thing: one `watch` sees one leak
in a cgroup under a pids limit and posts its alert to a real Alertmanager; a real Prometheus
scrapes it; every panel's every query (and the variables' label queries) returns series.
Grafana itself is not needed: its variables are replaced as Grafana would ("All").
About 30 s on an idle host."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, missing_prerequisite
from live import LiveCommand
from prometheus_env import AlertmanagerServer, PrometheusServer, free_port
from spawnwatch.adapters.cgroups import cgroup2_mount
from test_pids import pids_cgroup, remove_cgroup  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.root, pytest.mark.slow]

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards_out" / "spawnwatch.json"
# What Grafana puts in place of the variables with "All" selected and a short range.
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": ".+", "$instance": ".+"}
SLEEPER = "dashsleeper"
# accumulating: a child a little more than a second apart, never ended, under a pids limit.
LEAK = "while true; do {sleeper} 1000 & sleep 1.1; done"


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the test does not stand in for: {expr}"
    return expr


def dashboard_queries() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {f"{p['title']} [{t['refId']}]": grafana_expr(t["expr"])
               for p in dashboard["panels"] for t in p["targets"]}
    assert len(queries) >= 10
    return queries


@pytest.fixture
def own_cgroup(pids_cgroup) -> Iterator[list[Path]]:  # noqa: F811
    """The `cgroup.procs` files that put a process in a cgroup of its own: the pids one, and on
    a cgroup v1 host a cgroup2 one too (the kernel side names a group's cgroup by its cgroup2
    id: the leak must not share it with the rest of the host)."""
    (pids_cgroup.dir / "pids.max").write_text("500")
    if (pids_cgroup.dir / "cgroup.controllers").exists():
        yield [pids_cgroup.dir / "cgroup.procs"]
        return
    mount = cgroup2_mount()
    if mount is None:
        missing_prerequisite("no cgroup2 hierarchy to give the leak a cgroup id of its own")
    unified = Path(mount) / pids_cgroup.dir.name
    unified.mkdir()
    try:
        yield [pids_cgroup.dir / "cgroup.procs", unified / "cgroup.procs"]
    finally:
        remove_cgroup(unified)


def start_in(procs: list[Path], script: str) -> subprocess.Popen:
    def enter() -> None:
        for path in procs:
            path.write_text("0")

    return subprocess.Popen(["sh", "-c", script], preexec_fn=enter, stderr=subprocess.DEVNULL)


def test_every_dashboard_query_returns_series_during_a_real_leak(tmp_path, own_cgroup):
    shutil.copy("/bin/sleep", tmp_path / SLEEPER)
    queries = dashboard_queries()
    port = free_port()
    alertmanager = AlertmanagerServer(tmp_path)
    prometheus = leak = None
    try:
        with LiveCommand("watch", "--json", "--metrics-address", f"127.0.0.1:{port}",
                         "--webhook", f"{alertmanager.url}/api/v2/alerts", "--state-dir", str(tmp_path / "state")) as watch:
            prometheus = PrometheusServer(tmp_path, {f"127.0.0.1:{port}": {}}, [], alertmanager)
            leak = start_in(own_cgroup, LEAK.format(sleeper=tmp_path / SLEEPER))
            empty = dict(queries)
            deadline = time.monotonic() + 150
            while empty:
                empty = {title: expr for title, expr in empty.items() if not prometheus.query(expr)}
                assert time.monotonic() < deadline, (
                    f"no series for {sorted(empty)}; the watcher's alerts: "
                    f"{[r for r in watch.records if r.get('kind') == 'alert'][-2:]}; stderr: {watch.stderr[-500:]}"
                )
                time.sleep(1)
            for variable in ("job", "instance"):
                match = urllib.parse.quote("spawnwatch_build_info")
                assert prometheus.get(f"/api/v1/label/{variable}/values?match[]={match}")["data"], variable
    finally:
        if leak is not None:
            leak.kill()  # its children die with the cgroups (the fixtures)
            leak.wait()
        if prometheus is not None:
            prometheus.stop()
        alertmanager.stop()
