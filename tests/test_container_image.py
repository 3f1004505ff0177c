"""The container image (deploy/container/Dockerfile, on a Debian 12 base made here)
runs `watch` for the whole host: it catches a leak on the host, by host pid, and a
leak in another container, by the container's name, and serves /metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import REPO
from docker_env import DockerEnv
from prometheus_env import free_port

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow]

LEAK = "while true; do {program} 1000 & sleep 1.1; done"  # accumulating


@pytest.fixture(scope="module")
def image(docker_session: DockerEnv) -> str:
    built = subprocess.run([str(REPO / "scripts" / "build-image.sh")], capture_output=True, text=True, timeout=1200,
                           env={**os.environ, "DOCKER_HOST": docker_session.host})
    assert built.returncode == 0, built.stderr[-3000:]
    return built.stdout.strip()


def test_the_containerised_watch_sees_host_and_container_leaks_and_serves_metrics(image, docker_env, tmp_path):
    port = free_port()
    name = f"spawnwatch-image-{uuid.uuid4().hex[:8]}"
    # The run README gives; SYS_ADMIN where the engine (Docker < 23) knows no CAP_BPF/CAP_PERFMON.
    watcher = docker_env.run(
        options=("--pid=host", "--cgroupns=host", "--network=host", "--cap-drop=ALL", "--cap-add=SYS_ADMIN",
                 "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro",
                 "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                 "-v", f"{docker_env.host.removeprefix('unix://')}:/var/run/docker.sock:ro",
                 "-e", f"SPAWNWATCH_WATCH_METRICS_ADDRESS=127.0.0.1:{port}"),
        image=image, network=None,
    )

    def lines() -> list[dict]:
        out = docker_env.cli("logs", watcher)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    deadline = time.monotonic() + 300  # bcc compiles the programs at start
    while not any(r["kind"] == "ready" for r in lines()):
        running = docker_env.cli("inspect", "-f", "{{.State.Running}}", watcher) == "true"
        assert running and time.monotonic() < deadline, docker_env.cli("logs", watcher)[-3000:]
        time.sleep(1)
    shutil.copy("/bin/sleep", tmp_path / "imgsleeper")
    host_leak = subprocess.Popen(["sh", "-c", LEAK.format(program="./imgsleeper")], cwd=tmp_path,
                                 start_new_session=True)
    try:
        leaky = docker_env.run("sh", "-c", LEAK.format(program="sleep"), name=name)
        deadline = time.monotonic() + 120
        while True:
            alerts = [r for r in lines() if r["kind"] == "alert" and r["state"] == "firing"]
            on_host = [a for a in alerts if a["spawner"]["pid"] == host_leak.pid]
            in_container = [a for a in alerts if (a["container"] or {}).get("name") == name]
            if on_host and in_container:
                break
            assert time.monotonic() < deadline, f"alerts so far: {alerts[-6:]}"
            time.sleep(1)
        assert on_host[0]["signature"] == "imgsleeper <n>" and on_host[0]["container"] is None
        assert in_container[0]["container"] == {"id": leaky, "name": name, "image": docker_env.image, "runtime": "docker"}
        assert in_container[0]["spawner"]["pid"] == docker_env.pid(leaky), "host pids, not the container's"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert f'spawnwatch_alert_firing{{container="{name}",namespace="",pod="",rule="accumulating",signature="sleep <n>"}} 1.0' in metrics
        assert 'signature="imgsleeper <n>"' in metrics
    finally:
        os.killpg(host_leak.pid, signal.SIGKILL)
        host_leak.wait()
