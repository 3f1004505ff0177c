"""spawnwatch as a user installs it: a wheel built from the checkout, installed into
a fresh venv, traces on the real kernel with the BPF sources it carries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# Debian's python: the one its python3-bpfcc is built for.
SYSTEM_PYTHON = "/usr/bin/python3"


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {
        ".".join(init.parent.relative_to(REPO / "src").parts)
        for init in (REPO / "src").rglob("__init__.py")
    }
    assert listed == in_tree | {"spawnwatch.bpf", "spawnwatch.data"}


@pytest.fixture(scope="module", params=["wheel", "checkout", "pipx"])
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv (Debian's python, system site-packages for bcc) with spawnwatch installed
    from a wheel built by `python -m build` (through its sdist, as a release is), by
    `pip install <checkout>`, or by `pipx install <checkout>`."""
    work = tmp_path_factory.mktemp(f"install-{request.param}")
    if request.param == "pipx":
        env = {**os.environ, "PIPX_HOME": str(work / "pipx"), "PIPX_BIN_DIR": str(work / "bin")}
        subprocess.run([sys.executable, "-m", "pipx", "install", "--system-site-packages", "--python", SYSTEM_PYTHON,
                        str(REPO)], check=True, capture_output=True, timeout=600, env=env)
        return work / "pipx" / "venvs" / "spawnwatch"
    source = str(REPO)
    if request.param == "wheel":
        subprocess.run(
            [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(REPO)],
            check=True, capture_output=True, timeout=600,
        )
        (wheel,) = (work / "dist").glob("spawnwatch-*.whl")
        source = str(wheel)
    venv = work / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", source],
                   check=True, capture_output=True, timeout=600)
    return venv


@pytest.mark.slow
def test_the_installed_package_brings_the_terminal_library_of_top(installed: Path) -> None:
    """`top` draws with Rich: a dependency of the package, not of the checkout's venv alone."""
    view = subprocess.run([str(installed / "bin" / "python"), "-c", "import spawnwatch.consumers.top, rich"],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert view.returncode == 0, view.stderr


@pytest.mark.slow
def test_the_installed_package_brings_its_man_page_and_completions(installed: Path) -> None:
    """Under the install's PREFIX/share, where man (beside PREFIX/bin on PATH) and the shells look."""
    for path in ("man/man1/spawnwatch.1", "bash-completion/completions/spawnwatch", "zsh/site-functions/_spawnwatch",
                 "fish/vendor_completions.d/spawnwatch.fish"):
        assert (installed / "share" / path).read_text() == (REPO / "share" / path).read_text(), path
    shell = "source <(spawnwatch completion bash) && complete -p spawnwatch"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, "PATH": f"{installed / 'bin'}:{os.environ['PATH']}"})
    assert done.returncode == 0 and "_spawnwatch_completion spawnwatch" in done.stdout, done.stderr


@pytest.mark.root
@pytest.mark.slow
def test_the_installed_wheel_traces_with_the_bpf_sources_it_carries(installed: Path) -> None:
    site = subprocess.run([str(installed / "bin" / "python"), "-c", "import spawnwatch, os; print(os.path.dirname(spawnwatch.__file__))"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()
    assert site.startswith(str(installed)), f"imported from {site}, not from the installed wheel"
    doctor = subprocess.run([str(installed / "bin" / "spawnwatch"), "doctor", "--json"],
                            capture_output=True, text=True, timeout=120, cwd="/")
    checks = {c["name"]: c for c in map(json.loads, doctor.stdout.splitlines())}
    assert checks["BPF sources"] == {**checks["BPF sources"], "ok": True, "detail": f"{site}/bpf"}
    trace = subprocess.Popen([str(installed / "bin" / "spawnwatch"), "trace", "--duration", "2", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    ready = json.loads(trace.stdout.readline() or "{}")
    assert ready.get("kind") == "ready", trace.stderr.read()
    marker = f"spawnwatch-install-{uuid.uuid4().hex}"
    # Alive a moment: its argv is readable from /proc too, should the kernel's copy fail.
    subprocess.run(["/bin/sh", "-c", "sleep 0.3", marker], check=True)
    out, err = trace.communicate(timeout=180)
    assert trace.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["kind"] == "stats"
    execs = [r for r in records if r["kind"] == "exec"]
    assert any(marker in r["argv"] for r in execs), f"the marker's exec was not traced: {execs[-5:]}, {records[-1]}"


@pytest.mark.root
def test_doctor_says_when_the_bpf_sources_are_missing(tmp_path: Path) -> None:
    env = {"SPAWNWATCH_BPF_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    doctor = subprocess.run([sys.executable, "-m", "spawnwatch", "doctor", "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    checks = {c["name"]: c for c in map(json.loads, doctor.stdout.splitlines())}
    assert doctor.returncode == 3
    assert not checks["BPF sources"]["ok"] and "SPAWNWATCH_BPF_DIR" in checks["BPF sources"]["fix"]
