"""A real Docker engine and the test image, for tests marked `docker`.

conftest.py loads this module as a plugin: a test takes the `docker_env` fixture.
Once per session it starts dockerd with
scripts/start-dockerd.sh when none answers (stopping it again at the end of the
session) and builds the busybox+node image with scripts/build-test-image.sh; after
each test it removes the containers the test started, even when the test failed.
A missing prerequisite skips (fails in CI) via conftest.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from conftest import REPO, missing_prerequisite

LABEL = "spawnwatch.test"
DOCKER_CLI = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"


@dataclass
class DockerEnv:
    host: str  # DOCKER_HOST of the engine
    image: str
    started_here: bool
    containers: list[str] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            [DOCKER_CLI, *args],
            capture_output=True,
            input=stdin,
            env={**os.environ, "DOCKER_HOST": self.host},
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.decode().strip()}")
        return result.stdout.decode().strip()

    def run(self, *command: str, options: tuple[str, ...] = (), name: str | None = None) -> str:
        """Start a detached container of the test image without network; returns its id."""
        name = name or f"spawnwatch-test-{uuid.uuid4().hex[:8]}"
        container_id = self.cli(
            "run", "-d", "--network", "none", "--label", LABEL, "--name", name, *options, self.image, *command
        )
        self.containers.append(container_id)
        return container_id

    def pid(self, container_id: str) -> int:
        return int(self.cli("inspect", "-f", "{{.State.Pid}}", container_id))

    def remove(self, container_id: str) -> None:
        self.cli("rm", "-f", container_id, check=False)

    def remove_all(self) -> None:
        leftovers = self.cli("ps", "-aq", "--filter", f"label={LABEL}", check=False).split()
        if leftovers:
            self.cli("rm", "-f", *leftovers, check=False)


def _engine_answers() -> bool:
    try:
        return subprocess.run([DOCKER_CLI, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="session")
def docker_session() -> Iterator[DockerEnv]:
    for tool in ("dockerd", "node", "npm"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            missing_prerequisite(f"{tool} is not installed (sudo make setup)")
    already_running = _engine_answers()
    if not already_running and os.geteuid() != 0:
        missing_prerequisite("no Docker engine answers and starting one needs root")
    started = _script("start-dockerd.sh")
    if started.returncode != 0:
        missing_prerequisite(f"cannot start dockerd: {started.stderr.strip()}")
    host = started.stdout.strip()
    built = _script("build-test-image.sh", env={**os.environ, "DOCKER_HOST": host})
    if built.returncode != 0:
        missing_prerequisite(f"cannot build the test image: {built.stderr.strip()}")
    env = DockerEnv(host=host, image=built.stdout.strip(), started_here=not already_running)
    try:
        yield env
    finally:
        env.remove_all()
        if env.started_here:
            _script("start-dockerd.sh", "--stop")


@pytest.fixture
def docker_env(docker_session: DockerEnv) -> Iterator[DockerEnv]:
    started_before = len(docker_session.containers)
    yield docker_session
    for container_id in docker_session.containers[started_before:]:
        docker_session.remove(container_id)
    del docker_session.containers[started_before:]
