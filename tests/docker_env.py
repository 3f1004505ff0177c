"""A real Docker engine and the test image, for tests marked `docker`.

conftest.py loads this module as a plugin: a test takes the `docker_env` fixture.
Once per session it starts dockerd with
scripts/start-dockerd.sh when none answers (stopping it again at the end of the
session; under pytest-xdist, once every worker is done) and builds the busybox+node image with scripts/build-test-image.sh; after
each test it removes the containers the test started, even when the test failed.
A missing prerequisite skips (fails in CI) via conftest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, missing_prerequisite, removing_what_the_test_starts

LABEL = "spawnwatch.test"
# This session's value of LABEL: a session removes only its own leftovers, never those of
# another test session running beside it on the same engine.
SESSION = uuid.uuid4().hex[:12]
SESSION_LABEL = f"{LABEL}={SESSION}"
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

    def run(self, *command: str, options: tuple[str, ...] = (), name: str | None = None,
            image: str | None = None, network: str | None = "none") -> str:
        """Start a detached container (of the test image, without network, unless told
        otherwise: `network=None` leaves it to `options`); returns its id."""
        name = name or f"spawnwatch-test-{uuid.uuid4().hex[:8]}"
        networking = ("--network", network) if network else ()
        container_id = self.cli(
            "run", "-d", *networking, "--label", SESSION_LABEL, "--name", name, *options, image or self.image, *command
        )
        self.containers.append(container_id)
        return container_id

    def pid(self, container_id: str) -> int:
        return int(self.cli("inspect", "-f", "{{.State.Pid}}", container_id))

    def remove(self, container_id: str) -> None:
        self.cli("rm", "-f", container_id, check=False)

    def remove_all(self) -> None:
        leftovers = self.cli("ps", "-aq", "--filter", f"label={SESSION_LABEL}", check=False).split()
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


ENGINE_ANSWERED_AT_START = pytest.StashKey[bool]()


def _is_xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_xdist_controller(session.config):
        session.config.stash[ENGINE_ANSWERED_AT_START] = _engine_answers()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller stops the engine a worker started (start-dockerd.sh stops only its own)."""
    if _is_xdist_controller(session.config) and not session.config.stash.get(ENGINE_ANSWERED_AT_START, True):
        _script("start-dockerd.sh", "--stop")


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
    # Under pytest-xdist another worker may still use the engine when this one ends: the
    # controller stops it, once every worker is done (pytest_sessionfinish below).
    own_engine = not already_running and not os.environ.get("PYTEST_XDIST_WORKER")
    env = DockerEnv(host=host, image=built.stdout.strip(), started_here=own_engine)
    try:
        yield env
    finally:
        env.remove_all()
        if env.started_here:
            _script("start-dockerd.sh", "--stop")


@pytest.fixture
def docker_env(docker_session: DockerEnv) -> Iterator[DockerEnv]:
    yield from removing_what_the_test_starts(docker_session)


class PrivateEngine:
    """A dockerd of the test's own (socket, data and exec roots in a temp dir), which the
    test may stop and start again without touching the engine other tests share.  Its one
    image is busybox alone, imported from the host's busybox-static."""

    IMAGE = "spawnwatch-busybox:test"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = f"unix://{root}/docker.sock"
        self.pidfile = root / "dockerd.pid"
        self.process: subprocess.Popen | None = None

    def cli(self, *args: str, stdin: bytes | None = None) -> str:
        result = subprocess.run([DOCKER_CLI, *args], capture_output=True, input=stdin, timeout=120,
                                env={**os.environ, "DOCKER_HOST": self.host})
        if result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.decode().strip()}")
        return result.stdout.decode().strip()

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")
        self.process = subprocess.Popen(
            ["dockerd", "--host", self.host, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.pidfile),
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while subprocess.run([DOCKER_CLI, "info"], capture_output=True,
                             env={**os.environ, "DOCKER_HOST": self.host}).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "dockerd.log").read_text()[-2000:]
                raise AssertionError(f"private dockerd did not answer: {tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        self.process.wait(timeout=60)
        self.process = None

    def import_busybox(self) -> str:
        image_root = self.root / "image"
        (image_root / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", image_root / "bin" / "busybox")
        for applet in ("sh", "sleep"):
            (image_root / "bin" / applet).symlink_to("busybox")
        tarball = subprocess.run(["tar", "-C", str(image_root), "-c", "."], capture_output=True, check=True).stdout
        self.cli("import", "--change", "ENV PATH=/bin", "-", self.IMAGE, stdin=tarball)
        return self.IMAGE


@pytest.fixture
def private_engine() -> Iterator[PrivateEngine]:
    if os.geteuid() != 0:
        missing_prerequisite("starting a dockerd needs root")
    for tool, path in (("dockerd", shutil.which("dockerd")), ("busybox-static", "/bin/busybox")):
        if not path or not os.path.exists(path):
            missing_prerequisite(f"{tool} is not installed (sudo make setup)")
    # A short path: the socket's must fit in sun_path (108 bytes).
    engine = PrivateEngine(Path(tempfile.mkdtemp(prefix="sw-dockerd-")))
    engine.start()
    try:
        yield engine
    finally:
        if engine.process is None:
            engine.start()  # a test that stopped it: containers left running must still go
        leftovers = engine.cli("ps", "-aq").split()
        if leftovers:
            engine.cli("rm", "-f", *leftovers)
        engine.stop()
        subprocess.run(["rm", "-rf", str(engine.root)], check=False)
