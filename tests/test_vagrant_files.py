"""The Vagrant reproduction's files hold together without booting anything: Vagrant
accepts the Vagrantfile, the shell scripts pass shellcheck, and the box carries every
package the guest's `make setup` installs (it may have no network).

Booting the VM is `sudo make vagrant-test` (minutes under emulation), not part of this.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, missing_prerequisite, run

VAGRANT_DIR = REPO / "vagrant"
SHELL_SCRIPT_DIRS = ("vagrant", "scripts", ".ci")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        missing_prerequisite(f"{tool} is not installed (sudo make vagrant-tools)")
    return path


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    with path.open("rb") as stream:
        first_line = stream.readline()
    return re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b", first_line) is not None


def shell_scripts() -> list[Path]:
    scripts = []
    for folder in SHELL_SCRIPT_DIRS:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and ".vagrant" not in path.parts and ".cache" not in path.parts and is_shell_script(path):
                scripts.append(path)
    return scripts


@pytest.mark.parametrize("driver", ["kvm", "qemu"])
def test_vagrant_accepts_the_vagrantfile(driver: str, tmp_path: Path) -> None:
    vagrant = need("vagrant")
    env = {
        **os.environ,
        "VAGRANT_CWD": str(VAGRANT_DIR),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"),
        "SPAWNWATCH_LIBVIRT_DRIVER": driver,
    }
    result = run([vagrant, "validate"], env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = need("shellcheck")
    scripts = shell_scripts()
    assert VAGRANT_DIR / "build-box.sh" in scripts
    result = run([shellcheck, "--external-sources", *map(str, scripts)], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def apt_packages_of_setup() -> set[str]:
    """Literal package names passed to apt_install in scripts/setup-host.sh."""
    text = (REPO / "scripts" / "setup-host.sh").read_text().replace("\\\n", " ")
    packages = set()
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        for call in re.findall(r"\bapt_install\s+([^;|&)]*)", code):
            packages.update(word for word in call.split() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", word))
    return packages


def test_box_carries_what_setup_installs() -> None:
    baked = {
        line.strip()
        for line in (VAGRANT_DIR / "guest-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    wanted = apt_packages_of_setup()
    assert "python3-bpfcc" in wanted, "the apt_install calls of setup-host.sh were not found"
    assert wanted <= baked, f"add to vagrant/guest-packages.txt: {sorted(wanted - baked)}"
