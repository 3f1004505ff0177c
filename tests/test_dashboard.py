"""The Grafana mixin in deploy/grafana is generated, and up to date with its script and
with the shipped rules (the live check of its queries: test_dashboard_e2e.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from conftest import REPO

GRAFANA = REPO / "deploy" / "grafana"


def test_the_generated_dashboard_and_alerts_are_up_to_date() -> None:
    checked = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_the_mixin_alerts_are_the_shipped_rules() -> None:
    shipped = yaml.safe_load((REPO / "deploy" / "prometheus" / "spawnwatch-rules.yml").read_text())
    assert yaml.safe_load((GRAFANA / "prometheus_alerts.yaml").read_text()) == shipped


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    dashboard = json.loads((GRAFANA / "dashboards_out" / "spawnwatch.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
