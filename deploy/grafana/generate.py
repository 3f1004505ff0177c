"""spawnwatch's monitoring mixin, as code: the Grafana dashboard and the alert rules
that go with it, in the shape of node_exporter's mixin (dashboards_out/, and the alerts
beside them), written by this script instead of jsonnet (not packaged offline).

    python3 deploy/grafana/generate.py          # rewrite the generated files
    python3 deploy/grafana/generate.py --check  # exit 1 if they are out of date

The alerts are deploy/prometheus/spawnwatch-rules.yml, the one source (promtool tests
it), copied here so the mixin is complete.  Every query reads the metrics of
src/spawnwatch/sinks/prometheus.py; tests/test_dashboard_e2e.py runs each against a
real Prometheus scraping a real `watch` during a real leak.  Panels are selected by
the `job` and `instance` variables; `host` is the label a fleet's scrape config adds
(README, "Run it as a service"), absent on a single host.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "spawnwatch-rules.yml"
DASHBOARD = HERE / "dashboards_out" / "spawnwatch.json"
ALERTS = HERE / "prometheus_alerts.yaml"

SELECTOR = 'job=~"$job", instance=~"$instance"'
WINDOW = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH, HEIGHT, COLUMNS = 12, 8, 2


def query(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": legend}


# (title, unit, what it tells the on-call, queries)
PANELS = [
    ("Leaks firing, by host and container", "short",
     "Alerts each watcher holds now (1 per rule, signature and container); the SpawnwatchLeak alert.",
     [query(f"sum by (instance, host, container, rule) (spawnwatch_alert_firing{{{SELECTOR}}})",
            "{{instance}} {{container}} {{rule}}")]),
    ("Live children per leaking group", "short",
     "Live processes of each group an alert is about; a line that only climbs is a leak.",
     [query(f"sum by (instance, container, signature) (spawnwatch_alert_live{{{SELECTOR}}})",
            "{{instance}} {{container}} {{signature}}")]),
    ("Memory of leaking groups", "bytes",
     "Resident memory of the live processes of each group an alert is about.",
     [query(f"sum by (instance, container, signature) (spawnwatch_alert_rss_bytes{{{SELECTOR}}})",
            "{{instance}} {{container}} {{signature}}")]),
    ("Spawn rate", "ops",
     "Forks and execs per second the kernel reported, per host.",
     [query(f'sum by (instance, kind) (rate(spawnwatch_events_total{{{SELECTOR}, kind=~"fork|exec"}}[{WINDOW}]))',
            "{{instance}} {{kind}}")]),
    ("Processes and groups tracked", "short",
     "Size of each watcher's process table and how many groups of identical children it holds.",
     [query(f"sum by (instance) (spawnwatch_processes{{{SELECTOR}}})", "{{instance}} processes"),
      query(f"sum by (instance) (spawnwatch_groups{{{SELECTOR}}})", "{{instance}} groups")]),
    ("Pids headroom", "short",
     "Tasks a pids limit (--pids-limit, TasksMax) still allows, for the cgroups leaking groups live in; "
     "at 0 every fork there fails.",
     [query(f"min by (instance, container, cgroup) "
            f"(spawnwatch_pids_limit{{{SELECTOR}}} - spawnwatch_pids_current{{{SELECTOR}}})",
            "{{instance}} {{container}}{{cgroup}}")]),
    ("Forks refused by pids limits", "short",
     "Forks a pids limit refused (EAGAIN); the SpawnwatchForksRefused alert.",
     [query(f"sum by (instance, container, cgroup) "
            f"(increase(spawnwatch_pids_refused_forks_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} {{container}}{{cgroup}}")]),
    ("Lost and missed kernel events", "short",
     "Events the ring buffer could not take (lost) and BPF programs the kernel skipped (missed); "
     "above 0, leaks may be seen late (SpawnwatchEventsLost).",
     [query(f"sum by (instance, kind) (increase(spawnwatch_events_lost_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} lost {{kind}}"),
      query(f"sum by (instance, kind) (increase(spawnwatch_events_missed_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} missed {{kind}}")]),
    ("Alert deliveries", "short",
     "Alerts raised, and notifications posted to the webhook or Alertmanager: sent, failed, dropped "
     "(SpawnwatchNotificationsFailing).",
     [query(f"sum by (instance, rule) (increase(spawnwatch_alerts_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} raised {{rule}}"),
      query(f"sum by (instance, result) (increase(spawnwatch_notifications_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} {{result}}")]),
    ("Internal errors", "short",
     "Background work that failed and was restarted, by component; the watcher's log says why.",
     [query(f"sum by (instance, component) "
            f"(increase(spawnwatch_internal_errors_total{{{SELECTOR}}}[{WINDOW}]))",
            "{{instance}} {{component}}")]),
    ("Watchers up", "short",
     "1 while Prometheus scrapes the watcher (SpawnwatchDown, SpawnwatchAbsent).",
     [query(f"up{{{SELECTOR}}}", "{{instance}}")]),
    ("Watcher CPU", "percentunit",
     "CPU the watcher itself uses; a starved watcher loses events.",
     [query(f"rate(process_cpu_seconds_total{{{SELECTOR}}}[{WINDOW}])", "{{instance}}")]),
]


def panel(number: int, title: str, unit: str, description: str, queries: list[dict]) -> dict:
    return {
        "id": number + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"x": (number % COLUMNS) * WIDTH, "y": (number // COLUMNS) * HEIGHT, "w": WIDTH, "h": HEIGHT},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, **q} for i, q in enumerate(queries)],
    }


def variable(name: str, label: str, definition: str) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": definition, "refId": name}, "definition": definition,
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".+",
        "current": {"text": "All", "value": "$__all"}, "sort": 1,
    }


def dashboard() -> dict:
    return {
        "uid": "spawnwatch",
        "title": "spawnwatch",
        "description": "Processes that keep spawning identical children: leaks by host and container, "
                       "and the watchers' own health. Generated by deploy/grafana/generate.py.",
        "tags": ["spawnwatch"],
        "timezone": "utc",
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("job", "Job", "label_values(spawnwatch_build_info, job)"),
            variable("instance", "Instance", 'label_values(spawnwatch_build_info{job=~"$job"}, instance)'),
        ]},
        "annotations": {"list": []},
        "links": [],
        "panels": [panel(number, *spec) for number, spec in enumerate(PANELS)],
    }


def generated() -> dict[Path, str]:
    header = ("# Generated by deploy/grafana/generate.py from deploy/prometheus/spawnwatch-rules.yml: "
              "edit that file, then run the script.\n")
    return {
        DASHBOARD: json.dumps(dashboard(), indent=2) + "\n",
        ALERTS: header + RULES.read_text(),
    }


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for path, text in generated().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if check and stale:
        print("out of date (run python3 deploy/grafana/generate.py): "
              + ", ".join(str(p.relative_to(HERE.parent.parent)) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
