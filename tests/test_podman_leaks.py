"""Containers left running by killed `podman run -i --rm` clients, for real (rootful Podman,
tests/runtimes_env.py): a host shell starts them, SIGKILLs each client once its container
runs, and lives on; `watch` follows Podman's events file, charges the containers to the
host (`orphaned_containers`), as the replay of its recording does, and `reap --yes`, on
that watch's ledger, removes them through Podman's Docker-compatible API (`podman system
service` on a socket of the test's own, given by CONTAINER_HOST).  About 30-90 s on a
loaded machine: the podman runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from conftest import wait_for
from live import LiveCommand
from runtimes_env import LABEL, PODMAN_RUNTIME, SESSION, PodmanEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLIENTS = 8  # [rules.orphaned_containers] min_containers
ALERT_TIMEOUT = 180.0

# Starts the clients, waits until each one's container runs, SIGKILLs the clients (the
# containers run on under conmon), and lives on as their host.
HOST = """
pids=""
for i in $(seq {clients}); do
    podman --runtime {runtime} run -i --rm --network none --label {session} --label {case} \\
        --name "sw-leak-$$-$i" {image} sleep 1000 < /dev/null > /dev/null 2>&1 &
    pids="$pids $!"
done
tries=0
until [ "$(podman ps -q --filter label={case} | wc -l)" -ge {clients} ] || [ $tries -ge 600 ]; do
    sleep 0.5; tries=$((tries + 1))
done
kill -9 $pids
sleep 1000
"""


@pytest.fixture
def case(podman_env: PodmanEnv) -> Iterator[str]:
    """A label of this test's own; its containers are removed at the end, whatever happened."""
    label = f"spawnwatch.test.case={uuid.uuid4().hex[:12]}"
    yield label
    leftovers = podman_env.cli("ps", "-aq", "--filter", f"label={label}", check=False).split()
    if leftovers:
        podman_env.cli("rm", "-f", "-t", "0", *leftovers, check=False)


@pytest.fixture
def podman_api(tmp_path: Path) -> Iterator[str]:
    """Podman's Docker-compatible API on a socket of this test's own (CONTAINER_HOST)."""
    socket = tmp_path / "podman.sock"
    service = subprocess.Popen(["podman", "--runtime", str(PODMAN_RUNTIME), "system", "service", "--time=0",
                                f"unix://{socket}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(socket.exists, "podman system service's socket", deadline=60.0)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)


def running(podman_env: PodmanEnv, case: str) -> set[str]:
    return set(podman_env.cli("ps", "-q", "--no-trunc", "--filter", f"label={case}").split())


def firing(records: list[dict], pid: int) -> list[dict]:
    return [r for r in records if r.get("kind") == "alert" and r["state"] == "firing"
            and r["rule"] == "orphaned_containers" and r["spawner"]["pid"] == pid]


def reap(container_host: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "spawnwatch", "reap", *args, "--json"], capture_output=True,
                          text=True, timeout=180, env={**os.environ, "CONTAINER_HOST": container_host})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_podman_clients_killed_by_their_host_leave_containers_charged_to_it_and_reap_removes_them(
        podman_env: PodmanEnv, case: str, podman_api: str, tmp_path: Path) -> None:
    state_dir = str(tmp_path / "state")  # not /run/spawnwatch: other sessions' watches may run
    script = HOST.format(clients=CLIENTS, runtime=PODMAN_RUNTIME, session=f"{LABEL}={SESSION}", case=case,
                         image=podman_env.image)
    recording = tmp_path / "leak.msgpack"
    with LiveCommand("watch", "--json", "--state-dir", state_dir, "--record", str(recording)) as watch:
        host = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            records = watch.wait_for(lambda rs: firing(rs, host.pid), "an orphaned_containers alert for the host",
                                     timeout=ALERT_TIMEOUT)
            alert = firing(records, host.pid)[0]
            leaked = {c["id"] for c in alert["containers"]}
            assert len(leaked) == alert["orphans"] >= CLIENTS and leaked <= running(podman_env, case), alert
            assert all(c["runtime"] == "podman" and c["image"] == podman_env.image for c in alert["containers"])
            assert alert["signature"].startswith("podman run "), alert["signature"]

            select = ("--signature", alert["signature"], "--spawner", str(host.pid), "--state-dir", state_dir)
            dry = reap(podman_api, *select)
            assert {c["id"] for c in dry["containers"]} == leaked and leaked <= running(podman_env, case), dry
            ended = reap(podman_api, *select, "--yes")
            # said whole (a dict's repr is cut short): which containers went where, and why
            assert set(ended["ended"]) == leaked and ended["failed"] == [], json.dumps(
                {k: ended[k] for k in ("ended", "gone", "skipped", "failed", "unremoved")})
            wait_for(lambda: not running(podman_env, case), "the reaped containers to stop", deadline=60.0)
            wait_for(lambda: not podman_env.cli("ps", "-aq", "--filter", f"label={case}"),
                     "the reaped --rm containers to be removed", deadline=60.0)
        finally:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()

    replay = subprocess.run([sys.executable, "-m", "spawnwatch", "watch", "--replay", str(recording), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    replayed = firing([json.loads(line) for line in replay.stdout.splitlines()], host.pid)
    assert replayed and [(c["id"], c["runtime"]) for c in replayed[0]["containers"]] == [
        (c["id"], c["runtime"]) for c in alert["containers"]], replay.stderr[-2000:]
