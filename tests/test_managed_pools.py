"""Process managers and per-connection servers at work raise nothing, told apart by what
their children hold, not by the [detect] servers list.

circus scaling a socket-serving watcher from 2 to 12 with `circusctl incr` every 2 s,
supervisord starting a 12-process fcgi-program group one by one, Dovecot with IMAP
logins growing to 15 concurrent sessions, xinetd spawning a per-connection service for
12 connections opened one by one: all at once, for more than a minute, under two
`watch --json` sessions, one with the default config and one with `servers = []`.
None of these spawners is on the list, and their children run programs of their own:
before detect.serving, accumulating reported all four (circus's within 21 s).

The watches stop before the daemons do: what is judged is the work, not the shutdown
(circusd reaps its stopped workers only after its graceful timeout).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from conftest import missing_prerequisite
from corpus import IMAP_SESSIONS, MANAGED_POOL, PER_CONNECTION, Circus, Dovecot, Supervisord, Xinetd, run_for
from live import LiveCommand, Recording, boottime_now, saw_then_evaluated
from test_healthy_corpus import Ours, alerts_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

WORK_S = 65.0  # every pool works this long under watch (at least a minute)
SETTLE_S = 3.0  # three evaluations after the work ends
RECORDED_S = 120.0  # generous bound on a watch recording the work and evaluating SETTLE_S past its end


@pytest.fixture
def prerequisites() -> None:
    for tool in ("xinetd", "dovecot", "pgrep"):
        if shutil.which(tool) is None:
            missing_prerequisite(f"{tool} is not installed (sudo make setup)")
    for tool in ("circusd", "circusctl", "supervisord", "supervisorctl"):
        if not Path(sys.executable).with_name(tool).exists():
            missing_prerequisite(f"{tool} is not installed in the venv (sudo make setup)")


def test_managed_pools_and_per_connection_servers_at_work_raise_nothing(prerequisites, tmp_path) -> None:
    without_list = tmp_path / "no-servers.toml"
    without_list.write_text("[detect]\nservers = []\n")
    recordings = [Recording(tmp_path / "defaults.msgpack"), Recording(tmp_path / "bare.msgpack")]
    with Circus() as circus, Supervisord() as supervisord, Dovecot() as dovecot, Xinetd() as xinetd, \
            LiveCommand("watch", "--json", "--record", str(recordings[0].path)) as defaults, \
            LiveCommand("watch", "--json", "--config", str(without_list), "--record", str(recordings[1].path)) as bare:
        ours = Ours()
        run_for(WORK_S, [circus.load, supervisord.load, dovecot.load, xinetd.load])
        ended = boottime_now()
        # Each watch saw the work and evaluated SETTLE_S past its end: a lagging or blind one fails here.
        recorded = [recording.wait_for(saw_then_evaluated(ours.pids, ended + SETTLE_S), timeout=RECORDED_S,
                                       what="events of the pools and an evaluation after them")
                    for recording in recordings]
    ours.stop()
    for records in recorded:  # ...from the pools' first spawns, a minute at least before the work ended
        times = [r["ts"] for r in records if r["kind"] in ("fork", "exec") and r["pid"] in ours.pids]
        assert ended - min(times) >= 60
    # The corpus did what it claims.
    assert circus.peak_workers >= MANAGED_POOL
    assert supervisord.peak_workers >= MANAGED_POOL
    assert dovecot.peak_sessions >= IMAP_SESSIONS
    assert xinetd.peak_services >= PER_CONNECTION
    for watch in (defaults, bare):
        assert watch.returncode == 0, watch.stderr[-2000:]
        assert watch.stats["lost"] == 0, watch.stats
    # ...and neither watch found anything to say about it.
    for records in (defaults.records, bare.records):
        alerts = alerts_of(records, ours)
        assert alerts == [], "\n".join(f"{a['rule']} {a['signature']!r} spawner {a['spawner']}: {a['message']}"
                                        for a in alerts)
