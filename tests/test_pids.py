"""pids limits: the pids rule on synthetic streams with pids samples, replayed through the
CLI; the cgroup reading on the real cgroup tree; and a leak in a container started with
`--pids-limit 64` under a live `watch`."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from spawnwatch.cli import main
from spawnwatch.config import load
from spawnwatch.events import to_record
from streams import Stream, host
from workloads import SUPERVISOR_PID, run

CONTAINER = 7  # the container's cgroup id in the synthetic streams


def leak_under_limit(limit: int | None, seconds: int = 120, tasks_before: int = 1, fill_to: int | None = None) -> Stream:
    """A shell in a container forking one `sleep 1000` a second that never ends; the sampler
    reads the container's pids controller every second.  Past the limit the forks fail (no
    fork event) and pids.events counts them."""
    s = Stream(t=10, cgroup_id=CONTAINER)
    shell = s.spawn(SUPERVISOR_PID, "sh", "-c", "while :; do sleep 1000 & sleep 1; done")
    current, refused = tasks_before, 0
    for second in range(seconds):
        s.at(11 + second)
        if fill_to is not None and current >= fill_to:
            pass
        elif limit is None or current < limit:
            s.spawn(shell, "sleep", "1000")
            current += 1
        else:
            refused += 1
        s.pids(current, limit, refused)
    return s


def pids_alerts(alerts):
    return [(t, a) for t, a in alerts if a.rule == "pids"]


def test_fires_at_80_percent_before_the_first_refused_fork():
    alerts = pids_alerts(run(leak_under_limit(64)))
    t, first = alerts[0]
    assert first.state == "firing" and first.severity == "warning"
    assert first.pids_limit.refused == 0 and 0.8 * 64 <= first.pids_limit.current < 64
    assert first.signature == "sleep <n>" and first.live >= 50
    assert "fills the pids limit of cgroup /docker/leaky with `sleep <n>`" in first.message
    assert "no fork refused yet" in first.message
    record = first.to_record()
    assert record["pids_limit"] == {"cgroup": "/docker/leaky", "current": first.pids_limit.current, "limit": 64,
                                    "refused_forks": 0}


def test_refused_forks_make_it_critical_at_once_and_are_re_reported_as_they_grow():
    alerts = pids_alerts(run(leak_under_limit(64, seconds=150)))
    refused = [(t, a) for t, a in alerts if a.pids_limit.refused]
    t, critical = refused[0]
    # the shell and 63 sleeps reach the limit at t = 73; the next fork, a second later, is refused
    assert critical.severity == "critical" and critical.pids_limit.refused == 1 and t == 74
    assert "1 forks refused by it" in critical.message
    counts = [a.pids_limit.refused for _, a in refused]
    assert len(counts) >= 3 and counts == sorted(counts) and len(set(counts)) == len(counts)
    assert all(a.state == "firing" for _, a in refused)


def test_no_fire_below_the_share():
    assert pids_alerts(run(leak_under_limit(640))) == []


def test_no_fire_without_a_limit():
    assert pids_alerts(run(leak_under_limit(None))) == []


def test_the_share_comes_from_the_config():
    config = load()
    config = replace(config, detect=replace(config.detect, pids=replace(config.detect.pids, share=0.5)))
    _, first = pids_alerts(run(leak_under_limit(64), config=config))[0]
    assert first.pids_limit.current == 32


def test_a_few_children_near_a_limit_are_no_leak():
    """Threads fill the limit, not children: no group to name."""
    s = leak_under_limit(64, seconds=3, tasks_before=60)
    assert pids_alerts(run(s)) == []


def test_the_group_holding_most_of_the_limit_is_named():
    s = Stream(t=10, cgroup_id=CONTAINER)
    pool = s.spawn(SUPERVISOR_PID, "node", "pool.js")
    for _ in range(8):
        s.spawn(pool, "worker", "--serve")
    shell = s.spawn(SUPERVISOR_PID, "sh", "-c", "while :; do sleep 1000 & sleep 1; done")
    for second in range(50):
        s.at(11 + second)
        s.spawn(shell, "sleep", "1000")
        s.pids(10 + second + 1, 64)
    alerts = pids_alerts(run(s))
    assert alerts and {a.signature for _, a in alerts} == {"sleep <n>"}


def cleared(ended: int) -> Stream:
    """The leak under a limit of 64, stopped at t = 80 with forks refused from t = 74; at
    t = 90 `ended` of its sleeps end."""
    s = leak_under_limit(64, seconds=70)
    sleeps = [e.pid for e in s.events if e.kind.value == "exec" and e.comm == "sleep"]
    s.at(90)
    for pid in sleeps[:ended]:
        s.end(pid)
    s.pids(64 - ended, 64, refused=7)
    return s


def test_recent_refusals_hold_the_alert_below_the_share():
    hold = load().detect.pids.hold_s
    alerts = pids_alerts(run(cleared(40), until=80 + hold + 10))
    [(t, last)] = [(t, a) for t, a in alerts if a.state == "resolved"]
    assert 80 + hold <= t <= 80 + hold + 7 and last.severity == "critical" and last.pids_limit.refused == 7


def test_the_alert_resolves_once_the_leak_is_gone():
    alerts = pids_alerts(run(cleared(63), until=120))
    [(t, last)] = [(t, a) for t, a in alerts if a.state == "resolved"]
    assert 90 <= t <= 90 + load().alerts.resolve_after_s + 2


def test_replay_of_a_recording_raises_the_same_pids_alerts(tmp_path):
    stream = leak_under_limit(64, seconds=100)
    recording = tmp_path / "pids.jsonl"
    lines = [to_record(host())] + [to_record(e) for e in stream.events]
    recording.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(main, ["watch", "--replay", str(recording), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    replayed = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("rule") == "pids"]
    expected = [a.to_record() for _, a in pids_alerts(run(stream))]
    assert [r["pids_limit"] for r in replayed] == [r["pids_limit"] for r in expected]
    assert [r["message"] for r in replayed] == [r["message"] for r in expected]
    assert replayed[0]["pids_limit"]["refused_forks"] == 0 and replayed[-1]["pids_limit"]["refused_forks"] > 0
