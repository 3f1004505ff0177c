"""Shared test plumbing.

Tests that need root, BPF, Docker or npm declare it with a marker.  Outside CI a
missing prerequisite skips the test with the reason; in CI (CI=true) it fails,
so a broken CI machine can never pass by skipping.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest
from packaging.requirements import Requirement

import spawnwatch

REPO = Path(__file__).resolve().parents[1]
# The Docker, Podman and containerd fixtures (docker_env, runtimes_env) for every test module.
pytest_plugins = ["docker_env", "runtimes_env"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_prerequisite(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _root_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.isdir("/sys/kernel/tracing/events") and not os.path.isdir(
        "/sys/kernel/debug/tracing/events"
    ):
        return "tracefs is not mounted"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) is not importable"
    return None


def _npm_problem() -> str | None:
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


LIVE_MARKERS = ("root", "docker", "npm")
# Root's, yet safe beside the live tests (and at nice 19 there): they raise nothing a "raises
# nothing" check sees and leave the engine as they found it.  The installs trace for two
# seconds and look only for their own marker exec; the set-up script's tests export a
# created, never started, container and run apt in a chroot (the engine and the base image
# they may build are locked against the live worker's: scripts/start-dockerd.sh,
# scripts/build-base-image.sh).
BESIDE_THE_LIVE = {"test_install", "test_setup_host"}


def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        # xdist would then spread the live modules over both workers, side by side: refuse.
        raise pytest.UsageError("make test's groups need pytest < 9 (pytest-xdist's loadgroup cannot tag "
                                "pytest 9's node ids): sudo make setup-test")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's loadgroup (make test): every module with a test that traces
    the host, drives an engine or npm runs on one worker, one test at a time, as if alone
    (a "raises nothing" check in CI counts every alert on the host); each module of pure
    tests is a group of its own (its fixtures are module-scoped), run on the other worker,
    and so is each module of BESIDE_THE_LIVE ones."""
    live = {item.module.__name__ for item in items if any(item.get_closest_marker(m) for m in LIVE_MARKERS)}
    live -= BESIDE_THE_LIVE
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("live" if module in live else module))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Beside the live tests, the pure ones take only the CPU left over (nice 19, which
        # their subprocesses inherit): a watch under test must not lose events to a fuzzer.
        live = item.get_closest_marker("xdist_group").args[0] == "live"
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0 if live else 19)
        except PermissionError:  # back to 0 needs root; without it no live test runs
            pass
    if item.get_closest_marker("root"):
        problem = _root_problem()
        if problem:
            missing_prerequisite(problem)
    if item.get_closest_marker("docker") and "docker_env" not in item.fixturenames:
        # The docker_env fixture checks the engine itself; others need at least the client.
        if shutil.which("docker") is None:
            missing_prerequisite("the docker client is not installed")
    if item.get_closest_marker("npm"):
        problem = _npm_problem()
        if problem:
            missing_prerequisite(problem)


NOBODY = 65534


def _runtime_distributions(name: str) -> list[importlib.metadata.Distribution]:
    """`name` and everything it needs at run time (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = [name]
    while pending:
        dist = importlib.metadata.distribution(pending.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(found.values())


class Unprivileged:
    """Runs the CLI as `nobody`, from a world-readable copy of the package and its
    dependencies: the checkout (and its venv) may sit under a 0700 directory such as
    /root, where nobody could not even import it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        site = root / "site"
        shutil.copytree(Path(spawnwatch.__file__).parent, site / "spawnwatch",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dist in _runtime_distributions("spawnwatch"):
            if dist.metadata["Name"] == "spawnwatch":
                continue
            for file in dist.files or ():
                if ".." in file.parts:  # console scripts in the venv's bin: not needed with -m
                    continue
                source = Path(dist.locate_file(file))
                if source.is_file() and "__pycache__" not in source.parts:
                    target = site / file
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
                       | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
        home = root / "home"  # npm (simulate) writes its cache there
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "PYTHONPATH": str(site),
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        # The venv's python is a symlink inside the checkout; the interpreter it points to is not.
        self.python = os.path.realpath(sys.executable)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`spawnwatch ARGS` as nobody."""
        return subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             self.python, "-m", "spawnwatch", *args],
            capture_output=True, text=True, cwd="/", env=self.env, stdin=subprocess.DEVNULL, timeout=timeout,
        )


@pytest.fixture(scope="session")
def unprivileged():
    if os.geteuid() != 0:
        missing_prerequisite("dropping to the user nobody needs root")
    root = Path(tempfile.mkdtemp(prefix="spawnwatch-nobody-"))
    try:
        yield Unprivileged(root)
    finally:
        shutil.rmtree(root)


@pytest.fixture
def spawnwatch_cmd() -> list[str]:
    """argv prefix that runs this checkout's CLI with the test interpreter."""
    return [sys.executable, "-m", "spawnwatch"]


@pytest.fixture
def spawner() -> Iterator[subprocess.Popen]:
    """A process asleep until the test ends: the live spawner an alert or a ledger names."""
    process = subprocess.Popen(["sleep", "1000"])
    yield process
    process.kill()
    process.wait()


def removing_what_the_test_starts(engine):
    """A per-test fixture's body over a session's engine (DockerEnv, PodmanEnv): the engine, then
    the containers the test started (what its `containers` list gained) removed."""
    started_before = len(engine.containers)
    yield engine
    for container_id in engine.containers[started_before:]:
        engine.remove(container_id)
    del engine.containers[started_before:]


def wait_for(condition, what: str, deadline: float = 30.0, interval: float = 0.05):
    """Poll `condition` until it returns something truthy (returned); a generous
    deadline, never a timing assertion."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)
