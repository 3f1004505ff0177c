"""What this spawnwatch is and runs on, for `--version` and bug reports: the package's
version, the commit it was built from, bcc's version and the kernel's release.

The commit is known only where it is honest to say it: for a git checkout run in place
(an editable install, `python -m spawnwatch` from the source tree), `git rev-parse HEAD`
in it; for a package pip installed from a git URL, the commit pip recorded in the
distribution's direct_url.json (PEP 610).  A wheel built elsewhere says "unknown".
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

import spawnwatch

DISTRIBUTION = "spawnwatch"
GIT_TIMEOUT_S = 5.0
UNKNOWN = "unknown"


def version_lines() -> list[str]:
    return [
        f"spawnwatch {spawnwatch.__version__}",
        f"commit: {commit()}",
        f"bcc: {bcc_version()}",
        f"kernel: {os.uname().release}",
    ]


def commit() -> str:
    return checkout_commit() or recorded_commit() or UNKNOWN


def checkout_commit() -> str | None:
    """HEAD of the checkout the package runs from (src/spawnwatch in a work tree), if it does.
    git refuses a checkout owned by another user (its safe.directory check), so a root
    `spawnwatch --version` never trusts a repository someone else controls."""
    root = Path(spawnwatch.__file__).resolve().parents[2]
    if not (root / ".git").exists() or not (root / "src" / "spawnwatch").is_dir():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and is_commit_id(head) else None


def recorded_commit() -> str | None:
    """The commit pip installed from, when it was a git URL (direct_url.json's vcs_info)."""
    try:
        text = importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        found = json.loads(text or "null")
    except (importlib.metadata.PackageNotFoundError, OSError, ValueError):
        return None
    vcs = found.get("vcs_info") if isinstance(found, dict) else None
    head = vcs.get("commit_id") if isinstance(vcs, dict) else None
    return head if isinstance(head, str) and is_commit_id(head) else None


def is_commit_id(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def bcc_version() -> str:
    try:
        import bcc
    except ImportError:
        return "not installed"
    except Exception as exc:  # noqa: BLE001 - a broken libbcc must not break --version
        return f"cannot be loaded ({type(exc).__name__})"
    return str(getattr(bcc, "__version__", UNKNOWN))
