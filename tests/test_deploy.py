"""The deployment files, checked by the tools that run them: promtool for the alert rules."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO, missing_prerequisite

RULES = REPO / "deploy" / "prometheus" / "spawnwatch-rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        missing_prerequisite("promtool is not installed (sudo make setup installs prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent)


def test_the_alert_rules_are_valid() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    tested = promtool("test", "rules", "spawnwatch-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
