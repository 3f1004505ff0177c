"""`watch --webhook` against a real Alertmanager: a steady leak stays active there for
as long as it lasts, far past Alertmanager's resolve_timeout, and is resolved there
once the leak is ended."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from prometheus_env import AlertmanagerServer
from live import LiveCommand
from spawnwatch.sinks.alertmanager import ENDS_AFTER_RESENDS

pytestmark = [pytest.mark.root, pytest.mark.slow]

RESOLVE_TIMEOUT_S = 10
RESEND_EVERY_S = 2.5
ENDS_AT_LEAD_S = ENDS_AFTER_RESENDS * RESEND_EVERY_S  # only re-sends keep the alert alive past it
# Three resolve_timeouts, and more than four times endsAt's lead: either alone would end an
# alert nobody re-sent.
HOLD_S = max(3 * RESOLVE_TIMEOUT_S, 4 * ENDS_AT_LEAD_S) + 5
# One `sleep` a little more than a second apart, never ended: accumulating.
LEAK = "while true; do sleep 1000 & sleep 1.1; done"


@pytest.fixture
def alertmanager(tmp_path):
    server = AlertmanagerServer(tmp_path, resolve_timeout_s=RESOLVE_TIMEOUT_S)
    yield server
    server.stop()


def leak_alerts(alertmanager: AlertmanagerServer, leak_pid: int) -> list[dict]:
    return [a for a in alertmanager.alerts() if a["labels"].get("spawner_pid") == str(leak_pid)]


def test_a_steady_leak_stays_active_in_alertmanager_and_resolves_when_ended(alertmanager):
    url = f"{alertmanager.url}/api/v2/alerts"
    with LiveCommand("watch", "--json", "--webhook", url, "--resend-every", str(RESEND_EVERY_S)) as watch:
        leak = subprocess.Popen(["sh", "-c", LEAK], start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not leak_alerts(alertmanager, leak.pid):
                assert time.monotonic() < deadline, f"the leak never reached Alertmanager: {watch.stderr[-2000:]}"
                time.sleep(1)
            (first,) = leak_alerts(alertmanager, leak.pid)
            assert first["labels"]["alertname"] == "spawnwatch_accumulating"
            assert first["labels"]["signature"] == "sleep <n>" and first["labels"]["host"] == os.uname().nodename
            assert first["status"]["state"] == "active"
            # No change of counts needed: the leak grows, but a steady one must hold just the same.
            held_until = time.monotonic() + HOLD_S
            while time.monotonic() < held_until:
                held = leak_alerts(alertmanager, leak.pid)
                assert len(held) == 1, f"Alertmanager let the alert of a lasting leak go: {held}"
                current = held[0]
                assert current["status"]["state"] == "active"
                assert current["startsAt"] == first["startsAt"], "one alert, started once"
                time.sleep(2)
            assert current["endsAt"] > first["endsAt"] and current["updatedAt"] > first["updatedAt"]
        finally:
            os.killpg(leak.pid, signal.SIGKILL)
            leak.wait()
        deadline = time.monotonic() + 60
        while leak_alerts(alertmanager, leak.pid):
            assert time.monotonic() < deadline, "Alertmanager still holds the alert of an ended leak"
            time.sleep(1)
    resolved = [r for r in watch.records if r["kind"] == "alert" and r["state"] == "resolved"
                and r["spawner"]["pid"] == leak.pid]
    assert resolved, "watch never resolved the ended leak"
    # Every alert line says where and when, as lines gathered from many hosts need.
    for line in (r for r in watch.records if r["kind"] == "alert" and r["spawner"]["pid"] == leak.pid):
        assert line["host"] == os.uname().nodename
        raised = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert abs((datetime.now(timezone.utc) - raised).total_seconds()) < 600, line["time"]
