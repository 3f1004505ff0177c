"""`make demo` leaves the host alone: scripts/setup-host.sh, run in a Debian 12 chroot
that carries Docker CE (dummy packages with the real ones' relations), plans only the
demo's packages, keeps Docker CE in test mode, and refuses when apt would remove anything.

The chroot is the project's own Debian 12 base image (scripts/build-base-image.sh),
exported from the engine; apt needs the Debian archive (one `apt-get update`, about 40 s).
Nothing is installed in the chroot: the set-up runs with --dry-run, and an apt-get guard
there fails any real install a broken --dry-run would attempt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO, missing_prerequisite, run

# About a minute in all on an idle 2-core host (the chroot, one apt-get update, three
# simulations); apt's resolver is CPU-bound, so a loaded host needs the longer bound.
pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRIPT_IN_CHROOT = "/opt/spawnwatch/scripts/setup-host.sh"
DEMO_PACKAGES = {"python3-bpfcc", "python3-venv", "python3-pip", "nodejs", "npm"}
# The test corpus: none of it is the demo's business.
CORPUS = {
    "docker.io", "containerd", "runc", "podman", "vagrant", "vagrant-libvirt", "prometheus",
    "prometheus-alertmanager", "postgresql", "apache2", "openssh-server", "debootstrap",
    "shellcheck", "bpftool", "busybox-static", "build-essential",
}

# Docker CE as download.docker.com ships it, relations only: docker-ce conflicts with
# Debian's docker.io (and docker.io with it), containerd.io replaces containerd and runc.
DOCKER_CE = {
    "docker-ce-cli": {"Conflicts": "docker.io", "Replaces": "docker.io"},
    "containerd.io": {"Provides": "containerd, runc", "Conflicts": "containerd, runc",
                      "Replaces": "containerd, runc"},
    "docker-ce": {"Depends": "containerd.io, docker-ce-cli", "Conflicts": "docker (<< 1.5~), docker-engine, docker.io",
                  "Replaces": "docker-engine"},
}

# Any `apt-get install/remove/purge` without -s fails: a --dry-run that forgot itself
# must not install anything here.
APT_GUARD = """#!/bin/sh
for arg; do
    case $arg in -s|--simulate|--just-print|--dry-run|--recon|--no-act) exec /usr/bin/apt-get "$@" ;; esac
done
for arg; do
    case $arg in install|remove|purge|autoremove|upgrade|dist-upgrade|full-upgrade)
        echo "apt-get guard: a real '$arg' in the test chroot: apt-get $*" >&2; exit 100 ;;
    esac
done
exec /usr/bin/apt-get "$@"
"""


def dummy_deb(directory: Path, name: str, relations: dict[str, str]) -> Path:
    package = directory / name
    (package / "DEBIAN").mkdir(parents=True)
    fields = {"Package": name, "Version": "5:99.0.0-1~test", "Architecture": "all",
              "Maintainer": "spawnwatch tests <tests@invalid>",
              "Description": f"dummy {name} with the real package's relations", **relations}
    (package / "DEBIAN" / "control").write_text("".join(f"{key}: {value}\n" for key, value in fields.items()))
    result = run(["dpkg-deb", "--build", "--root-owner-group", str(package), str(directory / f"{name}.deb")])
    assert result.returncode == 0, result.stderr
    return directory / f"{name}.deb"


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run(["chroot", str(self.root), "/usr/bin/env", "-i", f"PATH={CHROOT_PATH}", "LC_ALL=C",
                    "HOME=/root", *command], timeout=timeout)

    def install_debs(self, *debs: Path) -> None:
        inside = []
        for deb in debs:
            shutil.copy(deb, self.root / "tmp" / deb.name)
            inside.append(f"/tmp/{deb.name}")
        result = self.run("dpkg", "-i", *inside)
        assert result.returncode == 0, result.stdout + result.stderr

    def installed(self, package: str) -> bool:
        result = self.run("dpkg-query", "-W", "-f=${Status}", package)
        return "ok installed" in result.stdout

    def setup(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("bash", SCRIPT_IN_CHROOT, *args, timeout=600)


def base_image() -> tuple[str, str]:
    started = run([str(REPO / "scripts" / "start-dockerd.sh")], timeout=300)
    if started.returncode != 0:
        missing_prerequisite(f"cannot start dockerd: {started.stderr.strip()}")
    host = started.stdout.strip()
    built = run([str(REPO / "scripts" / "build-base-image.sh")], timeout=900,
                env={**os.environ, "DOCKER_HOST": host})
    if built.returncode != 0:
        missing_prerequisite(f"cannot build the Debian 12 base image: {built.stderr.strip()}")
    return host, built.stdout.strip()


@pytest.fixture(scope="module")
def docker_ce_chroot() -> Iterator[Chroot]:
    if shutil.which("dpkg-deb") is None:
        missing_prerequisite("dpkg-deb is not installed")
    host, image = base_image()
    docker = ["/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"]
    env = {**os.environ, "DOCKER_HOST": host}
    work = Path(tempfile.mkdtemp(prefix="spawnwatch-setup-", dir="/var/tmp"))
    try:
        created = run([*docker, "create", image, "/bin/true"], env=env, timeout=120)
        assert created.returncode == 0, created.stderr
        container = created.stdout.strip()
        root = work / "root"
        root.mkdir()
        try:
            exported = subprocess.Popen([*docker, "export", container], stdout=subprocess.PIPE, env=env)
            unpacked = run(["tar", "-C", str(root), "-x"], stdin=exported.stdout, timeout=300)
            exported.stdout.close()
            assert exported.wait(timeout=60) == 0 and unpacked.returncode == 0, unpacked.stderr
        finally:
            run([*docker, "rm", container], env=env, timeout=120)
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        guard = root / "usr" / "local" / "sbin" / "apt-get"
        guard.write_text(APT_GUARD)
        guard.chmod(0o755)
        chroot = Chroot(root)
        updated = chroot.run("apt-get", "update", "-qq", "-o", "Acquire::Languages=none", timeout=600)
        if updated.returncode != 0:
            missing_prerequisite(f"apt-get update in the chroot failed (no archive?): {updated.stderr.strip()}")
        chroot.install_debs(*(dummy_deb(work, name, relations) for name, relations in DOCKER_CE.items()))
        script = root / SCRIPT_IN_CHROOT.lstrip("/")
        script.parent.mkdir(parents=True)
        shutil.copy(REPO / "scripts" / "setup-host.sh", script)
        yield chroot
    finally:
        shutil.rmtree(work)


def planned_packages(stderr: str) -> set[str]:
    """The packages the set-up said it installs, before apt's dependencies."""
    marker = "installing from the Debian archive: "
    lines = [line for line in stderr.splitlines() if marker in line]
    assert len(lines) == 1, stderr
    return set(lines[0].split(marker, 1)[1].split(" (and", 1)[0].split())


