"""A `docker run` client of another engine is never charged a container of the engine
`watch` follows, for real: a second dockerd on a socket of its own (private_engine: its own
data root, exec root and pidfile, stopped at the end), the same busybox image in both.

A host starts three clients of the second engine (`-H unix://...`, `--host=unix://...`,
`DOCKER_HOST=unix://...` in its environment), then a keeper (another process, which stays)
starts a client of the local engine for the same image, so its container is created while
the host's clients still wait for theirs: before the fix the oldest of them claimed it.
The host kills its three clients; then, as a control, it starts one client of the local
engine and kills it.  `watch` (min_containers = 1) charges the host the control's container
alone: the keeper's is in no alert and not in the ledger, and `reap --yes` leaves it
running.  About 30 s (most of it the second dockerd and `watch` starting)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import docker_env as docker_env_module
from conftest import wait_for
from docker_env import DOCKER_CLI, PrivateEngine
from live import LiveCommand

pytestmark = [pytest.mark.root, pytest.mark.docker]

ALERT_TIMEOUT = 90.0
CONFIG = """
[rules.orphaned_containers]
min_containers = 1  # the one container the control client leaves
"""

HOST = """
run="--network none --label $LABEL"
docker -H "$SECOND" run -i --rm $run "$IMAGE" sleep 300 </dev/null >/dev/null 2>&1 & a=$!
docker --host="$SECOND" run -i --rm $run "$IMAGE" sleep 300 </dev/null >/dev/null 2>&1 & b=$!
DOCKER_HOST="$SECOND" docker run -i --rm $run "$IMAGE" sleep 300 </dev/null >/dev/null 2>&1 & c=$!
echo remote
read go
kill -KILL $a $b $c
docker run -i --rm $run --label sw.role=control "$IMAGE" sleep 300 </dev/null >/dev/null 2>&1 & d=$!
echo control
read go
kill -KILL $d
echo killed
read go
"""


@pytest.fixture
def label() -> str:
    return f"spawnwatch.test.case={uuid.uuid4().hex[:12]}"


def import_busybox(cli, root: Path) -> str:
    """The busybox image of PrivateEngine, imported under its name through `cli`."""
    tarball = root / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    cli("import", "--change", "ENV PATH=/bin", "-", PrivateEngine.IMAGE, stdin=tarball.read_bytes())
    return PrivateEngine.IMAGE


def running(cli, label: str, *filters: str) -> set[str]:
    return set(cli("ps", "-q", "--no-trunc", "--filter", f"label={label}", *filters).split())


@pytest.fixture
def engines(docker_env, private_engine, label, tmp_path) -> Iterator[tuple]:
    image = import_busybox(docker_env.cli, tmp_path)
    assert import_busybox(private_engine.cli, tmp_path) == image
    yield docker_env, private_engine, image
    for cli in (docker_env.cli, private_engine.cli):
        leftovers = cli("ps", "-aq", "--filter", f"label={label}").split()
        if leftovers:
            cli("rm", "-f", *leftovers)


def line(process: subprocess.Popen, expected: str) -> None:
    said = process.stdout.readline().strip()
    assert said == expected, f"the host said {said!r}, not {expected!r}: {process.stderr.read()[-2000:]}"


def test_clients_of_another_engine_are_never_charged_the_local_container(engines, label, tmp_path) -> None:
    local, second, image = engines
    local_env = {**os.environ, "DOCKER_HOST": local.host}
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    state_dir = tmp_path / "state"
    processes: list[subprocess.Popen] = []
    with LiveCommand("watch", "--json", "--config", str(config), "--state-dir", str(state_dir), env=local_env) as watch:
        try:
            host = subprocess.Popen(
                ["sh", "-c", HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**local_env, "SECOND": second.host, "IMAGE": image, "LABEL": label, "PATH": os.environ["PATH"]},
            )
            processes.append(host)
            line(host, "remote")
            wait_for(lambda: len(running(second.cli, label)) == 3, "the second engine running the host's three", 60)
            keeper = subprocess.Popen(
                [DOCKER_CLI, "run", "-i", "--rm", "--network", "none", "--label", label,
                 "--label", docker_env_module.SESSION_LABEL, image, "sleep", "300"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=local_env,
            )
            processes.append(keeper)
            wait_for(lambda: len(running(local.cli, label)) == 1, "the keeper's container", 60)
            [kept] = running(local.cli, label)
            host.stdin.write("go\n")
            host.stdin.flush()
            line(host, "control")
            wait_for(lambda: len(running(local.cli, label, "--filter", "label=sw.role=control")) == 1,
                     "the control's container", 60)
            [control] = running(local.cli, label, "--filter", "label=sw.role=control")
            host.stdin.write("go\n")
            host.stdin.flush()
            line(host, "killed")
            records = watch.wait_for(lambda rs: [r for r in rs if r.get("rule") == "orphaned_containers"],
                                     "an orphaned_containers alert", timeout=ALERT_TIMEOUT)
            alerts = [r for r in records if r.get("rule") == "orphaned_containers"]
            ledger = json.loads((state_dir / "alerts.json").read_text())
            alert = alerts[0]
            done = subprocess.run(
                [sys.executable, "-m", "spawnwatch", "reap", "--signature", alert["signature"],
                 "--spawner", str(host.pid), "--state-dir", str(state_dir), "--yes", "--json"],
                capture_output=True, text=True, timeout=120, env=local_env)
            after = running(local.cli, label)
            keeper_alive = keeper.poll() is None
        finally:
            for process in reversed(processes):
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
    assert {(a["spawner"]["pid"], tuple(c["id"] for c in a["containers"])) for a in alerts} == {(host.pid, (control,))}
    assert alert["containers"][0]["ambiguous"] is False
    listed = {c["id"] for alert in ledger["alerts"] for c in alert.get("containers", ())}
    assert kept not in listed and control in listed
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ended"] == [control]
    assert kept in after and keeper_alive  # the keeper's container runs on, its client with it
    assert all(r.get("rule") != "orphaned_containers" or kept not in str(r["containers"]) for r in watch.records)
