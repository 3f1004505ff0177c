"""Shared test plumbing.

Tests that need root, BPF, Docker or npm declare it with a marker.  Outside CI a
missing prerequisite skips the test with the reason; in CI (CI=true) it fails,
so a broken CI machine can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The Docker fixtures (docker_session, docker_env) for every test module.
pytest_plugins = ["docker_env"]
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


def pytest_runtest_setup(item: pytest.Item) -> None:
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


@pytest.fixture
def spawnwatch_cmd() -> list[str]:
    """argv prefix that runs this checkout's CLI with the test interpreter."""
    return [sys.executable, "-m", "spawnwatch"]


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