def apt_actions(output: str, action: str) -> set[str]:
    return {line.split()[1] for line in output.splitlines() if line.startswith(f"{action} ")}


def test_demo_setup_beside_docker_ce_installs_only_its_list(docker_ce_chroot: Chroot) -> None:
    result = docker_ce_chroot.setup("demo", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    planned = planned_packages(result.stderr)
    headers = {package for package in planned if package.startswith("linux-headers-")}
    assert len(headers) == 1, planned
    assert planned == DEMO_PACKAGES | headers
    installs = apt_actions(result.stdout, "Inst")
    assert DEMO_PACKAGES <= installs
    assert not installs & CORPUS, sorted(installs & CORPUS)
    assert "Remv" not in result.stdout
    assert all(docker_ce_chroot.installed(name) for name in DOCKER_CE)


def test_test_setup_beside_docker_ce_keeps_it(docker_ce_chroot: Chroot) -> None:
    result = docker_ce_chroot.setup("test", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    planned = planned_packages(result.stderr)
    assert {"prometheus", "prometheus-alertmanager", "podman", "postgresql", "apache2", "vagrant"} <= planned
    installs = apt_actions(result.stdout, "Inst")
    assert not installs & {"docker.io", "containerd", "runc"}, sorted(installs)
    assert "Remv" not in result.stdout
    assert all(docker_ce_chroot.installed(name) for name in DOCKER_CE)


def test_test_setup_takes_a_docker_client_alone_for_no_engine(docker_ce_chroot: Chroot, tmp_path: Path) -> None:
    """A docker CLI on PATH with no dockerd (a remote engine's client) runs no container:
    the test set-up still installs Debian's engine."""
    client = docker_ce_chroot.root / "usr" / "local" / "bin" / "docker"
    client.write_text("#!/bin/sh\nexit 0\n")
    client.chmod(0o755)
    purged = docker_ce_chroot.run("dpkg", "--purge", *reversed(DOCKER_CE))  # docker-ce before what it depends on
    assert purged.returncode == 0, purged.stdout + purged.stderr
    try:
        result = docker_ce_chroot.setup("test", "--dry-run")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "docker.io" in planned_packages(result.stderr)
        assert "docker.io" in apt_actions(result.stdout, "Inst")
    finally:
        client.unlink()
        docker_ce_chroot.install_debs(*(dummy_deb(tmp_path, name, relations) for name, relations in DOCKER_CE.items()))
    assert all(docker_ce_chroot.installed(name) for name in DOCKER_CE)


def test_setup_refuses_when_apt_would_remove_a_package(docker_ce_chroot: Chroot, tmp_path: Path) -> None:
    docker_ce_chroot.install_debs(dummy_deb(tmp_path, "users-own-npm", {"Conflicts": "npm"}))
    try:
        result = docker_ce_chroot.setup("demo", "--dry-run")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "refusing: apt would remove users-own-npm" in result.stderr
        assert "Traceback" not in result.stderr
        assert docker_ce_chroot.installed("users-own-npm")
    finally:
        docker_ce_chroot.run("dpkg", "--purge", "users-own-npm")
