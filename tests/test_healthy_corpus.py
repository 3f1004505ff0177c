"""Real servers doing their ordinary work under `watch` raise nothing.

Servers on the [detect] servers list: PostgreSQL with a pool growing one connection a
second to 16 busy ones, Docker starting 12 detached containers one every 1.5 s, OpenSSH
with 12 concurrent sessions opened one by one, Apache prefork whose workers grow with
held keep-alive connections, gunicorn whose workers --max-requests recycles.  Process
managers and per-connection servers on no list, told apart by what their children hold:
circus scaling a socket-serving watcher from 2 to 12 with `circusctl incr` every 2 s,
supervisord starting a 12-process fcgi-program group one by one, Dovecot with IMAP
logins growing to 15 concurrent sessions, xinetd spawning a per-connection service for
12 connections opened one by one (before detect.serving, accumulating reported all four,
circus's within 21 s).

All nine at once, for more than a minute, under two `watch --json` sessions: one with the
default config, one without the [detect] servers list (what is told apart live must be
told apart without it: forked workers, re-exec'd sshd, daemon hand-offs); and a third
`watch` started late, once every pool is full, which sees them from /proc alone.

Each server first shows it really did what the corpus claims (pool size, sessions,
workers grown, workers recycled), so a broken set-up cannot pass silently.  The watches
stop before the process managers do: what is judged is their work, not their shutdown
(circusd reaps its stopped workers only after its graceful timeout).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from conftest import IN_CI, missing_prerequisite
from corpus import (
    HTTP_CONNECTIONS,
    IMAP_SESSIONS,
    MANAGED_POOL,
    PER_CONNECTION,
    POOL_SIZE,
    SSH_SESSIONS,
    Apache,
    Circus,
    Dovecot,
    Gunicorn,
    Postgres,
    Sshd,
    Supervisord,
    Xinetd,
    run_for,
)
from live import LiveCommand, Recording, boottime_now, saw_then_evaluated

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

WORK_S = 65.0  # every server works this long under watch (at least a minute)
CONTAINERS = 12
SETTLE_S = 3.0  # three evaluations after the work ends
RECORDED_S = 120.0  # generous bound on a watch recording the work and evaluating SETTLE_S past its end
LATE_WATCH_AT_S = 45.0  # the pools are full by then (16 s to 24 s of growth)


@pytest.fixture
def prerequisites() -> None:
    for tool in ("/usr/sbin/sshd", "/usr/sbin/apache2", "runuser", "ssh", "ssh-keygen", "pgrep", "xinetd", "dovecot"):
        if shutil.which(tool) is None:
            missing_prerequisite(f"{tool} is not installed (sudo make setup)")
    for tool in ("circusd", "circusctl", "supervisord", "supervisorctl"):
        if not Path(sys.executable).with_name(tool).exists():
            missing_prerequisite(f"{tool} is not installed in the venv (sudo make setup)")
    if Postgres().bin is None:
        missing_prerequisite("PostgreSQL is not installed (sudo make setup)")
    for module in ("psycopg2", "gunicorn"):
        try:
            __import__(module)
        except ImportError:
            missing_prerequisite(f"{module} is not importable (sudo make setup)")


def watch_late(records: list[dict], stop: threading.Event) -> None:
    """A `watch` started once every pool is full: it sees them from /proc alone, no exec."""
    if stop.wait(LATE_WATCH_AT_S):
        return
    done = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--json", "--duration", "5"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records.extend(json.loads(line) for line in done.stdout.splitlines())


def start_containers(docker_env, started: list[str], stop: threading.Event) -> None:
    """`docker run -d` one every 1.5 s: the client returns once the container runs, and exits."""
    for _ in range(CONTAINERS):
        started.append(docker_env.run("sleep", "600"))
        if stop.wait(1.5):
            return


class Ours:
    """Every pid of this test's world, polled while it runs: this process and all it
    starts, and the Docker engine (dockerd, containerd, the shims) with everything below it."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            roots = [psutil.Process()] + [p for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"]
            for root in roots:
                try:
                    self.pids.update([root.pid] + [c.pid for c in root.children(recursive=True)])
                except psutil.NoSuchProcess:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def alerts_of(records: list[dict], ours: Ours) -> list[dict]:
    alerts = [r for r in records if r["kind"] == "alert"]
    if IN_CI:
        return alerts  # the machine runs nothing else: no alert at all
    # A shared development machine runs other people's work meanwhile: only ours counts.
    return [a for a in alerts if a["spawner"]["pid"] in ours.pids or set(a["pids"]) & ours.pids]


def test_real_servers_and_process_managers_at_work_raise_nothing(prerequisites, docker_env, tmp_path) -> None:
    without_list = tmp_path / "no-servers.toml"
    without_list.write_text("[detect]\nservers = []\n")
    recordings = [Recording(tmp_path / "defaults.msgpack"), Recording(tmp_path / "bare.msgpack")]
    with Circus() as circus, Supervisord() as supervisord, Dovecot() as dovecot, Xinetd() as xinetd, \
            LiveCommand("watch", "--json", "--record", str(recordings[0].path)) as defaults, \
            LiveCommand("watch", "--json", "--config", str(without_list), "--record", str(recordings[1].path)) as bare, \
            Postgres() as postgres, Sshd() as sshd, Apache() as apache, Gunicorn() as gunicorn:
        ours = Ours()
        containers: list[str] = []
        late: list[dict] = []
        run_for(WORK_S, [postgres.load, sshd.load, apache.load, gunicorn.load,
                         circus.load, supervisord.load, dovecot.load, xinetd.load,
                         lambda stop: start_containers(docker_env, containers, stop),
                         lambda stop: watch_late(late, stop)])
        sessions = sshd.live_sessions()
        ended = boottime_now()
        # Each watch saw the work and evaluated SETTLE_S past its end: a lagging or blind one fails here.
        recorded = [recording.wait_for(saw_then_evaluated(ours.pids, ended + SETTLE_S), timeout=RECORDED_S,
                                       what="events of the corpus and an evaluation after it")
                    for recording in recordings]
    ours.stop()
    for records in recorded:  # ...while the corpus worked for a minute at least
        times = [r["ts"] for r in records if r["kind"] in ("fork", "exec") and r["pid"] in ours.pids]
        assert max(times) - min(times) >= 60
    # The corpus did what it claims.
    assert postgres.peak_backends >= POOL_SIZE
    assert sessions >= SSH_SESSIONS
    assert apache.peak_workers >= HTTP_CONNECTIONS  # grown from StartServers 2
    assert len(gunicorn.workers_seen) > 3 * 2  # every worker replaced at least once
    assert len(containers) == CONTAINERS
    assert circus.peak_workers >= MANAGED_POOL
    assert supervisord.peak_workers >= MANAGED_POOL
    assert dovecot.peak_sessions >= IMAP_SESSIONS
    assert xinetd.peak_services >= PER_CONNECTION
    for watch in (defaults, bare):
        assert watch.returncode == 0, watch.stderr[-2000:]
        assert watch.stats["lost"] == 0, watch.stats
    # ...and neither watch found anything to say about it.
    assert late and late[0]["kind"] == "ready" and late[-1]["kind"] == "stats"
    for records in (defaults.records, bare.records, late):
        alerts = alerts_of(records, ours)
        assert alerts == [], "\n".join(f"{a['rule']} {a['signature']!r} spawner {a['spawner']}: {a['message']}"
                                        for a in alerts)

