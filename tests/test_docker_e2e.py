"""The incident, in Docker: the leaky MCP supervisor runs as a container's command (like
MetaMCP), `watch` on the host names the container in its alert; and an OOM kill inside a
memory-limited container is reported with the container and the group."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from live import LiveCommand
from spawnwatch.simulate import PACKAGE

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.npm]

ALERT_TIMEOUT = 120.0  # the first `npm exec` in a fresh container installs the package


@pytest.fixture
def package(tmp_path: Path) -> Path:
    # A copy, mounted read-write: npm chmods the package's bin files.
    copy = tmp_path / "mcp-servers"
    shutil.copytree(PACKAGE, copy)
    return copy


def run_supervisor(docker_env, package: Path, *args: str, options: tuple[str, ...] = ()) -> tuple[str, str]:
    """Start the supervisor as a container's command; (container id, name)."""
    name = f"spawnwatch-e2e-{uuid.uuid4().hex[:8]}"
    container_id = docker_env.run(
        "node", "/pkg/supervisor.js", *args, options=("-v", f"{package}:/pkg", *options), name=name
    )
    return container_id, name


def alerts_in(records: list[dict], container_id: str, rule: str) -> list[dict]:
    return [
        r for r in records
        if r.get("kind") == "alert" and r["state"] == "firing" and r["rule"] == rule
        and (r["container"] or {}).get("id") == container_id
    ]


def test_watch_names_the_container_of_a_leaky_supervisor(docker_env, package) -> None:
    with LiveCommand("watch", "--json") as watch:
        # Started after `watch`: the container is new to it, known from the event stream.
        container_id, name = run_supervisor(docker_env, package, "accumulate", "--interval", "1", "--max", "16")
        records = watch.wait_for(lambda rs: alerts_in(rs, container_id, "accumulating"), "an accumulating alert for the container",
                                 timeout=ALERT_TIMEOUT)
        supervisor_pid = docker_env.pid(container_id)
    alerts = alerts_in(records, container_id, "accumulating")
    assert alerts, f"no accumulating alert for the container; stderr: {watch.stderr[-2000:]}"
    alert = alerts[0]
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image}
    assert alert["signature"] == "npm exec magic"
    assert alert["spawner"]["pid"] == supervisor_pid  # host pids, not the container's
    assert alert["spawner"]["argv"][:2] == ["node", "/pkg/supervisor.js"]
    assert alert["live"] >= 9 and alert["exited"] == 0


def test_an_oom_kill_in_a_limited_container_names_the_container_and_the_group(docker_env, package) -> None:
    with LiveCommand("watch", "--json") as watch:
        # Each server holds 64 MiB besides node's own: the third child cannot fit in 256 MiB.
        container_id, name = run_supervisor(
            docker_env, package, "accumulate", "--interval", "1", "--memory", "64", "--max", "8",
            options=("--memory", "256m", "--memory-swap", "256m"),
        )
        records = watch.wait_for(lambda rs: alerts_in(rs, container_id, "oom"), "an oom alert for the container",
                                 timeout=ALERT_TIMEOUT)
    alerts = alerts_in(records, container_id, "oom")
    assert alerts, f"no oom alert for the container; stderr: {watch.stderr[-2000:]}"
    alert = alerts[0]
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image}
    # the victim is one of the leaked children: an `npm exec` or the server it runs
    assert alert["signature"] in ("npm exec magic", "node magic")
    assert "OOM" in alert["message"]
