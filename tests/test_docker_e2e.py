"""The incident, in Docker: the leaky MCP supervisor runs as a container's command (like
MetaMCP), `watch` on the host names the container in its alert; and an OOM kill inside a
memory-limited container is reported with the container and the group."""

from __future__ import annotations

import re
import shlex
import shutil
import uuid
from pathlib import Path

import psutil
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


def run_supervisor(docker_env, package: Path, *args: str, options: tuple[str, ...] = (),
                   under_shell: bool = False) -> tuple[str, str]:
    """Start the supervisor as a container's command, its PID 1, or `under_shell`: `sh -c
    '<supervisor>; echo done'`, where the shell stays PID 1 like an entrypoint script
    (MetaMCP's); (container id, name)."""
    name = f"spawnwatch-e2e-{uuid.uuid4().hex[:8]}"
    command = ("node", "/pkg/supervisor.js", *args)
    if under_shell:
        command = ("sh", "-c", f"{shlex.join(command)}; echo done")
    container_id = docker_env.run(*command, options=("-v", f"{package}:/pkg", *options), name=name)
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
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
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
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    # the victim is one of the leaked children: an `npm exec` or the server it runs
    assert alert["signature"] in ("npm exec magic", "node magic")
    assert "OOM" in alert["message"]


def test_orphans_adopted_by_an_entrypoint_shell_are_charged_to_the_node_host(docker_env, package) -> None:
    # MetaMCP's shape: the shell stays PID 1, the node host below it kills only `npm exec`
    # at the end of each session, and every server is adopted by the shell.
    with LiveCommand("watch", "--json") as watch:
        container_id, name = run_supervisor(docker_env, package, "orphan", "--interval", "1.5", "--max", "30",
                                            "--memory", "5", under_shell=True)
        records = watch.wait_for(lambda rs: alerts_in(rs, container_id, "orphaned"), "an orphaned alert for the container",
                                 timeout=ALERT_TIMEOUT)
        shell_pid = docker_env.pid(container_id)
        alert = alerts_in(records, container_id, "orphaned")[0]
        adopters = {psutil.Process(pid).ppid() for pid in alert["pids"]}
    assert adopters == {shell_pid}
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    assert alert["signature"] == "npm exec magic"
    host = alert["spawner"]
    assert host["argv"][:2] == ["node", "/pkg/supervisor.js"] and host["ppid"] == shell_pid  # host pids
    # The shell reaps whatever it adopted that exits (busybox sh waits for any child while
    # it waits for its job): here the servers live on, and nothing is a zombie.
    assert alert["orphans"] >= 8 and "zombies" not in alert["message"]


def test_orphans_that_exit_under_a_pid_1_that_never_reaps_stay_in_the_leak_as_zombies(docker_env, package) -> None:
    # The node host is PID 1 itself and never waits for what it did not start: each server
    # exits 3 s after its `npm exec` was killed and stays a zombie of the host.
    with LiveCommand("watch", "--json") as watch:
        container_id, name = run_supervisor(docker_env, package, "orphan", "--interval", "1.5", "--max", "30",
                                            "--memory", "5", "--linger", "3")

        def with_zombies(records: list[dict]) -> list[dict]:
            return [a for a in alerts_in(records, container_id, "orphaned") if "zombies under their adopter" in a["message"]]

        records = watch.wait_for(with_zombies, "an orphaned alert counting zombies", timeout=ALERT_TIMEOUT)
        supervisor_pid = docker_env.pid(container_id)
    alert = with_zombies(records)[0]
    assert alert["container"] == {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    assert alert["signature"] == "npm exec magic" and alert["spawner"]["pid"] == supervisor_pid
    alive, zombies = (int(n) for n in re.search(r"(\d+) alive, (\d+) zombies", alert["message"]).groups())
    assert alive + zombies == alert["orphans"] >= 8 and zombies >= 1
    for pid in alert["pids"][alive:]:  # zombies until the container ends: nobody reaps them
        zombie = psutil.Process(pid)
        assert zombie.status() == psutil.STATUS_ZOMBIE and zombie.ppid() == supervisor_pid
