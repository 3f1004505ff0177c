"""A slow leak fires once it reaches the threshold, however long that takes: a
recording of two days on a busy host, one leaked `npm exec` every 10 minutes (about
MetaMCP's 6 an hour), replayed through `watch --replay`.

Nothing that keeps a group's history may expire it while its members live: not the
idle-group expiry (`idle_group_s`, 10 minutes: longer than no gap here, shorter than
the leak), not the lineage's retention of reaped processes, not the spawn-rate horizon."""

from __future__ import annotations

import json

from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.events import to_record
from streams import Stream, host
from workloads import SERVER_SIGNATURE, SUPERVISOR_PID, Schedule, npm_child

DAY_S = 86400.0
LEAK_EVERY_S = 600.0
CRON_EVERY_S = 300.0  # the host's own churn: a short job every 5 minutes, each reaped at once
START = 10.0


def two_days_of_a_slow_leak() -> Stream:
    plan = Schedule(Stream(t=START))
    leaked = int(2 * DAY_S // LEAK_EVERY_S)
    for i in range(leaked):
        npm_child(plan, START + i * LEAK_EVERY_S, "accumulate")
    for i in range(int(2 * DAY_S // CRON_EVERY_S)):
        def job(t: float = START + 30 + i * CRON_EVERY_S) -> None:
            pid = plan.stream.spawn(SUPERVISOR_PID, "sh", "-c", "logrotate")
            plan.at(t + 0.5, lambda: plan.stream.end(pid))

        plan.at(START + 30 + i * CRON_EVERY_S, job)
    return plan.run()


def test_a_leak_of_one_child_every_10_minutes_fires_at_the_threshold_and_stays_firing_for_two_days(tmp_path):
    stream = two_days_of_a_slow_leak()
    recording = tmp_path / "two-days.jsonl"
    with open(recording, "w") as f:
        for item in [host(5.0), *stream.events]:
            f.write(json.dumps(to_record(item)) + "\n")
    result = CliRunner().invoke(main, ["watch", "--replay", str(recording), "--json"], catch_exceptions=False)
    alerts = [r for r in map(json.loads, result.stdout.splitlines())
              if r["kind"] == "alert" and r["rule"] == "accumulating" and r["signature"] == SERVER_SIGNATURE]
    assert alerts, result.stdout[-2000:]
    first, last = alerts[0], alerts[-1]
    assert first["state"] == "firing" and first["live"] == 9  # the 9th child, 80 minutes in
    assert last["state"] == "firing" and last["live"] >= 2 * DAY_S // LEAK_EVERY_S - 1
    assert all(a["state"] == "firing" for a in alerts)  # never forgotten, never resolved meanwhile
